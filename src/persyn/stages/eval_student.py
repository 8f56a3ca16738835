"""Stage eval: a student on the held-out prompt sets of `eval:` (`persyn eval CONFIG --model`).

    results = ctx.run_stage("eval", model="persyn")     # {set name: EvalResult}
    ctx.run_stage("eval", model="base")                  # the untrained student
    ctx.run_stage("eval", model="/path/to/a/model")      # any model folder (or hub id)
    ctx.result("eval")                                   # {model: {set: metrics}} from evals.json

The model answers greedily through the executor (`JobEngine`: this process or a Ray cluster);
the judge is the run's quality judge (or reward model). Metrics per set (student/evaluate.py):
accuracy by the project's answer verifier and the reference answer's log-likelihood where items
have answers; the judge's score and the two-order win rate against the untrained student where
they do not. Every answer and score is a row of the run store (`eval_rows`), keyed by content:
the model (a trained student by its training fingerprint), the eval settings, the judge, and for
the win rate the untrained student's answers. A re-run computes only what is missing. The
metric intervals go to `<run>/evals.json` for the report and `persyn compare`.

An eval prompt that is also one of the run's prompts (any strategy may train on it) is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from persyn.stages.context import EVALS_FILE, RunContext, StageError
from persyn.store import EvalValue
from persyn.store.keys import content_key, digest

__all__ = ["BASE", "result", "run"]

BASE = "base"  # the untrained student


def result(ctx: RunContext) -> dict[str, dict[str, Any]]:
    """Each evaluated model's metrics by eval set, as `<run>/evals.json` holds them."""
    return ctx.artifact(EVALS_FILE) or {}


class StoreCache:
    """`student.evaluate.EvalCache` over the run store: each part's rows under a content key of
    the part and what it depends on (`keys[part]`)."""

    def __init__(self, ctx: RunContext, depends: dict[str, Any]):
        self.store, self.depends = ctx.store, depends
        self.written = 0

    def key(self, part: str) -> str:
        kind = part.split(":", 1)[0]
        return content_key("eval", part, self.depends[kind])

    def get(self, part: str, keys):
        rows = self.store.get_eval_rows(self.key(part), keys)
        return {k: _value(v) for k, v in rows.items()}

    def put(self, part: str, values: dict[str, Any]) -> None:
        self.written += self.store.put_eval_rows(self.key(part), {k: _row(v) for k, v in values.items()})


def _row(value: Any) -> EvalValue:
    if isinstance(value, dict):
        return EvalValue(value=value.get("tokens"), text=value["text"])
    if isinstance(value, list):
        return EvalValue(meta={"values": value})
    return EvalValue(value=value, meta=None if value is not None else {"missing": True})


def _value(row: EvalValue) -> Any:
    if row.text is not None:
        return {"text": row.text, "tokens": int(row.value or 0)}
    if row.meta and "values" in row.meta:
        return row.meta["values"]
    return row.value


