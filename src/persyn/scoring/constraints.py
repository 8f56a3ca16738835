"""Verifiable instruction constraints, checked the IFEval way (Zhou et al., 2023,
https://arxiv.org/abs/2311.07911) with the instruction registry and checkers that lm-eval ships
(`lm_eval.tasks.ifeval`, https://github.com/EleutherAI/lm-evaluation-harness). Nothing here
re-implements a checker: the library builds each instruction and decides each verdict.

A constraint is JSON-safe data, the registry id and the arguments of its description as the
registry's `get_instruction_args()` returns them:

    {"id": "keywords:existence", "kwargs": {"keywords": ["potato", "signal"]}}

    check = check_response(response, row["constraints"], prompt=row["prompt"])
    check.strict, check.loose                  # one verdict per constraint
    check.fraction_strict, check.all_strict    # item scores (the same for loose)

Strict and loose are IFEval's: strict checks the response as it is; loose also accepts it with
the first line, the last line or both removed and/or with every `*` removed (a markdown title or
a closing remark around an otherwise compliant answer).

Two registry types are left out (`EXCLUDED_TYPES`): their checkers need nltk data (punkt) that
cannot be downloaded here, and IFEval's own evaluation would fail on them. lm-eval is imported
on first use, quietly: its import would try to download that data and print about it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from persyn.util.errors import PersynError

__all__ = [
    "EXCLUDED_TYPES",
    "INSTALL_HINT",
    "ConstraintCheck",
    "CONSTRAINTS_FIELD",
    "ConstraintError",
    "check_response",
    "checker_key",
    "conflicting",
    "constraint_types",
    "describe",
    "draw_constraint",
    "validate_constraints",
]

#: The prompt-file field that holds a row's constraints (a list as `validate_constraints` takes it):
#: calibration scores such a prompt's responses by the constraints met, eval by IFEval's metrics.
CONSTRAINTS_FIELD = "constraints"

INSTALL_HINT = "pip install 'persyn[tasks]'  (or: pip install 'lm-eval[ifeval]==0.4.13')"

#: Registry types that cannot be checked here, and why (docs/student.md).
EXCLUDED_TYPES: dict[str, str] = {
    "length_constraints:number_sentences": (
        "its checker counts sentences with nltk's punkt tokenizer, whose data (nltk_data "
        "tokenizers/punkt) cannot be downloaded here"
    ),
    "change_case:capital_word_frequency": (
        "its checker splits words with nltk.word_tokenize, whose data (nltk_data "
        "tokenizers/punkt_tab) cannot be downloaded here"
    ),
}

# The library draws arguments from the global `random` module (seeded for a draw, barred while a
# stored constraint is rebuilt) and langdetect is seeded through a class attribute: all three are
# process-wide, so every use goes through this lock.
_LOCK = threading.RLock()
_LANGDETECT_SEED = 0


class ConstraintError(PersynError, ValueError):
    """A constraint that cannot be checked: unknown or excluded type, bad arguments, or lm-eval
    missing."""


@lru_cache(maxsize=1)
def _ifeval() -> SimpleNamespace:
    """lm-eval's IFEval modules, imported once and quietly. Importing them runs
    `nltk.download("punkt_tab")` (a network call that fails offline and prints to stdout and
    stderr); the types that need that data are excluded, so the download is skipped."""
    try:
        import langdetect
        import nltk
    except ImportError as exc:
        raise ConstraintError(
            f"verifiable constraints need lm-eval's IFEval checkers ({exc}): {INSTALL_HINT}"
        ) from exc
    download = nltk.download
    with _LOCK, contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        nltk.download = lambda *args, **kwargs: False
        try:
            from lm_eval.tasks.ifeval import instructions, instructions_registry, instructions_util, utils
        except ImportError as exc:
            raise ConstraintError(
                f"verifiable constraints need lm-eval's IFEval checkers ({exc}): {INSTALL_HINT}"
            ) from exc
        finally:
            nltk.download = download
    # The checkers log an error when langdetect finds no language (and count the constraint as
    # met, IFEval's rule); without a handler of its own that would reach stderr through logging's
    # last resort. An application that configures logging still sees it.
    logging.getLogger("lm_eval.tasks.ifeval.instructions").addHandler(logging.NullHandler())
    conflicts = instructions_registry.conflict_make(
        copy.deepcopy(instructions_registry.INSTRUCTION_CONFLICTS)
    )
    return SimpleNamespace(
        registry=instructions_registry.INSTRUCTION_DICT,
        conflicts=conflicts,
        utils=utils,
        modules=(instructions, instructions_util),
        detector=langdetect.DetectorFactory,
    )


def constraint_types() -> tuple[str, ...]:
    """The registry's instruction types that can be checked here (sorted): all but
    `EXCLUDED_TYPES`."""
    return tuple(sorted(set(_ifeval().registry) - set(EXCLUDED_TYPES)))


def conflicting(a: str, b: str) -> bool:
    """Whether two types may not share a prompt, by the registry's `INSTRUCTION_CONFLICTS` made
    symmetric with its own `conflict_make` (the table lists some pairs one way only)."""
    return b in _ifeval().conflicts.get(a, ()) or a in _ifeval().conflicts.get(b, ())


def _instruction(type_id: str) -> Any:
    if type_id in EXCLUDED_TYPES:
        raise ConstraintError(f"constraint type {type_id!r} is excluded: {EXCLUDED_TYPES[type_id]}")
    registry = _ifeval().registry
    if type_id not in registry:
        raise ConstraintError(
            f"unknown constraint type {type_id!r}; the types are: {', '.join(constraint_types())}"
        )
    return registry[type_id](type_id)


def _args(instruction: Any) -> dict[str, Any]:
    """The arguments of a built instruction as JSON-safe data (None for argument-less types)."""
    args = instruction.get_instruction_args() or {}
    return {k: list(v) if isinstance(v, list | tuple) else v for k, v in args.items()}


def _build(constraint: Any) -> tuple[Any, str]:
    """(instruction built with exactly the stored arguments, its description); refuses anything
    the library would fill in by drawing at random (a missing or empty argument)."""
    if not isinstance(constraint, Mapping) or not isinstance(constraint.get("id"), str):
        raise ConstraintError(f'a constraint is {{"id": <type>, "kwargs": {{...}}}}, not {constraint!r}')
    type_id = constraint["id"]
    kwargs = constraint.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise ConstraintError(f"{type_id}: kwargs must be a mapping, not {kwargs!r}")
    # IFEval's data lists every argument name, None where unused; its evaluation drops those.
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    instruction = _instruction(type_id)
    expected = set(instruction.get_instruction_args_keys())
    if set(kwargs) != expected:
        raise ConstraintError(
            f"{type_id}: kwargs must have exactly the keys {sorted(expected)}, not {sorted(kwargs)}"
        )
    empty = sorted(k for k, v in kwargs.items() if not v)
    if empty:
        # IFEval's evaluation drops empty arguments, and the library then draws them at random.
        raise ConstraintError(f"{type_id}: arguments {empty} are empty")
    try:
        with _no_random_draws():
            description = instruction.build_description(**kwargs)
    except _WouldDraw:
        raise ConstraintError(
            f"{type_id}: arguments out of the library's range (it would replace them by a random draw): "
            f"{dict(kwargs)}"
        ) from None
    except (TypeError, ValueError) as exc:
        raise ConstraintError(f"{type_id}: the library refused the arguments {dict(kwargs)}: {exc}") from exc
    return instruction, description


class _WouldDraw(Exception):
    pass


class _NoRandom:
    """Stands in for the `random` module inside lm-eval's instruction modules while a stored
    constraint is rebuilt: the library draws only for an argument that is missing or out of its
    range (nth_paragraph > num_paragraphs, a two-letter letter...), and then it must not."""

    def __getattr__(self, name: str) -> Any:
        raise _WouldDraw(name)


@contextlib.contextmanager
def _no_random_draws() -> Iterator[None]:
    modules = _ifeval().modules
    saved = [m.random for m in modules]
    for m in modules:
        m.random = _NoRandom()
    try:
        yield
    finally:
        for m, r in zip(modules, saved, strict=True):
            m.random = r


def validate_constraints(constraints: Sequence[Any]) -> list[dict[str, Any]]:
    """Copies of `constraints` as {"id", "kwargs"} dicts, after checking that each one names an
    included type and carries exactly that type's arguments; raises `ConstraintError` otherwise."""
    if isinstance(constraints, str | bytes | Mapping) or not constraints:
        raise ConstraintError(f"constraints must be a non-empty list of constraints, not {constraints!r}")
    with _LOCK:
        for c in constraints:
            _build(c)
    return [
        {
            "id": c["id"],
            "kwargs": {k: copy.deepcopy(v) for k, v in (c.get("kwargs") or {}).items() if v is not None},
        }
        for c in constraints
    ]


