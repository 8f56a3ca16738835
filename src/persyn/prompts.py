"""Prompt sets: load JSONL, Parquet or CSV into `Prompt`s, with every problem reported.

    ps = load_prompts("data/prompts.jsonl", answer_field="answer")
    ps.prompts        # list[Prompt], in file order, duplicates merged
    ps.report         # LoadReport: bad rows, merged duplicates, counts (write `to_dict()` to the run dir)

Rules (the same for every format):
- The prompt field may be dotted (`"input.question"`, `"messages.0.content"`) and may hold a chat
  `messages` list, from which the first user turn is taken.
- Ids are the id field's value when `id_field` is set, else a stable hash of the normalised text
  (`text_id`), so the same prompt gets the same id in every run and every file.
- Text files are read as UTF-8, with or without a byte-order mark (Windows editors write one),
  with any line ends.
- Malformed rows (bad JSON, missing / empty / non-string prompt, bad id, an id reused for another
  text, one prompt with two different answers...) raise `PromptSetError` listing every one with its
  line; with `skip_bad_rows=True` they are skipped and listed in `report.bad_rows` instead.
  Nothing is dropped silently. Without `id_field`, a row's own `id` field is still provenance: two
  rows whose `id` is the same but whose prompts differ are refused too.
- Duplicates (same normalised text) are merged into the first occurrence and listed in
  `report.duplicates`: copies with the same answer, or where only some copies have one (the
  merged prompt keeps that answer; `answer_line` says where it came from).

`check_lengths` drops prompts that do not fit a model's context; the pipeline calls it with the
student's and teachers' tokenizers.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from persyn.store.keys import digest
from persyn.store.records import Prompt, normalise_text
from persyn.util.errors import PersynError

__all__ = [
    "BadRow",
    "DuplicateGroup",
    "LengthCheck",
    "LoadReport",
    "Prompt",
    "PromptSet",
    "PromptSetError",
    "TokenLimit",
    "TooLong",
    "check_lengths",
    "load_prompts",
    "normalise_text",
    "text_id",
]

Format = Literal["auto", "jsonl", "parquet", "csv"]

#: How many bad rows an error message shows (the report always holds all of them).
SHOWN_BAD_ROWS = 20


# ----------------------------------------------------------------------------- the data types


def text_id(text: str) -> str:
    """A stable id for a prompt without one: 16 hex digits of SHA-256 of the normalised text
    (64 bits: a collision among 1M prompts has odds of about 3e-8)."""
    return digest(normalise_text(text))


@dataclass(frozen=True)
class BadRow:
    """A row that was refused. `kind` is a short code (below); `line` is the 1-based line
    (JSONL, CSV: the record's first line) or row number (Parquet)."""

    line: int
    kind: str
    reason: str
    excerpt: str = ""

    # kinds: "json" (not valid JSON), "not_object", "missing_prompt", "empty_prompt",
    # "not_string" (prompt of a wrong type), "no_user_turn", "bad_answer", "bad_id",
    # "id_conflict" (an id already used for another text), "answer_conflict" (the same prompt
    # with another answer), "csv_shape" (more fields than the header).

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "kind": self.kind, "reason": self.reason, "excerpt": self.excerpt}


@dataclass(frozen=True)
class DuplicateGroup:
    """Rows merged into the first occurrence of one prompt."""

    id: str
    kept_line: int
    duplicate_lines: tuple[int, ...]
    # Ids the duplicates carried (differ from `id` only when ids come from an id field).
    duplicate_ids: tuple[str, ...]
    # When only some copies had a reference answer: the line whose answer the prompt keeps.
    answer_line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kept_line": self.kept_line,
            "duplicate_lines": list(self.duplicate_lines),
            "duplicate_ids": list(self.duplicate_ids),
            "answer_line": self.answer_line,
        }


