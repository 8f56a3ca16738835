"""Writing files so that a crash never leaves a half-written one. Every file persyn writes (the
manifest, run artifacts, datasets, the data card, the report, router files) goes through here.

    atomic_write(path, "text")               # text, bytes, or an iterable of text chunks
    write_json(path, {"a": 1})               # indented JSON, one trailing newline
    with atomic_path(folder / "x.parquet") as tmp:   # for libraries that write the file themselves
        pq.write_table(table, tmp)

The content goes to a temporary name beside the final one, is flushed to disk, and replaces the
final name in one rename (a folder is swapped in); then the folder entry is synced too, so the new
file survives a power loss. On any error the temporary is removed and the previous version, if
any, is left untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write", "remove", "write_json"]


def remove(path: Path) -> None:
    """Remove a file or a folder, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse to sync a folder
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `final`; write a file or a folder there. On success it
    replaces `final` in one rename; on any failure it is removed and `final` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a writer that crashed
        remove(stale)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if tmp.is_dir():
            # A folder cannot replace a non-empty folder in one rename: swap, then drop the old one.
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            remove(old)
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
            remove(old)
        else:
            _fsync(tmp)
            os.replace(tmp, final)
        _fsync(final.parent)
    except BaseException:
        remove(tmp)
        raise


def atomic_write(path: str | Path, content: str | bytes | Iterable[str]) -> Path:
    """Write `content` (text, bytes, or text chunks, e.g. one JSON line at a time) to `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                for chunk in [content] if isinstance(content, str) else content:
                    f.write(chunk)
    return path


def _plain(value: Any) -> Any:
    # numpy scalars and arrays as Python numbers and lists, anything else (paths) as text.
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_json(path: str | Path, doc: Any, *, allow_nan: bool = True) -> Path:
    """`doc` as indented JSON (UTF-8 kept, numpy values as numbers), ending in a newline.
    `allow_nan=False` refuses NaN and infinities, which strict JSON readers reject."""
    text = json.dumps(doc, indent=2, ensure_ascii=False, default=_plain, allow_nan=allow_nan)
    return atomic_write(path, text + "\n")