def describe(constraint: Mapping[str, Any]) -> str:
    """The library's description of a stored constraint (the text a prompt carries)."""
    with _LOCK:
        return _build(constraint)[1]


@contextlib.contextmanager
def _seeded_global_random(seed: int) -> Iterator[None]:
    """The library draws from the global `random` module: seed it for the draw, then put the
    caller's state back."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def draw_constraint(type_id: str, seed: int, **arguments: Any) -> tuple[dict[str, Any], str]:
    """(constraint, description): the library's `build_description(**arguments)` for `type_id`,
    every argument not given drawn by the library itself from a global `random` seeded with `seed`
    (and the caller's random state restored). The same type, seed and arguments give the same
    constraint."""
    with _LOCK:
        instruction = _instruction(type_id)
        with _seeded_global_random(seed):
            try:
                description = instruction.build_description(**arguments)
            except (TypeError, ValueError) as exc:
                raise ConstraintError(
                    f"{type_id}: the library refused the arguments {arguments}: {exc}"
                ) from exc
        return {"id": type_id, "kwargs": _args(instruction)}, description


@dataclass(frozen=True)
class ConstraintCheck:
    """IFEval's verdicts on one response: per constraint (in the order given), strict and loose."""

    ids: tuple[str, ...]
    strict: tuple[bool, ...]
    loose: tuple[bool, ...]

    @property
    def fraction_strict(self) -> float:
        """Share of the constraints met, strict (IFEval's instruction-level accuracy, per item)."""
        return sum(self.strict) / len(self.strict)

    @property
    def fraction_loose(self) -> float:
        return sum(self.loose) / len(self.loose)

    @property
    def all_strict(self) -> bool:
        """Every constraint met, strict (IFEval's prompt-level accuracy, per item)."""
        return all(self.strict)

    @property
    def all_loose(self) -> bool:
        return all(self.loose)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ids": list(self.ids),
            "strict": list(self.strict),
            "loose": list(self.loose),
            "fraction_strict": self.fraction_strict,
            "fraction_loose": self.fraction_loose,
            "all_strict": self.all_strict,
            "all_loose": self.all_loose,
        }


