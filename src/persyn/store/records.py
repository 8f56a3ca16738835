"""What the run store holds, as Python values: prompts, responses, scores, routes, events.

Plain data classes with no database code, so that any layer can build or read them (the prompt
file reader makes `Prompt`s, the pipeline driver makes `ResponseRow`s and `ScoreRow`s). The store
(`persyn.store.store`) turns them into rows and back.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from persyn.util.errors import PersynError

if TYPE_CHECKING:
    from persyn.engines.base import Generation

__all__ = [
    "Event",
    "Prompt",
    "ResponseKey",
    "ResponseRow",
    "RouteSet",
    "ScoreRow",
    "Status",
    "StoreError",
    "normalise_text",
]

Status = Literal["ok", "error"]


class StoreError(PersynError, RuntimeError):
    """The run store refused an operation (bad input, conflicting data, wrong directory)."""


@dataclass(frozen=True)
class Prompt:
    """One prompt. `source` is where it came from (`path:line`); `meta` holds the row's other
    fields (JSON-safe), which travel to the exported dataset as provenance."""

    id: str
    text: str
    answer: str | None = None
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def normalise_text(text: str) -> str:
    """The form used for ids and duplicate detection: Unicode NFC, `\\r\\n` -> `\\n`, outer
    whitespace stripped. Inner whitespace is kept: in code prompts, indentation is meaning."""
    return unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").strip()


class ResponseKey(NamedTuple):
    prompt_id: str
    teacher: str
    gen_key: str


@dataclass
class ResponseRow:
    """One teacher response, or one failed attempt at it (`status == "error"`, `error` set).

    `attempts` counts tries made for this write; when an error row is replaced by a retry, the
    stored count is the sum. `params` records the generation parameters (JSON-safe dict) and
    `meta` whatever the engine reported (`Generation.meta`).
    """

    prompt_id: str
    teacher: str
    gen_key: str
    text: str | None
    status: Status = "ok"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None
    attempts: int = 1
    params: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    duration_s: float | None = None
    created_at: float | None = None

    @property
    def key(self) -> ResponseKey:
        return ResponseKey(self.prompt_id, self.teacher, self.gen_key)

    @classmethod
    def from_generation(
        cls,
        prompt_id: str,
        teacher: str,
        gen_key: str,
        generation: Generation,
        *,
        params: dict[str, Any] | None = None,
        duration_s: float | None = None,
        attempts: int = 1,
    ) -> ResponseRow:
        return cls(
            prompt_id,
            teacher,
            gen_key,
            generation.text,
            "ok",
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            finish_reason=generation.finish_reason,
            attempts=attempts,
            params=params,
            meta=dict(generation.meta) or None,
            duration_s=duration_s,
        )

    @classmethod
    def failure(
        cls,
        prompt_id: str,
        teacher: str,
        gen_key: str,
        error: str | BaseException,
        *,
        params: dict[str, Any] | None = None,
        duration_s: float | None = None,
        attempts: int = 1,
    ) -> ResponseRow:
        msg = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return cls(
            prompt_id,
            teacher,
            gen_key,
            None,
            "error",
            error=msg or "unknown error",
            attempts=attempts,
            params=params,
            duration_s=duration_s,
        )


@dataclass
class ScoreRow:
    """One score of one response. `value is None` means the scorer failed; `error` says why."""

    kind: str  # "quality", "learnability", ...
    scorer_key: str
    prompt_id: str
    teacher: str
    gen_key: str
    value: float | None
    error: str | None = None
    meta: dict[str, Any] | None = None
    created_at: float | None = None

    @property
    def key(self) -> ResponseKey:
        return ResponseKey(self.prompt_id, self.teacher, self.gen_key)


@dataclass
class RouteSet:
    """Routes made by one router (`router_key` covers the router weights and any caps/budget).
    `scores[i]` is the score vector of `prompt_ids[i]` over `teacher_names` (None if not kept)."""

    router_key: str
    teacher_names: list[str]
    prompt_ids: list[str]
    assigned: list[str]
    scores: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def pairs(self) -> list[tuple[str, str]]:
        """(prompt id, teacher) of every route, in order."""
        return list(zip(self.prompt_ids, self.assigned, strict=True))

    def scores_by_id(self) -> dict[str, np.ndarray] | None:
        """Each prompt's router scores over `teacher_names`, or None where they were not kept."""
        if self.scores is None:
            return None
        return {pid: self.scores[i] for i, pid in enumerate(self.prompt_ids)}


@dataclass(frozen=True)
class Event:
    id: int
    ts: float
    stage: str
    kind: str
    message: str
    counts: dict[str, Any]

    def __str__(self) -> str:
        when = datetime.fromtimestamp(self.ts).strftime("%Y-%m-%d %H:%M:%S")
        return f"{when} {self.stage} {self.kind}: {self.message}"
