"""Evaluate a student (trained or not) on held-out prompts through the engine protocol.

    items = load_eval_set(EvalSet(name="math", path="eval/math.jsonl", answer_field="answer"))
    refuse_overlap(items, train_prompts)                      # no eval prompt may be a training prompt
    result = evaluate(student_engine, items, EvalSettings(), judge=judge_engine,
                      baseline=base_result)                    # the untrained student's EvalResult
    result.metrics["accuracy"]                                 # Interval(mean, low, high, n)

Every verb goes through `persyn.engines` (`generate`, `loglik`, `score`), so the student and the judge
can be any back end. Per item, and then the mean with a 95% interval (stats.py: Wilson for 0/1
metrics, else the bootstrap):

* prompts with a reference answer:
  - `accuracy`: the greedy answer's final answer checked against the reference by the project's
    answer verifier (`persyn.scoring.answers`: numeric, math-verify or exact; `answer_checker`);
  - `reference_loglik`: the student's mean log-probability of a reference response, by default
    `"The answer is {answer}."` (or the set's `reference_field`, e.g. a worked solution). One
    forward pass, no generation, and continuous: far less noisy than accuracy on small sets. It also
    measures the phrasing, so compare it between models on the same items only.
  - `reference_margin`: the reference's log-likelihood minus the mean over the same text with the
    answer replaced by wrong numbers (near misses, a doubling: `wrong_references`). The phrasing is
    shared by both terms and cancels: it measures whether the student puts its probability on the
    right number, not on a format it was trained to write. Three more forward passes.
* prompts with verifiable constraints (a `constraints` field, as `persyn.scoring.constraints`
  checks them the IFEval way):
  - `constraints_strict` / `constraints_loose`: the share of the item's constraints the answer
    meets (IFEval's instruction-level accuracy, per item);
  - `all_constraints_strict` / `all_constraints_loose`: 1 if it meets every one (prompt-level).
* prompts without either:
  - `judge_score`: the judge's `score` of the answer (log P(Yes) - log P(No), or a reward model);
  - `win_rate`: against the untrained student's answer to the same prompt, judged in both orders
    (below). 1 = this model's answer wins, 0.5 = tie, 0 = loses.

The pairwise judge uses only `loglik`: the judge reads a prompt holding the request and answers
A and B and is asked to reply "A" or "B"; its preference is log P("A") - log P("B") as the reply.
Each pair is judged twice, once with each answer as A. Each order gives 1 (prefers this model),
0 (prefers the baseline) or 0.5 (exactly even); the item's score is the mean of the two. A judge that
always picks the first position thus scores every item 0.5, whatever the answers: position bias
cancels instead of favouring whichever model happens to be shown first. Identical answers are a tie
without asking the judge.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

from persyn.engines.base import Engine, Generation, GenerationParams
from persyn.prompts import normalise_text, text_id
from persyn.store.keys import content_key, digest
from persyn.student.settings import EvalSet, EvalSettings
from persyn.student.stats import Interval, metric_interval
from persyn.util.progress import Progress

__all__ = [
    "DEFAULT_REFERENCE_TEMPLATE",
    "PAIRWISE_TEMPLATE",
    "EvalItem",
    "EvalResult",
    "OverlapError",
    "EvalCache",
    "MemoryCache",
    "answer_checker",
    "evaluate",
    "find_overlap",
    "load_eval_set",
    "pairwise_preferences",
    "refuse_overlap",
    "two_order_score",
    "win_scores",
    "wrong_references",
]

DEFAULT_REFERENCE_TEMPLATE = "The answer is {answer}."

PAIRWISE_TEMPLATE = (
    "You are comparing two answers to a user's request.\n\n"
    "Request:\n{prompt}\n\n"
    "Answer A:\n{a}\n\n"
    "Answer B:\n{b}\n\n"
    "Which answer is better: more correct, more helpful and more complete? Reply with A or B only."
)


def answer_checker(settings: EvalSettings, checker: str = "auto"):
    """The answer verifier eval scores accuracy with: the project's one checker
    (`persyn.scoring.answers.AnswerChecker`; math-verify for references that are not plain
    numbers), so a teacher's quality label and a student's accuracy mean the same thing."""
    from persyn.scoring.answers import AnswerChecker

    return AnswerChecker(checker, timeout_s=settings.answer_timeout_s)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- items, overlap


def prompt_constraints(meta: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The verifiable constraints of a prompt row (its `CONSTRAINTS_FIELD`), checked; () if none."""
    from persyn.scoring.constraints import CONSTRAINTS_FIELD, validate_constraints

    raw = meta.get(CONSTRAINTS_FIELD)
    return tuple(validate_constraints(raw)) if raw else ()