@contextlib.contextmanager
def _langdetect_seed() -> Iterator[None]:
    """langdetect samples at random unless its factory has a seed (the language and case
    checkers use it): a fixed seed makes every verdict reproducible."""
    factory = _ifeval().detector
    before = factory.seed
    factory.seed = _LANGDETECT_SEED
    try:
        yield
    finally:
        factory.seed = before


def check_response(
    response: str, constraints: Sequence[Mapping[str, Any]], prompt: str = ""
) -> ConstraintCheck:
    """IFEval's strict and loose verdicts (lm-eval's `test_instruction_following_strict` and
    `_loose`) for `response` against `constraints`; `prompt` is the prompt the response answers
    (IFEval passes it along; no included checker reads it). An empty response meets nothing."""
    if not isinstance(response, str):
        raise ConstraintError(f"a response is a string, not {type(response).__name__}")
    checked = validate_constraints(constraints)
    lib = _ifeval()
    example = lib.utils.InputExample(
        key=0,
        instruction_id_list=[c["id"] for c in checked],
        prompt=prompt,
        kwargs=[c["kwargs"] for c in checked],
    )
    with _LOCK, _langdetect_seed():
        strict = lib.utils.test_instruction_following_strict(example, response)
        loose = lib.utils.test_instruction_following_loose(example, response)
    return ConstraintCheck(
        ids=tuple(c["id"] for c in checked),
        strict=tuple(bool(v) for v in strict.follow_instruction_list),
        loose=tuple(bool(v) for v in loose.follow_instruction_list),
    )


def checker_key() -> str:
    """The key of these checks' verdicts (the lm-eval version and the left-out types): a new lm-eval
    re-checks stored answers instead of mixing verdicts of two versions."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("lm_eval")
    except PackageNotFoundError:
        v = "missing"
    return f"ifeval@lm-eval-{v}"
