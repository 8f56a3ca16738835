"""Bring your own calibration matrix: import per-prompt, per-model scores from a file.

Two layouts (the format is detected from the rows):
- wide, JSONL (or a JSON array), one object per prompt (RouterDC publishes data this way):
  ``{"question": "...", "scores": {"model-a": 0.8, "model-b": 0.1}}``
  (``prompt`` or ``query`` may stand for ``question``);
- long, CSV/TSV with a header or JSONL, one row per (prompt, model):
  ``query, model_name, performance`` (aliases: ``prompt``/``question``, ``model``, ``score``).

A score is a number or a boolean; a model absent from a wide row, or a ``null`` score, is missing
for that prompt (NaN), never 0. Malformed rows (not an object, no prompt, a non-numeric score, a
duplicate) are skipped and reported with file and line; a file without a single good row is refused.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from persyn.store.keys import digest
from persyn.util.atomic import atomic_write
from persyn.util.errors import PersynError

PROMPT_FIELDS = ("question", "prompt", "query")
MODEL_FIELDS = ("model_name", "model")
SCORE_FIELDS = ("performance", "score")


class ScoreFileError(PersynError, ValueError):
    """A score file cannot be used at all."""


@dataclass(frozen=True)
class BadRow:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class ScoreMatrix:
    """Raw scores: `values[i, j]` is teacher j's score on prompt i (NaN = missing)."""

    prompts: list[str]
    teachers: list[str]
    values: np.ndarray
    source: str = ""
    bad_rows: list[BadRow] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.shape != (len(self.prompts), len(self.teachers)):
            raise ValueError(
                f"values shape {self.values.shape} != ({len(self.prompts)}, {len(self.teachers)})"
            )

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, mask: np.ndarray) -> ScoreMatrix:
        mask = np.asarray(mask, dtype=bool)
        return ScoreMatrix(
            [p for p, m in zip(self.prompts, mask, strict=True) if m],
            list(self.teachers),
            self.values[mask],
            self.source,
        )

    def reorder(self, teachers: Sequence[str]) -> ScoreMatrix:
        """The same scores with columns in `teachers` order (must be the same set of names)."""
        if sorted(teachers) != sorted(self.teachers):
            raise ValueError(f"teacher sets differ: {list(teachers)} vs {self.teachers}")
        idx = [self.teachers.index(t) for t in teachers]
        return ScoreMatrix(
            list(self.prompts), list(teachers), self.values[:, idx], self.source, self.bad_rows
        )

    def digest(self) -> str:
        chunks = chain(
            [json.dumps(self.teachers).encode()],
            (bytes.fromhex(digest(p, None)) for p in self.prompts),
            [np.nan_to_num(self.values, nan=-1e300).tobytes()],
        )
        return digest(chunks)

    def write_wide_jsonl(self, path: str | Path) -> None:
        def lines():
            for p, row in zip(self.prompts, self.values, strict=True):
                scores = {t: float(v) for t, v in zip(self.teachers, row, strict=True) if not math.isnan(v)}
                yield json.dumps({"question": p, "scores": scores}, ensure_ascii=False) + "\n"

        atomic_write(path, lines())


def _score_value(v) -> float | None:
    """A numeric score, None for an explicit null; raises ValueError otherwise."""
    if v is None:
        return None
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        if not math.isfinite(v):
            raise ValueError(f"score {v!r} is not finite")
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        if s == "" or s.lower() in ("nan", "null", "none"):
            return None
        try:
            f = float(s)
        except ValueError:
            raise ValueError(f"score {v!r} is not a number") from None
        if not math.isfinite(f):
            raise ValueError(f"score {v!r} is not finite")
        return f
    raise ValueError(f"score {v!r} is not a number")


def _first(obj: dict, names: Sequence[str]):
    for n in names:
        if n in obj:
            return n, obj[n]
    return None, None


def _records(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed row or an Exception) for every non-empty row."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            for row in reader:
                yield reader.line_num, row
        return
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScoreFileError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(items, list):
            raise ScoreFileError(f"{path}: expected a JSON array of objects")
        yield from enumerate(items, start=1)
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            yield lineno, ValueError(f"not valid JSON ({exc.msg})")


