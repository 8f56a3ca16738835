"""Stage score (the method's step 2, docs/method.md): quality r_q and learnability r_l of every
calibration response.

Quality: one method per prompt, for all of its teachers (`quality.method`; under `auto`, verifiable
answers where the prompt has a reference, the share of its constraints met where it carries
verifiable constraints (a `constraints` field, checked the IFEval way: scoring/constraints.py), else
the judge or reward model). Each score row is keyed
by that method's own key (`answers:<checker>@<version>...`, `judge:<fingerprint>`), so switching
between `judge` and `auto` reuses the judge's rows, and a new `prompts.answer_checker` re-checks the
answers and nothing else. Answer checking runs in the driver (math-verify in its own worker
processes); each row keeps the verdict's reason in `meta`, and a timeout's in `error` too.
Judge/reward scoring and the student's log-likelihoods run through the executor.

Learnability is keyed by the student's fingerprint (`loglik:<fingerprint>`): a new student
re-scores only this, and nothing here loads a teacher.

A failed generation has no score (the teacher is absent from that prompt's labels); an empty
response or one over a model's context is stored as a failed score, i.e. missing, never 0.

`result(ctx)` is a `Scores` reader: the keys these rows are stored under, the quality and
learnability matrices of any prompts, the combined labels (the router's targets), answer checks of
any rows, and a summary per quality method (for the report).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from persyn.executors import Job, WorkItem, todo_positions
from persyn.stages.context import LEARNABILITY, QUALITY, RunContext, StageError, WorkCounts
from persyn.store import Prompt, ResponseKey, ResponseRow, ScoreRow


@dataclass
class ScoreResult:
    prompt_ids: list[str]
    teachers: list[str]
    quality: np.ndarray  # n x T, NaN = missing
    learnability: np.ndarray
    counts: dict[str, WorkCounts] = field(default_factory=dict)

    @property
    def new_scores(self) -> int:
        return sum(c.new + c.failed for c in self.counts.values())


class Scores:
    """What the score stage offers later stages (see the module docstring)."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def quality_engine_kind(self) -> str | None:
        q = self.ctx.config.quality
        if q.method in ("judge", "reward"):
            return q.method
        if q.engine is None:
            return None
        return "reward" if q.reward is not None else "judge"

    def answers_key(self) -> str:
        """Store key of answer-check scores under this config's `prompts.answer_checker`."""
        from persyn.scoring.answers import answers_key

        return answers_key(self.ctx.config.prompts.answer_checker)

    def constraints_key(self) -> str:
        """Store key of constraint-check scores (the lm-eval version that checked them)."""
        from persyn.scoring.constraints import checker_key

        return f"constraints:{checker_key()}"

    def quality_keys(self, prompts: Sequence[Prompt]) -> list[str]:
        """The quality method key of each prompt (one method for all its teachers)."""
        from persyn.scoring.constraints import CONSTRAINTS_FIELD
        from persyn.scoring.quality import engine_scorer_key, has_reference

        q = self.ctx.config.quality
        kind = self.quality_engine_kind()
        constrained = {p.id for p in prompts if q.method == "auto" and p.meta.get(CONSTRAINTS_FIELD)}
        engine_key = None
        if kind is not None:
            if q.method in ("judge", "reward") or any(
                not has_reference(p.answer) and p.id not in constrained for p in prompts
            ):
                engine_key = engine_scorer_key(kind, self.ctx.fingerprint(q.engine))  # type: ignore[arg-type]
        keys = []
        missing_ref = []
        answers = self.answers_key()
        for p in prompts:
            if p.id in constrained:
                keys.append(self.constraints_key())
            elif q.method == "answers" or (q.method == "auto" and has_reference(p.answer)):
                if not has_reference(p.answer):
                    missing_ref.append(p)
                keys.append(answers)
            elif engine_key is not None and kind == "judge" and q.judge_reference and has_reference(p.answer):
                keys.append(engine_scorer_key(kind, self.ctx.fingerprint(q.engine), reference=True))  # type: ignore[arg-type]
            elif engine_key is not None:
                keys.append(engine_key)
            else:
                missing_ref.append(p)
                keys.append("")
        if missing_ref:
            p = missing_ref[0]
            raise StageError(
                f"{len(missing_ref)} prompt(s) have no reference answer and quality has no judge or reward "
                f"model to fall back on (first: {p.source or p.id}); set quality.judge or quality.reward"
            )
        return keys

    def quality_keys_or_none(self, prompts: Sequence[Prompt]) -> list[str | None]:
        """`quality_keys`, or None for each prompt where none applies (for provenance: never an error)."""
        try:
            return list(self.quality_keys(prompts))
        except StageError:
            return [None] * len(prompts)

    def learnability_key(self) -> str:
        from persyn.scoring.learnability import learnability_key

        return learnability_key(self.ctx.fingerprint(self.ctx.config.student.engine_spec()))

    def matrices(
        self,
        ids: Sequence[str],
        qkeys: dict[str, str] | None = None,
        lkey: str | None = None,
        *,
        gate: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Quality and learnability matrices (len(ids) x T, NaN where missing) of each teacher's
        final response (`ctx.final_responses`), from the store. `gate`: as the labels see them
        under `router.quality_floor` (`gate_scores`: responses the row filters drop below every
        kept response of their prompt, and learnability not counted below the quality
        floor); the raw scores otherwise, and with the floor off (the paper's labels)."""
        ctx = self.ctx
        ids = list(ids)
        teachers = ctx.teachers
        if qkeys is None:
            qkeys = dict(zip(ids, self.quality_keys(ctx.store.get_prompts(ids)), strict=True))
        lkey = lkey or self.learnability_key()
        pos = {pid: i for i, pid in enumerate(ids)}
        q = np.full((len(ids), len(teachers)), np.nan)
        lm = np.full((len(ids), len(teachers)), np.nan)
        by_method: dict[str, list[str]] = {}
        for pid in ids:
            by_method.setdefault(qkeys[pid], []).append(pid)
        for j, t in enumerate(teachers):
            final = ctx.final_keys(t, ids)
            for mkey, pids in by_method.items():
                keys = [final[p] for p in pids]
                for k, row in ctx.store.get_scores(QUALITY, mkey, keys).items():
                    q[pos[k.prompt_id], j] = row.value if row.value is not None else math.nan
            keys = [final[p] for p in ids]
            for k, row in ctx.store.get_scores(LEARNABILITY, lkey, keys).items():
                lm[pos[k.prompt_id], j] = row.value if row.value is not None else math.nan
        if gate:
            q, lm = self._gate(ids, qkeys, q, lm)
        return q, lm

    def _gate(self, ids: list[str], qkeys: dict[str, str], q: np.ndarray, lm: np.ndarray):
        from persyn.scoring.labels import gate_scores

        floor_cfg = self.ctx.config.router.quality_floor
        if not floor_cfg.enabled:
            return q, lm  # the paper's labels
        floors = np.array([_floor(floor_cfg, qkeys[pid]) for pid in ids], dtype=float).reshape(len(ids))
        junk = self.ctx.result("filter").junk(ids)
        if not junk.any() and np.isnan(floors).all():
            return q, lm
        return gate_scores(q, lm, junk=junk, floors=floors)

    def check_answers(self, pairs: Sequence[tuple[str, str]], *, stage: str) -> None:
        """Answer-check the responses of (prompt id, teacher) pairs whose prompt has a reference
        answer and that hold no answer score yet (cheap: in the driver, no model)."""
        from persyn.scoring.quality import has_reference

        ctx = self.ctx
        prompts = {p.id: p for p in ctx.store.get_prompts([pid for pid, _ in pairs])} if pairs else {}
        by_teacher: dict[str, list[str]] = {}
        for pid, t in pairs:
            if has_reference(prompts[pid].answer):
                by_teacher.setdefault(t, []).append(pid)
        work = []
        for t, pids in by_teacher.items():
            rows = {r.key: r for r in ctx.final_responses(t, pids).values()}
            todo = ctx.store.scores_todo(QUALITY, self.answers_key(), list(rows))
            work += [(k, rows[k]) for k in todo]
        if work:
            score_answer_rows(ctx, stage, work, prompts)

    def answer_values(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The stored answer checks (1 right, 0 wrong) of the responses of (prompt id, teacher)
        pairs, where there is one (prompts without a reference answer have none)."""
        by_teacher: dict[str, list[str]] = {}
        for pid, t in pairs:
            by_teacher.setdefault(t, []).append(pid)
        keys = [k for t, pids in by_teacher.items() for k in self.ctx.final_keys(t, pids).values()]
        rows = self.ctx.store.get_scores(QUALITY, self.answers_key(), keys)
        return [r.value for r in rows.values() if r.value is not None]

    def labels(self, quality: np.ndarray, learnability: np.ndarray) -> np.ndarray:
        """The combined labels `(1 - alpha) * z(r_q) + alpha * z(r_l)` (router.alpha, normalisation)."""
        from persyn.scoring.labels import combine_labels

        r = self.ctx.config.router
        return combine_labels(quality, learnability, alpha=r.alpha, normalisation=r.normalisation)

    def summary(self, prompt_ids: Sequence[str] | None = None) -> list[dict]:
        """`quality_summary` of this run (the report shows it)."""
        return quality_summary(self.ctx, prompt_ids)


def result(ctx: RunContext) -> Scores:
    return Scores(ctx)


def run(ctx: RunContext, prompt_ids: Sequence[str] | None = None, *, stage: str = "score") -> ScoreResult:
    """Score every teacher's stored response to `prompt_ids` (default: the calibration subset)."""
    scores = Scores(ctx)
    ids = list(prompt_ids) if prompt_ids is not None else ctx.calibration_ids()
    teachers = ctx.teachers
    gen_keys = ctx.gen_keys()
    if prompt_ids is None:
        _check_calibrated(ctx, ids, gen_keys)
    prompts = ctx.store.get_prompts(ids)
    by_id = {p.id: p for p in prompts}
    responses = {t: ctx.final_responses(t, ids) for t in teachers}
    qkeys = dict(zip(ids, scores.quality_keys(prompts), strict=True))
    result_counts: dict[str, WorkCounts] = {}

    # ---- quality, grouped by method key
    answers = scores.answers_key()
    by_method: dict[str, list[tuple[ResponseKey, ResponseRow]]] = {}
    for t in teachers:
        for pid, row in responses[t].items():
            by_method.setdefault(qkeys[pid], []).append((row.key, row))
    for mkey, pairs in by_method.items():
        todo = set(ctx.store.scores_todo(QUALITY, mkey, [k for k, _ in pairs], retry_failed=ctx.retry_failed))
        unit = f"quality {mkey.split(':')[0]}"
        ctx.log_todo(stage, unit, len(pairs) - len(todo), len(todo))
        if not todo:
            continue
        work = [(k, r) for k, r in pairs if k in todo]
        if mkey == answers:
            result_counts[unit] = score_answer_rows(ctx, stage, work, by_id)
        elif mkey == scores.constraints_key():
            result_counts[unit] = score_constraint_rows(ctx, stage, work, by_id, mkey)
        else:
            kind = scores.quality_engine_kind()
            from persyn.scoring.quality import with_reference

            # A reference-guided judge reads the reference answer under the question.
            show = mkey.startswith("judge+reference:")

            texts = {pid: with_reference(p.text, p.answer) if show else p.text for pid, p in by_id.items()}
            items = [WorkItem(k, texts[k.prompt_id], r.text) for k, r in work]
            # Batches cut from all of the method's pairs (Job.positions): the same on a resume.
            positions = todo_positions([k for k, _ in pairs], todo)
            job = Job(
                unit,
                ctx.config.quality.engine,
                kind,
                items,
                batch_size=ctx.batch_size,
                positions=positions,  # type: ignore[arg-type]
            )
            result_counts[unit] = ctx.run_score_job(stage, job, QUALITY, mkey)

    # ---- learnability, by the student
    lkey = scores.learnability_key()
    keys = [r.key for t in teachers for r in responses[t].values()]
    todo = set(ctx.store.scores_todo(LEARNABILITY, lkey, keys, retry_failed=ctx.retry_failed))
    ctx.log_todo(stage, "learnability", len(keys) - len(todo), len(todo))
    if todo:
        rows = {r.key: r for t in teachers for r in responses[t].values()}
        items = [WorkItem(k, by_id[k.prompt_id].text, rows[k].text) for k in keys if k in todo]
        job = Job(
            "learnability",
            ctx.config.student.engine_spec(),
            "loglik",
            items,
            batch_size=ctx.batch_size,
            positions=todo_positions(keys, todo),
        )
        result_counts["learnability"] = ctx.run_score_job(stage, job, LEARNABILITY, lkey)

    q, lm = scores.matrices(ids, qkeys, lkey)
    return ScoreResult(ids, teachers, q, lm, result_counts)


def score_answer_rows(ctx: RunContext, stage: str, work, by_id: dict[str, Prompt]) -> WorkCounts:
    """Answer-check (response key, row) pairs in the driver and store the scores, each with the
    verdict's reason (a timeout scores 0 and names itself in `error`)."""
    from persyn.scoring.answers import AnswerScorer

    p = ctx.config.prompts
    scorer = AnswerScorer(p.answer_checker, timeout_s=p.answer_timeout_s)
    counts = WorkCounts("quality answers", wanted=len(work))
    t0 = time.perf_counter()
    bs = max(ctx.batch_size or 0, 256)  # answer matching is cheap: fewer, larger transactions
    for s in range(0, len(work), bs):
        chunk = work[s : s + bs]
        verdicts = scorer.verdicts(
            [r.text or "" for _, r in chunk], [by_id[k.prompt_id].answer for k, _ in chunk]
        )
        ctx.store.put_scores(
            [
                ScoreRow(
                    QUALITY,
                    scorer.key,
                    k.prompt_id,
                    k.teacher,
                    k.gen_key,
                    v.value,
                    error=v.reason if v.timed_out else None,
                    meta={"method": v.method, "reason": v.reason},
                )
                for (k, _), v in zip(chunk, verdicts, strict=True)
            ]
        )
        ctx.committed(stage)
        counts.new += len(chunk)
    counts.seconds = time.perf_counter() - t0
    ctx.log_done(stage, counts)
    return counts


def score_constraint_rows(
    ctx: RunContext, stage: str, work, by_id: dict[str, Prompt], key: str
) -> WorkCounts:
    """Check (response key, row) pairs against their prompts' constraints in the driver (lm-eval's
    IFEval checkers, fast) and store the share met (strict) as quality, with every verdict in meta."""
    from persyn.scoring.constraints import CONSTRAINTS_FIELD, ConstraintError, check_response

    counts = WorkCounts("quality constraints", wanted=len(work))
    t0 = time.perf_counter()
    for s in range(0, len(work), 256):
        chunk = work[s : s + 256]
        rows = []
        for k, r in chunk:
            p = by_id[k.prompt_id]
            try:
                check = check_response(r.text or "", p.meta[CONSTRAINTS_FIELD], prompt=p.text)
            except ConstraintError as e:
                raise StageError(
                    f"prompt {p.source or p.id}: its {CONSTRAINTS_FIELD} cannot be checked: {e}"
                ) from None
            meta = {"method": "constraints", **check.as_dict()}
            rows.append(
                ScoreRow(QUALITY, key, k.prompt_id, k.teacher, k.gen_key, check.fraction_strict, meta=meta)
            )
        ctx.store.put_scores(rows)
        ctx.committed(stage)
        counts.new += len(chunk)
    counts.seconds = time.perf_counter() - t0
    ctx.log_done(stage, counts)
    return counts


def quality_summary(ctx: RunContext, prompt_ids: Sequence[str] | None = None) -> list[dict]:
    """Per quality method on the calibration responses (or `prompt_ids`): how many labels it produced,
    how many it could not score, their mean, answer-check timeouts, and for a judge or reward model
    its measured pairwise accuracy (scoring/reliability.py), or how to measure it."""
    from persyn.scoring.reliability import measured_accuracy

    scores = Scores(ctx)
    ids = list(prompt_ids) if prompt_ids is not None else ctx.calibration_ids()
    final = {t: ctx.final_keys(t, ids) for t in ctx.teachers}
    by_method: dict[str, list[str]] = {}
    for pid, key in zip(ids, scores.quality_keys(ctx.store.get_prompts(ids)), strict=True):
        by_method.setdefault(key, []).append(pid)
    answers = scores.answers_key()
    out = []
    for key, pids in by_method.items():
        want = [final[t][p] for t in ctx.teachers for p in pids]
        rows = ctx.store.get_scores(QUALITY, key, want, include_errors=True).values()
        values = [r.value for r in rows if r.value is not None]
        entry: dict = {
            "method": key.split(":", 1)[0],
            "key": key,
            "prompts": len(pids),
            "labels": len(values),
            "failed": sum(r.value is None for r in rows),
            "mean": float(np.mean(values)) if values else None,
        }
        if key == answers:
            entry["checker"] = ctx.config.prompts.answer_checker
            entry["timeouts"] = sum(bool(r.error) and r.error.startswith("timeout") for r in rows)
            entry["reliability"] = f"checked against the reference answers (checker: {entry['checker']})"
        elif key == scores.constraints_key():
            entry["reliability"] = (
                "share of the prompt's verifiable constraints met (IFEval's strict checkers)"
            )
        else:
            spec = ctx.config.quality.engine  # set: only answers need no model
            measured = measured_accuracy(spec) if spec is not None else None
            if measured is None:
                model = spec.model if spec is not None else "MODEL"
                entry["reliability"] = f"not measured: run benchmarks/judge.py --judge {model}"
            else:
                lo, hi = measured["ci95"]
                entry["accuracy"] = measured["accuracy"]
                entry["reliability"] = (
                    f"pairwise accuracy {measured['accuracy']:.2f} (95% CI {lo:.2f}-{hi:.2f}) on "
                    f"{measured['n']} labelled pairs, template '{measured['template']}'"
                )
        out.append(entry)
    return out


def _floor(cfg, quality_key: str) -> float:
    """The quality floor of a prompt's quality method (NaN: none), from its scorer key's method."""
    floor = cfg.floor(quality_key.split(":", 1)[0].split("@", 1)[0])
    return math.nan if floor is None else float(floor)


def _check_calibrated(ctx: RunContext, ids: list[str], gen_keys: dict[str, str]) -> None:
    missing = {}
    for t, gk in gen_keys.items():
        status = ctx.store.response_status(t, gk, ids)
        if len(status) < len(ids):
            missing[t] = len(ids) - len(status)
            continue
        rgk = ctx.regen_gen_key(t)
        if rgk is not None:  # a cut response still owes its second try
            rows = ctx.store.get_responses(t, gk, ids)
            cut = [pid for pid, r in rows.items() if r.finish_reason == "length"]
            owed = len(cut) - len(ctx.store.response_status(t, rgk, cut))
            if owed:
                missing[t] = owed
    if missing:
        raise StageError(
            "calibration is not finished ("
            + ", ".join(f"{t}: {n} responses missing" for t, n in missing.items())
            + "): run `persyn calibrate CONFIG` first"
        )
