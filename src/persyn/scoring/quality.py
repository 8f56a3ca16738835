"""Quality scorers: one interface, chosen per config (reward model, LM judge, answers, auto).

Every scorer has a stable `key` the store keys its rows by, and
`score(prompts, responses, references) -> list[float]`.

Scales differ (a judge's log-odds, a reward model's logit, 0/1 answers). That is harmless because
labels are normalised within each prompt (scoring/labels.py), *provided* every teacher's response
to a prompt is scored by the same method. `AutoScorer` guarantees it: the method is chosen from
the prompt's reference answer alone (`scorer_for(reference)`), never from the response, and
`score_quality_matrix` scores a prompt's teachers together and records one method per prompt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from persyn.engines.base import Engine, scores_or_missing
from persyn.scoring.answers import AnswerScorer, Checker

QualityKind = Literal["answers", "judge", "reward", "auto"]
Reference = str | float | int | None
Refs = Sequence[Reference] | None  # one reference answer per prompt, or none at all


@runtime_checkable
class QualityScorer(Protocol):
    #: Stable identity of the method and everything that changes its scores (model fingerprint).
    key: str
    kind: str

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], references: Refs = None
    ) -> list[float]: ...


def has_reference(reference: Reference) -> bool:
    if reference is None:
        return False
    if isinstance(reference, float) and math.isnan(reference):
        return False
    return not (isinstance(reference, str) and not reference.strip())


def with_reference(prompt: str, reference: Reference) -> str:
    """The question a reference-guided judge reads: the prompt, then the known correct answer. It
    goes into the judge's own template in place of the prompt (benchmarks/judge.py, `reference`)."""
    return f"{prompt}\n\nReference answer (known to be correct):\n{reference}"


def engine_scorer_key(kind: str, fingerprint: str, *, reference: bool = False) -> str:
    """The store key of a judge's or reward model's scores: its kind and engine fingerprint
    (`judge+reference:` for a judge shown the reference answer)."""
    return f"{kind}{'+reference' if reference else ''}:{fingerprint}"


class EngineScorer:
    """Quality from an Engine's `score` verb.

    kind="reward": an AutoModelForSequenceClassification checkpoint with one output (e.g. a
    Skywork reward model); kind="judge": a causal LM scoring log P("Yes") - log P("No") under its
    judging prompt. The judging prompt belongs to the engine (EngineSpec.judge_template, which the
    user can override) and so is part of the engine's fingerprint, hence of this key.
    """

    def __init__(
        self, engine: Engine, kind: Literal["judge", "reward"] | None = None, *, reference: bool = False
    ):
        if kind is None:  # a sequence-classification engine is a reward model, a causal LM a judge
            kind = "reward" if getattr(engine, "kind", None) == "reward" else "judge"
        if kind not in ("judge", "reward"):
            raise ValueError(f"EngineScorer kind must be 'judge' or 'reward', not {kind!r}")
        if reference and kind != "judge":
            raise ValueError("only a judge can be shown the reference answer")
        self.engine = engine
        self.kind = kind
        self.reference = reference  # a judge reads the reference answer under the question
        self.key = engine_scorer_key(kind, engine.fingerprint, reference=reference)

    def score(self, prompts: Sequence[str], responses: Sequence[str], references: Refs = None) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return []
        if self.reference and references is not None:
            prompts = [
                with_reference(p, r) if has_reference(r) else p
                for p, r in zip(prompts, references, strict=True)
            ]
        return scores_or_missing(self.engine.score, prompts, responses, self.key)