def load_score_matrix(path: str | Path) -> ScoreMatrix:
    """Read a wide or long score file (see the module docstring). Bad rows are in `.bad_rows`."""
    path = Path(path)
    if not path.is_file():
        raise ScoreFileError(f"{path}: no such file")
    read = _Cells()
    bad: list[BadRow] = []
    layout: str | None = None
    for line, rec in _records(path):
        try:
            if isinstance(rec, Exception):
                raise _Reject(str(rec))
            if not isinstance(rec, dict):
                raise _Reject(f"expected an object, got {type(rec).__name__}")
            _, prompt = _first(rec, PROMPT_FIELDS)
            if not isinstance(prompt, str) or not prompt.strip():
                raise _Reject(f"no prompt: need a non-empty string in one of {list(PROMPT_FIELDS)}")
            row_layout = "wide" if "scores" in rec else "long"
            layout = layout or row_layout
            if row_layout != layout:
                raise _Reject(f"a {row_layout}-format row in a {layout}-format file")
            (read.wide if layout == "wide" else read.long)(line, rec, prompt)
        except _Reject as exc:
            bad.append(BadRow(str(path), line, str(exc)))
    rows, teachers = read.rows, read.teachers
    if not rows:
        detail = f"; first problem: {bad[0]}" if bad else ""
        raise ScoreFileError(f"{path}: no usable rows{detail}")
    names = list(teachers)
    prompts = list(rows)
    values = np.full((len(prompts), len(names)), np.nan)
    for i, p in enumerate(prompts):
        for m, v in rows[p].items():
            if v is not None:
                values[i, teachers[m]] = v
    if len(names) < 2:
        raise ScoreFileError(f"{path}: routing needs at least two models, found {names}")
    return ScoreMatrix(prompts, names, values, str(path), bad)


class _Reject(Exception):
    """A row left out, and why."""


class _Cells:
    """The scores read so far: prompt -> model -> score, models in order of first appearance."""

    def __init__(self) -> None:
        self.teachers: dict[str, int] = {}
        self.rows: dict[str, dict[str, float | None]] = {}
        self.first_line: dict[str, int] = {}
        self.seen_cells: dict[tuple[str, str], int] = {}

    def wide(self, line: int, rec: dict, prompt: str) -> None:
        scores = rec["scores"]
        if not isinstance(scores, dict) or not scores:
            raise _Reject("'scores' must be a non-empty object of model name -> number")
        if prompt in self.rows:
            raise _Reject(f"duplicate prompt (first on line {self.first_line[prompt]})")
        try:
            parsed = {str(m): _score_value(v) for m, v in scores.items()}
        except ValueError as exc:
            raise _Reject(f"'scores': {exc}") from None
        self.rows[prompt] = parsed
        self.first_line[prompt] = line
        for m in parsed:
            self.teachers.setdefault(m, len(self.teachers))

    def long(self, line: int, rec: dict, prompt: str) -> None:
        _, model = _first(rec, MODEL_FIELDS)
        skey, score = _first(rec, SCORE_FIELDS)
        if not isinstance(model, str) or not model.strip():
            raise _Reject(f"no model name: need one of {list(MODEL_FIELDS)}")
        if skey is None:
            raise _Reject(f"no score: need one of {list(SCORE_FIELDS)}")
        try:
            value = _score_value(score)
        except ValueError as exc:
            raise _Reject(f"{skey!r}: {exc}") from None
        if value is None:
            raise _Reject(f"{skey!r} is empty")
        cell = (prompt, model)
        if cell in self.seen_cells:
            raise _Reject(f"duplicate score for model {model!r} (first on line {self.seen_cells[cell]})")
        self.seen_cells[cell] = line
        self.rows.setdefault(prompt, {})[model] = value
        self.first_line.setdefault(prompt, line)
        self.teachers.setdefault(model, len(self.teachers))
