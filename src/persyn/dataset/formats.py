"""The dataset formats: one writer per format, each writing its file atomically.

{name}.messages.jsonl           TRL conversational: {"messages": [user, assistant], ...}
{name}.prompt_completion.jsonl  TRL conversational prompt-completion
{name}.sharegpt.json            LLaMA-Factory sharegpt (a JSON array), registered in dataset_info.json
{name}.parquet                  one analysis table: prompt and response as text, all provenance
{name}.hf/                      datasets.save_to_disk, prompt-completion shape (load_from_disk)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from persyn.dataset.rows import (
    ExportError,
    Row,
    assistant_turn,
    messages_row,
    prompt_completion_row,
    sharegpt_row,
    user_turn,
)
from persyn.util.atomic import atomic_path, atomic_write, write_json

FORMATS = ("messages", "prompt_completion", "sharegpt", "parquet", "hf")

# File (or folder) each format writes, relative to the export folder.
FILE_NAMES: dict[str, str] = {
    "messages": "{name}.messages.jsonl",
    "prompt_completion": "{name}.prompt_completion.jsonl",
    "sharegpt": "{name}.sharegpt.json",
    "parquet": "{name}.parquet",
    "hf": "{name}.hf",
}
LLAMAFACTORY_INFO = "dataset_info.json"
# Rows per Arrow batch: bounds the memory of Parquet writing for million-row exports.
_BATCH_ROWS = 10_000


def _json_line(obj: dict) -> str:
    # allow_nan=False: a NaN that slipped through would make the line invalid JSON for every reader.
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def _jsonl(rows: Iterable[dict]) -> Iterator[str]:
    for obj in rows:
        yield _json_line(obj) + "\n"


def _json_array(rows: Iterable[dict]) -> Iterator[str]:
    # One object per line inside the array: streams, diffs and greps like JSONL, parses as JSON.
    first = True
    yield "["
    for obj in rows:
        yield ("\n" if first else ",\n") + _json_line(obj)
        first = False
    yield "\n]\n"


# ----------------------------------------------------------------------------- arrow


def _arrow_schema(teachers: Sequence[str], shape: str):
    import pyarrow as pa

    msg = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    if shape == "table":
        head = [("prompt_id", pa.string()), ("prompt", pa.string()), ("response", pa.string())]
    else:  # prompt-completion, conversational
        head = [("prompt", msg), ("completion", msg), ("prompt_id", pa.string())]
    return pa.schema(
        head
        + [
            ("teacher", pa.string()),
            ("strategy", pa.string()),
            ("answer", pa.string()),
            ("quality", pa.float64()),
            ("learnability", pa.float64()),
            ("router_scores", pa.struct([(t, pa.float64()) for t in teachers])),
            ("generation", pa.string()),
        ]
    )


def _arrow_batches(rows: Sequence[Row], schema, shape: str):
    import pyarrow as pa

    for start in range(0, len(rows), _BATCH_ROWS):
        chunk = rows[start : start + _BATCH_ROWS]
        if shape == "table":
            dicts = [
                {"prompt_id": r.prompt_id, "prompt": r.prompt, "response": r.response}
                | r.provenance(generation_as_json=True)
                for r in chunk
            ]
        else:
            dicts = [
                {"prompt": user_turn(r.prompt), "completion": assistant_turn(r.response)}
                | r.provenance(generation_as_json=True)
                for r in chunk
            ]
        yield pa.Table.from_pylist(dicts, schema=schema)


def _write_parquet(final: Path, rows: Sequence[Row], teachers: Sequence[str]) -> None:
    import pyarrow.parquet as pq

    schema = _arrow_schema(teachers, "table")
    with atomic_path(final) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for table in _arrow_batches(rows, schema, "table"):
                writer.write_table(table)


def _write_hf(final: Path, rows: Sequence[Row], teachers: Sequence[str]) -> None:
    import datasets
    import pyarrow as pa

    schema = _arrow_schema(teachers, "prompt_completion")
    table = pa.concat_tables(list(_arrow_batches(rows, schema, "prompt_completion")))
    ds = datasets.Dataset(table)
    with atomic_path(final) as tmp:
        ds.save_to_disk(str(tmp))


# ----------------------------------------------------------------------------- LLaMA-Factory


def llamafactory_entry(file_name: str) -> dict:
    """The dataset_info.json entry for a sharegpt file (keys as in LLaMA-Factory's data/README)."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }


def update_llamafactory_info(out_dir: Path, name: str, entry: dict | None) -> Path | None:
    """Add (or, with entry=None, remove) this export's entry, keeping any other entries in the file."""
    path = out_dir / LLAMAFACTORY_INFO
    info: dict = {}
    if path.exists():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ExportError(
                f"{path}: exists but is not valid JSON ({e}); move it away and re-export"
            ) from e
        if not isinstance(info, dict):
            raise ExportError(f"{path}: exists but is not a JSON object; move it away and re-export")
    if entry is None:
        if name not in info:
            return None
        info.pop(name)
        if not info:
            path.unlink()
            return None
    else:
        info[name] = entry
    write_json(path, info)
    return path


WRITERS: dict[str, Callable[[Path, list[Row], list[str]], None]] = {
    "messages": lambda p, rows, _t: atomic_write(p, _jsonl(messages_row(r) for r in rows)),
    "prompt_completion": lambda p, rows, _t: atomic_write(p, _jsonl(prompt_completion_row(r) for r in rows)),
    "sharegpt": lambda p, rows, _t: atomic_write(p, _json_array(sharegpt_row(r) for r in rows)),
    "parquet": _write_parquet,
    "hf": _write_hf,
}