@dataclass
class LoadReport:
    """What happened while loading. `to_dict()` is what the pipeline writes into the run dir."""

    path: str
    format: str
    unit: str  # "line" or "row": what `BadRow.line` counts
    rows_read: int = 0
    blank_lines: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    n_prompts: int = 0
    n_with_answer: int = 0
    stopped_at_limit: bool = False

    @property
    def n_bad(self) -> int:
        return len(self.bad_rows)

    @property
    def n_duplicate_rows(self) -> int:
        """Rows merged away as duplicates (not counting the kept first occurrences)."""
        return sum(len(g.duplicate_lines) for g in self.duplicates)

    @property
    def n_answers_merged(self) -> int:
        """Duplicate groups where only some copies had the answer (the prompt kept it)."""
        return sum(g.answer_line is not None for g in self.duplicates)

    @property
    def empty_prompts(self) -> list[BadRow]:
        return [b for b in self.bad_rows if b.kind == "empty_prompt"]

    def summary(self) -> str:
        parts = [f"{self.n_prompts} prompts from {self.path}"]
        if self.n_with_answer:
            parts.append(f"{self.n_with_answer} with answers")
        if self.n_duplicate_rows:
            merged = f"{self.n_duplicate_rows} duplicate rows merged"
            if self.n_answers_merged:
                merged += f" ({self.n_answers_merged} keeping the answer only some copies had)"
            parts.append(merged)
        if self.bad_rows:
            parts.append(f"{self.n_bad} bad rows skipped ({len(self.empty_prompts)} empty)")
        if self.stopped_at_limit:
            parts.append("stopped at the limit")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "unit": self.unit,
            "rows_read": self.rows_read,
            "blank_lines": self.blank_lines,
            "prompts": self.n_prompts,
            "with_answer": self.n_with_answer,
            "duplicate_rows": self.n_duplicate_rows,
            "answers_merged": self.n_answers_merged,
            "bad_rows": [b.to_dict() for b in self.bad_rows],
            "duplicates": [g.to_dict() for g in self.duplicates],
            "stopped_at_limit": self.stopped_at_limit,
        }


@dataclass
class PromptSet:
    prompts: list[Prompt]
    report: LoadReport

    def __len__(self) -> int:
        return len(self.prompts)


class PromptSetError(PersynError, ValueError):
    """A prompt file cannot be used as it is. `bad_rows` holds every problem found."""

    def __init__(self, path: str, message: str, bad_rows: Sequence[BadRow] = (), unit: str = "line"):
        self.path = path
        self.bad_rows = list(bad_rows)
        lines = [f"{path}: {message}"]
        for b in self.bad_rows[:SHOWN_BAD_ROWS]:
            lines.append(f"  {unit} {b.line}: {b.reason}" + (f"  [{b.excerpt}]" if b.excerpt else ""))
        if len(self.bad_rows) > SHOWN_BAD_ROWS:
            lines.append(f"  ... and {len(self.bad_rows) - SHOWN_BAD_ROWS} more")
        super().__init__("\n".join(lines))


# ----------------------------------------------------------------------------- loading


class _Bad(Exception):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


_MISSING = object()


def _lookup(row: dict, dotted: str) -> Any:
    """`row[dotted]` if that key exists literally, else the nested path (list indices allowed)."""
    if dotted in row:
        return row[dotted]
    cur: Any = row
    for part in dotted.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


def _content_text(content: Any) -> Any:
    # OpenAI-style content parts: [{"type": "text", "text": "..."}, ...]
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
        if texts and all(isinstance(t, str) for t in texts):
            return "\n".join(texts)
    return content


def _prompt_text(value: Any, field_name: str) -> str:
    if value is _MISSING or value is None:
        raise _Bad("missing_prompt", f"no prompt field {field_name!r}")
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        users = [m for m in value if m.get("role") == "user"]
        if not users:
            raise _Bad("no_user_turn", f"{field_name!r} is a messages list without a user turn")
        value = _content_text(users[0].get("content"))
        field_name = f"{field_name}[first user turn]"
    value = _content_text(value)
    if not isinstance(value, str):
        raise _Bad("not_string", f"prompt field {field_name!r} is a {type(value).__name__}, not a string")
    if not value.strip():
        raise _Bad("empty_prompt", f"prompt field {field_name!r} is empty")
    return value