def _model(ctx: RunContext, model: str) -> tuple[str, Any, str]:
    """(label, engine spec, identity) of `model`: base, a trained strategy, or a folder/hub id."""
    from persyn.stages.context import STUDENTS_DIR

    student = ctx.config.student.engine_spec()
    if model == BASE:
        return BASE, student, content_key("base", ctx.fingerprint(student))
    trained = ctx.result("train")
    if model in trained:
        info = trained[model]
        spec = student.model_copy(update={"model": info["model_dir"]})
        return model, spec, content_key("trained", info["fingerprint"])
    path = Path(model).expanduser()
    if path.is_dir():
        path = path.resolve()
        spec = student.model_copy(update={"model": str(path)})
        stamp = sorted(
            (p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in path.iterdir() if p.is_file()
        )
        return str(path), spec, content_key("path", str(path), digest(stamp))
    if os.sep in model or model.startswith("."):
        raise StageError(f"--model {model!r}: no such folder (expected base, a trained strategy, or a path)")
    if "/" not in model and ":" not in model:  # a strategy's name, not a hub id or a zoo name
        raise StageError(
            f"no student trained on the {model!r} dataset yet: run `persyn train CONFIG --strategy "
            f"{model}` first (looked in {ctx.path(STUDENTS_DIR)})"
        )
    spec = student.model_copy(update={"model": model})  # a hub id or a zoo name
    return model, spec, content_key("model", model)


def _judge(ctx: RunContext):
    from persyn.executors import JobEngine

    q = ctx.config.quality
    if q.judge is not None:
        return JobEngine(ctx.executor, q.judge, score_verb="judge", batch_size=ctx.batch_size)
    if q.reward is not None:
        return JobEngine(ctx.executor, q.reward, score_verb="reward", batch_size=ctx.batch_size)
    return None


def eval_items(ctx: RunContext, names: list[str] | None = None) -> dict[str, list]:
    """Each eval set's items (or those of `names`), refused where a prompt is also one of the run's
    prompts."""
    from persyn.student.evaluate import OverlapError, load_eval_set, refuse_overlap

    sets = ctx.config.eval.sets
    if not sets:
        raise StageError(
            "eval.sets is empty: name held-out prompt files in the config's `eval:` section "
            "(e.g. `sets: [{name: math, path: eval/math.jsonl, answer_field: answer}]`)"
        )
    run_prompts = [p.text for batch in ctx.store.iter_prompts() for p in batch]
    out = {}
    for spec in sets:
        if names is not None and spec.name not in names:
            continue
        items = load_eval_set(spec)
        if not items:
            raise StageError(f"eval set {spec.name!r} ({spec.path}) has no prompts")
        try:
            refuse_overlap(items, run_prompts, where=f"eval set {spec.name!r} ({spec.path})")
        except OverlapError as e:
            raise StageError(str(e)) from None
        out[spec.name] = items
    return out


def run(ctx: RunContext, model: str = BASE, *, sets: list[str] | None = None) -> dict[str, Any]:
    """Evaluate `model` on every eval set (or those named in `sets`); see the module docstring.
    Returns {set: EvalResult}."""
    from persyn.executors import JobEngine
    from persyn.student.evaluate import PAIRWISE_TEMPLATE, evaluate

    cfg = ctx.config
    settings = cfg.eval
    wanted = sets
    known = settings.names()
    unknown = sorted(set(wanted or ()) - set(known))
    if unknown:
        raise StageError(f"no eval set named {', '.join(unknown)} (eval.sets: {', '.join(known)})")
    sets = eval_items(ctx, wanted)
    label, spec, identity = _model(ctx, model)
    judge = _judge(ctx)
    baseline: dict[str, Any] = {}
    if label != BASE and settings.win_rate and judge is not None:
        # The win rate is against the untrained student's answers: those come first.
        baseline = {name: r.answers for name, r in run(ctx, BASE, sets=wanted).items()}
    engine = JobEngine(ctx.executor, spec, score_verb="loglik", batch_size=settings.batch_size)
    answer_key = content_key("answers", identity, settings.max_new_tokens)
    judge_key = content_key(judge.spec.model_dump(mode="json"), judge.score_verb) if judge else None
    base_answers = content_key("answers", _model(ctx, BASE)[2], settings.max_new_tokens)
    results: dict[str, Any] = {}
    written = 0
    for es in settings.sets:
        if es.name not in sets:
            continue
        depends = {
            "answer": answer_key,
            "accuracy": answer_key,
            "reference": identity,
            "judge": [answer_key, judge_key],
            "win": [answer_key, base_answers, judge_key, digest(PAIRWISE_TEMPLATE)],
            "constraints": answer_key,
        }
        cache = StoreCache(ctx, depends)
        res = evaluate(
            engine,
            sets[es.name],
            settings,
            judge=judge,
            baseline=baseline.get(es.name),
            answer_limit=es.answer_limit,
            checker=es.checker,
            cache=cache,
            progress=ctx.ui,
            label=f"eval · {label} · {es.name}",
        )
        if cache.written:
            ctx.committed("eval")
        written += cache.written
        results[es.name] = res
        shown = ", ".join(f"{m} {iv}" for m, iv in res.metrics.items())
        ctx.ui.say(f"eval · {label} · {es.name}: {shown}")
    if ctx.executor is not None:
        ctx.executor.release(spec)  # a student is evaluated once: free its memory for the next
    if written:
        ctx.store.log_event("eval", "done", f"{label}: {written} new rows", model=label, rows=written)
    doc = ctx.artifact(EVALS_FILE) or {}
    doc[label] = {
        **doc.get(label, {}),
        **{name: {**r.to_dict(), "identity": identity} for name, r in results.items()},
    }
    ctx.write_artifact(EVALS_FILE, doc)
    return results