@dataclass(frozen=True)
class EvalItem:
    """One held-out prompt; `reference` is a full reference response where the set has one."""

    id: str
    prompt: str
    answer: str | None = None
    reference: str | None = None
    constraints: tuple[dict[str, Any], ...] = ()  # verifiable constraints (scoring/constraints.py)

    @property
    def key(self) -> str:
        """The item's content key: a stored result is reused only for the same id and text."""
        if self.constraints:
            return content_key(
                "eval-item", self.id, self.prompt, self.answer, self.reference, list(self.constraints)
            )
        return content_key("eval-item", self.id, self.prompt, self.answer, self.reference)


class EvalCache(Protocol):
    """Where `evaluate` keeps per-item results so that a re-run resumes: the run store's eval rows
    (stages/evaluate.py) or memory. `part` names what was measured ("answer", "accuracy:...",
    "reference:...", "judge", "win"); values are JSON-safe (a float, a list, a dict)."""

    def get(self, part: str, keys: Sequence[str]) -> dict[str, Any]: ...

    def put(self, part: str, values: dict[str, Any]) -> None: ...


class MemoryCache:
    """An `EvalCache` in memory (no resume): the default."""

    def __init__(self) -> None:
        self.parts: dict[str, dict[str, Any]] = {}

    def get(self, part: str, keys: Sequence[str]) -> dict[str, Any]:
        have = self.parts.get(part, {})
        return {k: have[k] for k in keys if k in have}

    def put(self, part: str, values: dict[str, Any]) -> None:
        self.parts.setdefault(part, {}).update(values)


def load_eval_set(spec: EvalSet) -> list[EvalItem]:
    """The items of one eval set (`persyn.prompts.load_prompts`: errors name the file and line)."""
    from persyn.prompts import load_prompts

    loaded = load_prompts(
        spec.path,
        prompt_field=spec.prompt_field,
        answer_field=spec.answer_field,
        id_field=spec.id_field,
        limit=spec.limit,
    )
    items = []
    for p in loaded.prompts:
        ref = p.meta.get(spec.reference_field) if spec.reference_field else None
        ref = ref if isinstance(ref, str) and ref.strip() else None
        items.append(EvalItem(p.id, p.text, p.answer, ref, prompt_constraints(p.meta)))
    return items


class OverlapError(ValueError):
    """Eval prompts that are also training prompts: the score would measure memory, not skill."""


def find_overlap(eval_prompts: Iterable[str], train_prompts: Iterable[str]) -> list[str]:
    """The eval prompts whose normalised text (`persyn.prompts.normalise_text`) is a training prompt's."""
    train = {text_id(t) for t in train_prompts}
    return [p for p in eval_prompts if text_id(p) in train]


def refuse_overlap(items: Sequence[EvalItem], train_prompts: Iterable[str], where: str = "eval set") -> None:
    """Raise `OverlapError` if any item's prompt appears among `train_prompts`."""
    shared = find_overlap([i.prompt for i in items], train_prompts)
    if shared:
        first = normalise_text(shared[0])
        raise OverlapError(
            f"{where}: {len(shared)} of {len(items)} prompts also appear in the training prompts "
            f"(first: {first[:80]!r}); held-out prompts must be new to the student"
        )


# ----------------------------------------------------------------------------- metric pieces