def _answer_text(value: Any, field_name: str) -> str | None:
    if value is _MISSING or value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        kind = type(value).__name__
        raise _Bad("bad_answer", f"answer field {field_name!r} is a {kind}, not text or a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Bad("bad_answer", f"answer field {field_name!r} is {value}")
    text = value if isinstance(value, str) else str(value)
    # An empty answer cell (CSV has no null) means "no answer".
    return text if text.strip() else None


def _id_text(value: Any, field_name: str) -> str:
    if value is _MISSING or value is None:
        raise _Bad("bad_id", f"no id field {field_name!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Bad("bad_id", f"id field {field_name!r} is a {type(value).__name__}, not a string or integer")
    text = str(value).strip()
    if not text:
        raise _Bad("bad_id", f"id field {field_name!r} is empty")
    return text


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))


def _excerpt(raw: Any, limit: int = 80) -> str:
    text = raw if isinstance(raw, str) else json.dumps(raw, default=str, ensure_ascii=False)
    text = text.strip().replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _open_text(path: Path) -> io.TextIOBase:
    # utf-8-sig: a byte-order mark (what Windows editors write first) is skipped, not read as text.
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")  # closed by the caller


def _detect_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for suffixes, fmt in (
        ((".jsonl", ".ndjson", ".json"), "jsonl"),
        ((".parquet", ".pq"), "parquet"),
        ((".csv",), "csv"),
    ):
        if name.endswith(suffixes):
            return fmt
    raise PromptSetError(
        str(path), "cannot tell the format from the name; set prompts.format to jsonl, parquet or csv"
    )


# Each reader yields (line, row dict or _Bad, raw excerpt); None rows are blank lines.
_Rows = Iterator[tuple[int, "dict | _Bad | None", Any]]


def _jsonl_rows(path: Path) -> _Rows:
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                yield lineno, None, ""
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, _Bad("json", f"invalid JSON: {e.msg} (column {e.colno})"), line
                continue
            if not isinstance(row, dict):
                yield lineno, _Bad("not_object", f"a JSON {type(row).__name__}, not an object"), line
                continue
            yield lineno, row, line


def _csv_rows(path: Path) -> _Rows:
    # csv.reader rather than DictReader: DictReader skips blank lines silently, which would make
    # the reported line numbers of every later record wrong.
    with _open_text(path) as f:
        reader = csv.reader(f)
        header: list[str] | None = None
        prev_end = 0
        for cells in reader:
            start, prev_end = prev_end + 1, reader.line_num
            if not any(c.strip() for c in cells):
                if header is not None:
                    yield start, None, ""
                continue
            if header is None:
                header = cells
                continue
            if len(cells) > len(header):
                yield (
                    start,
                    _Bad("csv_shape", f"{len(cells) - len(header)} more field(s) than the header"),
                    cells,
                )
                continue
            yield start, dict(zip(header, cells + [None] * (len(header) - len(cells)), strict=True)), cells


def _parquet_rows(path: Path) -> _Rows:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a non-Parquet file
        raise PromptSetError(str(path), f"not a readable Parquet file: {e}") from e
    rowno = 0
    for batch in pf.iter_batches(batch_size=8192):
        for row in batch.to_pylist():
            rowno += 1
            yield rowno, row, row


