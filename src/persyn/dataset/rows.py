"""Export records: one training row each, checked and turned into plain values before any file is
written, and the shape each format gives a row."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from persyn.util.credentials import scrub_secrets
from persyn.util.errors import PersynError

__all__ = ["ExportError", "ExportRecord", "prepare"]


class ExportError(PersynError, ValueError):
    """The export cannot be written as asked (bad records, unknown format, inconsistent card)."""


@dataclass
class ExportRecord:
    """One training row: a prompt, the response of the teacher it went to, and where it came from."""

    prompt_id: str
    prompt: str
    response: str
    teacher: str
    strategy: str  # "persyn", "strong", "car", "mix", "random", "oracle", "family-strong"
    answer: str | None = None  # reference answer, if any
    router_scores: dict[str, float] | None = None
    quality: float | None = None
    learnability: float | None = None
    # params, gen_key, finish_reason, prompt/completion tokens, engine fingerprint
    generation: dict = field(default_factory=dict)


def _json_value(value: Any, where: str) -> Any:
    """Plain JSON values: numpy scalars -> Python, NaN/inf -> None (JSON has no NaN), paths -> str."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_value(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        try:
            return _json_value(value.item(), where)
        except (TypeError, ValueError):
            pass
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise ExportError(f"{where}: {type(value).__name__} is not a JSON value")


def _float_or_none(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ExportError(f"{where}: expected a number or None, got {value!r}") from None
    return f if math.isfinite(f) else None


def _text(value: Any, where: str) -> tuple[str, bool]:
    """The string, and whether it had to be repaired (lone surrogates from a bad decode)."""
    if not isinstance(value, str):
        raise ExportError(f"{where}: expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
        return value, False
    except UnicodeEncodeError:
        # Neither UTF-8 files nor Arrow can hold lone surrogates. A UTF-16 round trip joins split
        # pairs back into their character and turns each lone one into a single U+FFFD.
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace"), True


@dataclass
class Row:
    """A validated record: plain Python values only, router scores over the export's teacher set."""

    prompt_id: str
    prompt: str
    response: str
    teacher: str
    strategy: str
    answer: str | None
    quality: float | None
    learnability: float | None
    router_scores: dict[str, float | None] | None
    generation: dict

    def provenance(self, generation_as_json: bool = False) -> dict[str, Any]:
        gen: Any = self.generation
        if generation_as_json:
            gen = json.dumps(gen, ensure_ascii=False, sort_keys=True)
        return {
            "prompt_id": self.prompt_id,
            "teacher": self.teacher,
            "strategy": self.strategy,
            "answer": self.answer,
            "quality": self.quality,
            "learnability": self.learnability,
            "router_scores": self.router_scores,
            "generation": gen,
        }


def prepare(records: Sequence[ExportRecord]) -> tuple[list[Row], list[str], list[str]]:
    """Validate every record before anything is written; returns rows, the teacher set, notes."""
    if not records:
        raise ExportError("nothing to export: the record list is empty (did routing or generation run?)")
    teachers: dict[str, None] = {}
    for i, r in enumerate(records):
        if not isinstance(r, ExportRecord):
            raise ExportError(f"record {i}: expected an ExportRecord, got {type(r).__name__}")
        teachers.setdefault(str(r.teacher), None)
        for t in r.router_scores or {}:
            teachers.setdefault(str(t), None)
    teacher_list = list(teachers)
    rows: list[Row] = []
    repaired = empty = 0
    for i, r in enumerate(records):
        where = f"record {i} (prompt_id {r.prompt_id!r})"
        for name in ("prompt_id", "teacher", "strategy"):
            v = getattr(r, name)
            if not isinstance(v, str) or not v:
                raise ExportError(f"{where}: {name} must be a non-empty string, got {v!r}")
        prompt, bad_p = _text(r.prompt, f"{where}.prompt")
        response, bad_r = _text(r.response, f"{where}.response")
        repaired += bad_p or bad_r
        empty += not response.strip()
        answer = None if r.answer is None else str(r.answer)
        scores = None
        if r.router_scores is not None:
            if not isinstance(r.router_scores, Mapping):
                raise ExportError(f"{where}.router_scores: expected a mapping teacher -> score")
            given = {
                str(k): _float_or_none(v, f"{where}.router_scores[{k!r}]") for k, v in r.router_scores.items()
            }
            scores = {t: given.get(t) for t in teacher_list}
        if not isinstance(r.generation, Mapping):
            raise ExportError(f"{where}.generation: expected a mapping, got {type(r.generation).__name__}")
        rows.append(
            Row(
                prompt_id=r.prompt_id,
                prompt=prompt,
                response=response,
                teacher=r.teacher,
                strategy=r.strategy,
                answer=answer,
                quality=_float_or_none(r.quality, f"{where}.quality"),
                learnability=_float_or_none(r.learnability, f"{where}.learnability"),
                router_scores=scores,
                generation=scrub_secrets(_json_value(dict(r.generation), f"{where}.generation")),
            )
        )
    notes = []
    if repaired:
        notes.append(f"{repaired} row(s) held invalid Unicode (lone surrogates), replaced by U+FFFD.")
    if empty:
        notes.append(f"{empty} row(s) have an empty response.")
    return rows, teacher_list, notes


def user_turn(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant_turn(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def messages_row(row: Row) -> dict:
    return {"messages": user_turn(row.prompt) + assistant_turn(row.response), **row.provenance()}


def prompt_completion_row(row: Row) -> dict:
    return {"prompt": user_turn(row.prompt), "completion": assistant_turn(row.response), **row.provenance()}


def sharegpt_row(row: Row) -> dict:
    conv = [{"from": "human", "value": row.prompt}, {"from": "gpt", "value": row.response}]
    return {"conversations": conv, **row.provenance()}