def _number_text(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    return f"{float(x):.3f}".rstrip("0").rstrip(".")


def wrong_references(reference: str, answer: str, k: int = 3) -> list[str]:
    """`reference` with its (last) `answer` replaced by `k` wrong numbers: two near misses and a
    doubling. Empty when the answer is not a plain number or does not occur in the reference."""
    text = answer.strip()
    try:
        v = Fraction(text.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return []
    # the last occurrence that is a whole number (so "2" is not found inside "12" or "2.5")
    found = list(re.finditer(rf"(?<![\d.]){re.escape(text)}(?!\d|\.\d)", reference))
    if not found:
        return []
    head, tail = reference[: found[-1].start()], reference[found[-1].end() :]
    out: list[str] = []
    for w in (v + 1, v - 1 if v >= 1 else v + 2, 2 * v if v else v + 3, v + 10):
        t = _number_text(w)
        if w != v and t != text and t not in out:
            out.append(t)
    return [head + t + tail for t in out[:k]]


def _in_batches(
    fn: Callable[[list[int]], list[Any]], n: int, batch: int, ui: Progress, label: str
) -> list[Any]:
    """fn over index batches, with a progress bar; results in order."""
    out: list[Any] = []
    with ui.task(label, total=n) as advance:
        for s in range(0, n, batch):
            idx = list(range(s, min(n, s + batch)))
            out.extend(fn(idx))
            advance(len(idx))
    return out


def pairwise_preferences(
    judge: Engine,
    prompts: Sequence[str],
    first: Sequence[str],
    second: Sequence[str],
    *,
    template: str = PAIRWISE_TEMPLATE,
    labels: tuple[str, str] = ("A", "B"),
) -> list[float]:
    """log P(labels[0]) - log P(labels[1]) as the judge's reply, `first` shown as A: > 0 prefers
    `first`. The labels are the reply's text: "A"/"B" for a chat judge (the reply starts a turn);
    a completion-template judge wants " A"/" B"."""
    texts = [template.format(prompt=p, a=a, b=b) for p, a, b in zip(prompts, first, second, strict=True)]
    la = judge.loglik(texts, [labels[0]] * len(texts))
    lb = judge.loglik(texts, [labels[1]] * len(texts))
    return [float(x) - float(y) for x, y in zip(la, lb, strict=True)]


def _outcome(preference: float) -> float:
    if math.isnan(preference):
        return math.nan
    return 1.0 if preference > 0 else 0.0 if preference < 0 else 0.5


def two_order_score(candidate_first: float, baseline_first: float) -> float:
    """An item's win score from its two judgements: `candidate_first` is the preference for A with
    the candidate as A, `baseline_first` with the baseline as A. Mean of the two outcomes (1 win,
    0.5 tie, 0 loss), so a constant position bias cancels."""
    return (_outcome(candidate_first) + _outcome(-baseline_first)) / 2


def win_scores(
    judge: Engine,
    prompts: Sequence[str],
    candidate: Sequence[str],
    baseline: Sequence[str],
    *,
    batch_size: int = 8,
    progress: Progress | None = None,
    label: str = "win rate",
) -> list[float]:
    """Per item: 1 if the judge prefers `candidate` in both orders, 0.5 if split or identical
    answers, 0 if it prefers `baseline` in both (see the module docstring)."""
    ui = progress or Progress(None)
    n = len(prompts)
    if not len(candidate) == len(baseline) == n:
        raise ValueError("win_scores: prompts, candidate and baseline must have the same length")
    same = [normalise_text(c) == normalise_text(b) for c, b in zip(candidate, baseline, strict=True)]
    todo = [i for i in range(n) if not same[i]]
    scores = [0.5] * n

    def judge_batch(idx: list[int]) -> list[float]:
        ps = [prompts[todo[i]] for i in idx]
        cs = [candidate[todo[i]] for i in idx]
        bs = [baseline[todo[i]] for i in idx]
        ab = pairwise_preferences(judge, ps, cs, bs)
        ba = pairwise_preferences(judge, ps, bs, cs)
        return [two_order_score(x, y) for x, y in zip(ab, ba, strict=True)]

    for i, s in zip(todo, _in_batches(judge_batch, len(todo), batch_size, ui, label), strict=True):
        scores[i] = s
    return scores


# ----------------------------------------------------------------------------- evaluate


@dataclass
class EvalResult:
    """One model on one eval set: answers, per-item scores, metric intervals, and what it cost."""

    model: str
    items: list[EvalItem]
    answers: list[str | None]  # None: beyond the answer limit
    scores: dict[str, list[float]]  # metric -> one value per item (NaN where it does not apply)
    metrics: dict[str, Interval]
    cost: dict[str, float] = field(default_factory=dict)  # seconds per phase (new work), tokens

    def rows(self) -> list[dict[str, Any]]:
        """Per-item records (for a JSONL dump)."""
        out = []
        for k, (item, answer) in enumerate(zip(self.items, self.answers, strict=True)):
            row: dict[str, Any] = {"id": item.id, "prompt": item.prompt, "answer": item.answer}
            row["response"] = answer
            for name, values in self.scores.items():
                v = values[k]
                row[name] = None if math.isnan(v) else v
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "cost": self.cost,
            "items": len(self.items),
        }


def _fill(
    cache: EvalCache,
    part: str,
    keys: Sequence[str],
    compute: Callable[[list[int]], list[Any]],
    batch: int,
    ui: Progress,
    label: str,
) -> tuple[list[Any], float]:
    """Each key's value of `part`: from the cache, else computed (`compute(indices)`) batch by
    batch and put in the cache after each batch, so a killed run loses one batch at most.
    Returns the values in order and the seconds spent computing."""
    have = cache.get(part, keys)
    todo = [i for i, k in enumerate(keys) if k not in have]
    seconds = 0.0
    if not keys:
        return [], seconds
    with ui.task(label, total=len(keys)) as advance:
        advance(len(keys) - len(todo))
        for s in range(0, len(todo), batch):
            idx = todo[s : s + batch]
            t = time.perf_counter()
            new = dict(zip([keys[i] for i in idx], compute(idx), strict=True))
            seconds += time.perf_counter() - t
            cache.put(part, new)
            have.update(new)
            advance(len(idx))
    return [have[k] for k in keys], seconds


def _number(v: Any) -> float:
    return math.nan if v is None else float(v)


def evaluate(
    engine: Engine,
    items: Sequence[EvalItem],
    settings: EvalSettings,
    *,
    judge: Engine | None = None,
    baseline: EvalResult | Sequence[str | None] | None = None,
    train_prompts: Iterable[str] | None = None,
    reference_template: str = DEFAULT_REFERENCE_TEMPLATE,
    answer_limit: int | None = None,
    checker: str = "auto",
    cache: EvalCache | None = None,
    progress: Progress | None = None,
    label: str = "eval",
) -> EvalResult:
    """Score `engine` on `items` (see the module docstring).

    `judge`: the judge for prompts without answers (None: judge score and win rate are skipped).
    `baseline`: the untrained student's answers to the same items (an EvalResult or the texts), for
    the win rate; None skips it. `train_prompts`: refused if any item is among them.
    `answer_limit`: answer only the first N items (accuracy, judge score and win rate cover those;
    the reference metrics, one forward pass each, cover every item); their answers are None.
    `checker`: the answer checker (`numeric | math | exact | auto`). `cache`: where per-item
    results are kept and found again (the run store's eval rows; default: memory); what it holds
    is not computed again, so its keys must name this model, judge and baseline.
    """
    ui = progress or Progress(None)
    cache = cache if cache is not None else MemoryCache()
    items = list(items)
    n = len(items)
    if train_prompts is not None:
        refuse_overlap(items, train_prompts, where=label)
    keys = [it.key for it in items]
    cost: dict[str, float] = {}
    scores: dict[str, list[float]] = {}
    bs = settings.batch_size

    n_answer = n if answer_limit is None else min(n, answer_limit)
    params = GenerationParams(max_new_tokens=settings.max_new_tokens, temperature=0.0)

    def generate(idx: list[int]) -> list[dict[str, Any]]:
        gens: list[Generation] = engine.generate([items[i].prompt for i in idx], params)
        return [{"text": g.text, "tokens": g.completion_tokens} for g in gens]

    got, cost["generate_s"] = _fill(cache, "answer", keys[:n_answer], generate, bs, ui, f"{label} · answer")
    answers: list[str | None] = [g["text"] for g in got] + [None] * (n - n_answer)
    cost["generated_tokens"] = float(sum(g["tokens"] for g in got))

    with_ref = [i for i, it in enumerate(items) if it.answer is not None]
    constrained = [i for i, it in enumerate(items) if it.constraints and i < n_answer]
    open_ended = [
        i for i, it in enumerate(items) if it.answer is None and not it.constraints and i < n_answer
    ]
    answered = [i for i in with_ref if i < n_answer]
    if answered:
        check = answer_checker(settings, checker)
        scores["accuracy"] = _accuracy_scores(items, answers, answered, keys, check, cache, ui, label)
    if constrained:
        scores.update(_constraint_scores(items, answers, constrained, keys, cache, ui, label))
    if with_ref:
        ll, margin, cost["loglik_s"] = _reference_scores(
            engine, items, with_ref, keys, reference_template, bs, cache, ui, label
        )
        scores["reference_loglik"], scores["reference_margin"] = ll, margin
    if open_ended and judge is not None:
        base = baseline.answers if isinstance(baseline, EvalResult) else baseline
        if not settings.win_rate:
            base = None
        if base is not None and len(base) != n:
            raise ValueError(f"{label}: the baseline has {len(base)} answers for {n} items")
        judged, judge_cost = _judge_scores(
            judge, items, answers, open_ended, base, keys, bs, cache, ui, label
        )
        scores.update(judged)
        cost.update(judge_cost)

    boot = dict(confidence=settings.confidence, resamples=settings.resamples, seed=settings.seed)
    metrics = {name: metric_interval(values, **boot) for name, values in scores.items()}
    return EvalResult(getattr(engine, "fingerprint", "?"), items, answers, scores, metrics, cost)


def _spread(n: int, idx: list[int], values: Sequence[Any]) -> list[float]:
    """Per-item values of the items `idx` over all `n` items (NaN elsewhere)."""
    out = [math.nan] * n
    for i, v in zip(idx, values, strict=True):
        out[i] = _number(v)
    return out


def _accuracy_scores(items, answers, answered, keys, check, cache, ui, label) -> list[float]:
    """1/0 per answered item with a reference answer (NaN elsewhere), cached under the checker."""

    def verdicts(idx: list[int]) -> list[float]:
        pos = [answered[j] for j in idx]
        got = check.check_many([answers[i] or "" for i in pos], [items[i].answer for i in pos])
        return [v.value for v in got]

    values, _ = _fill(
        cache, f"accuracy:{check.key}", [keys[i] for i in answered], verdicts, 256, ui, f"{label} · check"
    )
    return _spread(len(items), answered, values)


def _reference_scores(engine, items, with_ref, keys, reference_template, bs, cache, ui, label):
    """Log-likelihood of each item's reference, and its margin over the wrong variants (NaN where an
    item has no reference); and the seconds spent."""

    def reference_texts(i: int) -> list[str]:
        ref = items[i].reference or reference_template.format(answer=items[i].answer)
        return [ref, *wrong_references(ref, items[i].answer or "")]

    def logliks(idx: list[int]) -> list[list[float | None]]:
        # One loglik call holds each item's reference followed by its wrong variants.
        texts = [(j, t) for j in idx for t in reference_texts(with_ref[j])]
        lls = engine.loglik([items[with_ref[j]].prompt for j, _ in texts], [t for _, t in texts])
        out: dict[int, list[float | None]] = {}
        for (j, _), v in zip(texts, lls, strict=True):
            out.setdefault(j, []).append(None if math.isnan(float(v)) else float(v))
        return [out[j] for j in idx]

    lls, seconds = _fill(
        cache,
        f"reference:{digest(reference_template)}",
        [keys[i] for i in with_ref],
        logliks,
        bs,
        ui,
        f"{label} · reference loglik",
    )
    margins = [_number(ref) - sum(map(_number, wrong)) / len(wrong) if wrong else None for ref, *wrong in lls]
    return (
        _spread(len(items), with_ref, [ref for ref, *_ in lls]),
        _spread(len(items), with_ref, margins),
        seconds,
    )


def _judge_scores(judge, items, answers, open_ended, base, keys, bs, cache, ui, label):
    """Judge score of each answered open-ended item and, given the baseline's answers `base`, the
    win rate against them; NaN elsewhere. Returns (scores, seconds spent)."""

    def judged(idx: list[int]) -> list[float | None]:
        pos = [open_ended[j] for j in idx]
        vals = judge.score([items[i].prompt for i in pos], [answers[i] or "" for i in pos])
        return [None if math.isnan(float(v)) else float(v) for v in vals]

    own = [keys[i] for i in open_ended]
    js, cost = _fill(cache, "judge", own, judged, bs, ui, f"{label} · judge")
    scores = {"judge_score": _spread(len(items), open_ended, js)}
    seconds = {"judge_s": cost}
    if base is not None:

        def wins(idx: list[int]) -> list[float]:
            pos = [open_ended[j] for j in idx]
            return win_scores(
                judge,
                [items[i].prompt for i in pos],
                [answers[i] or "" for i in pos],
                [base[i] or "" for i in pos],
                batch_size=bs,
            )

        ws, seconds["win_s"] = _fill(cache, "win", own, wins, bs, ui, f"{label} · win rate")
        scores["win_rate"] = _spread(len(items), open_ended, ws)
    return scores, seconds


CONSTRAINT_METRICS = (
    "constraints_strict",
    "constraints_loose",
    "all_constraints_strict",
    "all_constraints_loose",
)


def _constraint_scores(items, answers, constrained, keys, cache, ui, label) -> dict[str, list[float]]:
    """The four constraint metrics of the answered items with constraints (NaN elsewhere). Checked
    in this process (lm-eval's checkers are fast); cached under the checker's version."""
    from persyn.scoring.constraints import check_response, checker_key

    def checks(idx: list[int]) -> list[list[float]]:
        out = []
        for j in idx:
            i = constrained[j]
            c = check_response(answers[i] or "", items[i].constraints, prompt=items[i].prompt)
            out.append([c.fraction_strict, c.fraction_loose, float(c.all_strict), float(c.all_loose)])
        return out

    values, _ = _fill(
        cache,
        f"constraints:{checker_key()}",
        [keys[i] for i in constrained],
        checks,
        256,
        ui,
        f"{label} · constraints",
    )
    n = len(items)
    out = {m: [math.nan] * n for m in CONSTRAINT_METRICS}
    for i, v in zip(constrained, values, strict=True):
        for m, x in zip(CONSTRAINT_METRICS, v, strict=True):
            out[m][i] = float(x)
    return out