def load_prompts(
    path: str | Path,
    *,
    format: Format = "auto",
    prompt_field: str = "prompt",
    answer_field: str | None = None,
    id_field: str | None = None,
    skip_bad_rows: bool = False,
    limit: int | None = None,
) -> PromptSet:
    """Load a prompt file (see the module doc for the rules).

    `limit`: keep at most this many prompts (the first ones, in file order).
    Raises `PromptSetError` for a missing/unreadable file, a file with no usable prompt, or (unless
    `skip_bad_rows`) any malformed row.
    """
    p = Path(path)
    shown = str(path)
    if not p.is_file():
        raise PromptSetError(shown, "no such file")
    fmt = _detect_format(p) if format == "auto" else format
    readers = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}
    if fmt not in readers:
        raise PromptSetError(shown, f"unknown format {fmt!r}; use jsonl, parquet or csv")
    unit = "row" if fmt == "parquet" else "line"
    report = LoadReport(path=shown, format=fmt, unit=unit)
    own_fields = {f.split(".")[0] for f in (prompt_field, answer_field, id_field) if f}

    rows = _Rows(shown, unit, prompt_field, answer_field, id_field)
    prompts = rows.prompts
    try:
        for line, row, raw in readers[fmt](p):
            if row is None:
                report.blank_lines += 1
                continue
            report.rows_read += 1
            try:
                if isinstance(row, _Bad):
                    raise row
                added = rows.add(line, row, own_fields)
            except _Bad as bad:
                report.bad_rows.append(BadRow(line, bad.kind, bad.reason, _excerpt(raw)))
                continue
            if added and limit is not None and len(prompts) >= limit:
                report.stopped_at_limit = True
                break
    except UnicodeDecodeError as e:
        raise PromptSetError(shown, f"not UTF-8 text ({e.reason} at byte {e.start})") from e
    except csv.Error as e:
        raise PromptSetError(shown, f"malformed CSV: {e}") from e

    for idx, (lines, ids) in rows.dups.items():
        pr = prompts[idx]
        report.duplicates.append(
            DuplicateGroup(pr.id, _line_of(pr), tuple(lines), tuple(ids), rows.answer_lines.get(idx))
        )
    report.n_prompts = len(prompts)
    report.n_with_answer = sum(pr.answer is not None for pr in prompts)

    if report.bad_rows and not skip_bad_rows:
        raise PromptSetError(
            shown,
            f"{report.n_bad} malformed row(s) (fix them, or set prompts.skip_bad_rows to skip them; "
            "skipped rows are listed in the run directory):",
            report.bad_rows,
            unit,
        )
    if not prompts:
        reason = "no usable prompt" + (f" ({report.n_bad} bad rows)" if report.bad_rows else "")
        hint = (
            f"; is the prompt field {prompt_field!r} right?" if report.rows_read else " (the file is empty)"
        )
        raise PromptSetError(shown, reason + hint, report.bad_rows, unit)
    return PromptSet(prompts, report)


class _Rows:
    """The prompts read so far, and what finds a row's earlier copy: by id, by normalised text."""

    def __init__(
        self, shown: str, unit: str, prompt_field: str, answer_field: str | None, id_field: str | None
    ):
        self.shown, self.unit = shown, unit
        self.prompt_field, self.answer_field, self.id_field = prompt_field, answer_field, id_field
        self.prompts: list[Prompt] = []
        # id -> (index in prompts, line); normalised text -> index; index -> duplicate lines/ids
        self.by_id: dict[str, tuple[int, int]] = {}
        self.by_text: dict[str, int] = {}
        self.dups: dict[int, tuple[list[int], list[str]]] = {}
        self.answer_lines: dict[int, int] = {}  # index -> line of the answer kept, when copies disagreed
        # Without id_field: a row's own "id" value -> (normalised text, line), to refuse one id on two texts.
        self.row_ids: dict[str, tuple[str, int]] = {}

    def add(self, line: int, row: dict, own_fields: set[str]) -> bool:
        """Add the row as a new prompt (True) or merge it into its earlier copy (False); raises
        `_Bad` for a malformed row or one that conflicts with an earlier one."""
        unit, prompts = self.unit, self.prompts
        text = _prompt_text(_lookup(row, self.prompt_field), self.prompt_field)
        answer = (
            _answer_text(_lookup(row, self.answer_field), self.answer_field) if self.answer_field else None
        )
        norm = normalise_text(text)
        pid = _id_text(_lookup(row, self.id_field), self.id_field) if self.id_field else text_id(text)
        seen = self.by_id.get(pid)
        if seen is not None and normalise_text(prompts[seen[0]].text) != norm:
            raise _Bad("id_conflict", f"id {pid!r} is already used at {unit} {seen[1]} for another text")
        row_id = None if self.id_field else _row_id(row)
        if row_id is not None and row_id in self.row_ids and self.row_ids[row_id][0] != norm:
            raise _Bad(
                "id_conflict",
                f"id {row_id!r} (field 'id') is already used at {unit} {self.row_ids[row_id][1]} for "
                "another text; ids are provenance: give each prompt its own",
            )
        first = seen[0] if seen is not None else self.by_text.get(norm)
        if first is not None:
            self._merge(first, line, answer, pid)
            if row_id is not None:
                self.row_ids.setdefault(row_id, (norm, line))
            return False
        if row_id is not None:
            self.row_ids.setdefault(row_id, (norm, line))
        meta = {k: v for k, v in row.items() if k not in own_fields}
        self.by_id[pid] = (len(prompts), line)
        self.by_text[norm] = len(prompts)
        prompts.append(Prompt(pid, text, answer, f"{self.shown}:{line}", _json_safe(meta)))
        return True

    def _merge(self, first: int, line: int, answer: str | None, pid: str) -> None:
        kept = self.prompts[first]
        if kept.answer != answer:
            if kept.answer is not None and answer is not None:
                raise _Bad(
                    "answer_conflict",
                    f"same prompt as {self.unit} {_line_of(kept)} with a different answer "
                    f"({answer!r} vs {kept.answer!r})",
                )
            # One copy has a reference answer, the other none: one prompt, with it.
            if answer is not None:
                self.prompts[first] = replace(kept, answer=answer)
            self.answer_lines.setdefault(first, line if answer is not None else _line_of(kept))
        lines, ids = self.dups.setdefault(first, ([], []))
        lines.append(line)
        ids.append(pid)