class AutoScorer:
    """Answers where a prompt carries a reference answer, `fallback` (judge or reward) elsewhere."""

    kind = "auto"

    def __init__(self, fallback: QualityScorer, answers: QualityScorer | None = None):
        self.answers = answers or AnswerScorer()
        self.fallback = fallback
        self.key = f"auto({self.answers.key}|{fallback.key})"

    def scorer_for(self, reference: Reference) -> QualityScorer:
        """The one method used for *every* teacher's response to a prompt with this reference."""
        return self.answers if has_reference(reference) else self.fallback

    def score(self, prompts: Sequence[str], responses: Sequence[str], references: Refs = None) -> list[float]:
        refs = list(references) if references is not None else [None] * len(prompts)
        if not (len(prompts) == len(responses) == len(refs)):
            raise ValueError("prompts, responses and references must have the same length")
        out = np.full(len(prompts), np.nan)
        with_ref = np.array([has_reference(r) for r in refs], dtype=bool)
        for scorer, mask in ((self.answers, with_ref), (self.fallback, ~with_ref)):
            idx = np.flatnonzero(mask)
            if idx.size:
                vals = scorer.score(
                    [prompts[i] for i in idx], [responses[i] for i in idx], [refs[i] for i in idx]
                )
                out[idx] = vals
        return out.tolist()


def build_quality_scorer(
    kind: QualityKind,
    engine: Engine | None = None,
    *,
    engine_kind: Literal["judge", "reward"] | None = None,
    checker: Checker = "auto",
    judge_reference: bool = False,
) -> QualityScorer:
    """The scorer a config names. `engine` is the judge or reward model (not needed for answers);
    `checker` the answer checker (scoring/answers.py) for prompts with a reference;
    `judge_reference`: a `judge` is shown each prompt's reference answer, where it has one."""
    if kind == "answers":
        return AnswerScorer(checker)
    if kind in ("judge", "reward"):
        if engine is None:
            raise ValueError(f"quality {kind!r} needs an engine (the {kind} model)")
        return EngineScorer(engine, kind, reference=judge_reference and kind == "judge")  # type: ignore[arg-type]
    if kind == "auto":
        if engine is None:
            raise ValueError("quality 'auto' needs a judge or reward engine for prompts without answers")
        return AutoScorer(EngineScorer(engine, engine_kind), AnswerScorer(checker))
    raise ValueError(f"unknown quality scorer {kind!r}; expected answers, judge, reward or auto")


def method_for(scorer: QualityScorer, reference: Reference) -> QualityScorer:
    """The concrete scorer that scores a prompt with this reference (the scorer itself unless auto)."""
    return scorer.scorer_for(reference) if isinstance(scorer, AutoScorer) else scorer


def score_quality_matrix(
    scorer: QualityScorer,
    prompts: Sequence[str],
    responses: Mapping[str, Sequence[str | None]],
    references: Sequence[Reference] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Score every teacher's calibration responses.

    `responses[teacher][i]` is that teacher's answer to `prompts[i]`, or None where it failed.
    Returns the quality matrix (n_prompts x n_teachers in the order of `responses`, NaN where a
    response is missing) and, per prompt, the key of the one method that scored all its teachers.
    """
    teachers = list(responses)
    n = len(prompts)
    refs = list(references) if references is not None else [None] * n
    if len(refs) != n:
        raise ValueError(f"{n} prompts but {len(refs)} references")
    for t in teachers:
        if len(responses[t]) != n:
            raise ValueError(f"teacher {t!r} has {len(responses[t])} responses for {n} prompts")
    methods = [method_for(scorer, r) for r in refs]
    out = np.full((n, len(teachers)), np.nan)
    rows, cols = np.nonzero(np.array([[responses[t][i] is not None for t in teachers] for i in range(n)]))
    if rows.size == 0:
        return out, [m.key for m in methods]
    # One call per method, all teachers together: batches stay large and each prompt's teachers are
    # scored by the same method by construction.
    by_method: dict[str, list[int]] = {}
    for k, i in enumerate(rows):
        by_method.setdefault(methods[i].key, []).append(k)
    for ks in by_method.values():
        method = methods[rows[ks[0]]]
        vals = method.score(
            [prompts[rows[k]] for k in ks],
            [responses[teachers[cols[k]]][rows[k]] for k in ks],  # type: ignore[misc]
            [refs[rows[k]] for k in ks],
        )
        out[rows[ks], cols[ks]] = vals
    return out, [m.key for m in methods]