def _row_id(row: dict) -> str | None:
    """A row's own `id` field (provenance, when no id_field is set), if it holds a usable one."""
    value = row.get("id")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        return None
    return str(value).strip()


def _line_of(prompt: Prompt) -> int:
    return int(prompt.source.rsplit(":", 1)[1]) if prompt.source else 0


# ----------------------------------------------------------------------------- context limits


@dataclass(frozen=True)
class TokenLimit:
    """A model's budget for prompt tokens. `count_tokens` takes a batch of prompts and returns
    their token counts *as that model sees them* (rendered with its chat or completion template);
    `max_tokens` is usually the context length minus `max_new_tokens`."""

    name: str
    count_tokens: Callable[[Sequence[str]], Sequence[int]]
    max_tokens: int


@dataclass(frozen=True)
class TooLong:
    id: str
    source: str | None
    limit_name: str
    tokens: int
    max_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class LengthCheck:
    """`kept`: prompts within every limit (input order). `too_long`: one entry per (prompt, limit)
    exceeded, so a prompt too long for two models appears twice."""

    kept: list[Prompt]
    too_long: list[TooLong]

    @property
    def excluded_ids(self) -> list[str]:
        return list(dict.fromkeys(t.id for t in self.too_long))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kept": len(self.kept),
            "excluded": len(self.excluded_ids),
            "too_long": [t.to_dict() for t in self.too_long],
        }


def check_lengths(
    prompts: Iterable[Prompt], limits: Sequence[TokenLimit], *, batch_size: int = 512
) -> LengthCheck:
    """Keep the prompts that fit every limit; report the others (with their token counts)."""
    plist = list(prompts)
    too_long: list[TooLong] = []
    bad: set[int] = set()
    for lim in limits:
        if lim.max_tokens < 1:
            raise ValueError(f"token limit for {lim.name!r} is {lim.max_tokens}: no prompt can fit")
        for start in range(0, len(plist), batch_size):
            chunk = plist[start : start + batch_size]
            counts = list(lim.count_tokens([pr.text for pr in chunk]))
            if len(counts) != len(chunk):
                raise ValueError(
                    f"count_tokens for {lim.name!r} returned {len(counts)} counts for {len(chunk)} prompts"
                )
            for j, (pr, n) in enumerate(zip(chunk, counts, strict=True)):
                if n > lim.max_tokens:
                    too_long.append(TooLong(pr.id, pr.source, lim.name, int(n), lim.max_tokens))
                    bad.add(start + j)
    kept = [pr for i, pr in enumerate(plist) if i not in bad]
    return LengthCheck(kept, too_long)
