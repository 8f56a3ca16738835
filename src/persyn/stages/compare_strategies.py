"""Stage compare: every strategy's dataset, the student trained on each alike, each evaluated beside
the untrained student: the method's Table 2 for this run (`persyn compare CONFIG`).

    table = ctx.run_stage("compare", strategies=["persyn", "strong", "random"])   # ComparisonTable
    doc = ctx.result("compare")                                   # <run>/compare.json, or None

1. `strategies` builds each dataset (generating only what the store lacks).
2. Each student gets the same number of examples (`train.examples`, else the smallest dataset's
   usable rows; a seeded draw by prompt), the same `train:` settings and seed; `train` trains
   each (resumable; a finished one is not redone) and `assert_comparable` checks their train.json.
3. `eval` evaluates the untrained student and each trained one on the `eval:` sets (store rows).
4. The table: each metric's mean with its bootstrap interval, the paired difference against the
   untrained student and against Strong, and what each strategy's data cost to generate (a
   standalone run of that strategy: calibration plus the routed prompts). Beside it, each
   teacher's own accuracy on the calibration prompts that have answers, so the reader sees what
   routing had to choose from. Written to `<run>/compare.json`; the report draws it.
"""

from __future__ import annotations

from typing import Any

from persyn.defaults import DEFAULT_STRATEGIES
from persyn.stages.context import COMPARE_FILE, RunContext, StageError
from persyn.stages.student_data import usable_counts

__all__ = ["DEFAULT_STRATEGIES", "result", "run"]


def result(ctx: RunContext) -> dict[str, Any] | None:
    return ctx.artifact(COMPARE_FILE)


def default_strategies(ctx: RunContext, oracle: bool = False) -> list[str]:
    """What `persyn compare` compares when not told: the one default set (persyn.defaults)."""
    return ctx.config.default_strategies(oracle)


def teacher_accuracy(ctx: RunContext) -> dict[str, dict[str, Any]]:
    """Each teacher's answer accuracy (mean, 95% interval, n) on the calibration prompts that have
    a reference answer: every teacher answered those."""
    from persyn.student.stats import bootstrap_mean

    scores = ctx.result("score")
    cal = ctx.calibration_ids()
    out = {}
    for t in ctx.teachers:
        values = scores.answer_values([(pid, t) for pid in cal])
        if values:
            out[t] = bootstrap_mean(values, seed=ctx.config.seed).to_dict()
    return out


def run(
    ctx: RunContext, strategies: list[str] | str | None = None, *, oracle: bool = False, force: bool = False
):
    """Compare `strategies` (default: `default_strategies`); see the module docstring. `oracle`:
    the oracle over every prompt (Generate-then-Select). `force`: retrain finished students."""
    from persyn.student.compare import UNTRAINED, ComparisonError, assert_comparable, comparison_table

    names = _names(ctx, strategies, oracle)
    built = ctx.run_stage("strategies", names=names, oracle=oracle)
    empty = [n for n, r in built.items() if not r.rows]
    if empty:
        raise StageError(f"compare: no dataset rows for {', '.join(empty)}")
    if built.get("oracle") is not None and built["oracle"].scope != "all":
        raise StageError("compare: the oracle needs --oracle (else it covers the calibration prompts only)")
    # Equal counts by construction: the smallest usable dataset, or train.examples.
    counts = usable_counts(ctx, names, oracle=oracle)
    n = ctx.config.train.examples or min(counts.values())
    short = {k: v for k, v in counts.items() if v < n}
    if short:
        have = ", ".join(f"{k} has {v}" for k, v in short.items())
        raise StageError(f"compare: train.examples = {n}, but {have} usable rows")
    ctx.ui.say(f"[bold]compare[/]: {len(names)} strategies, {n} examples each ({counts})")

    trainings = {}
    for name in names:
        trained = ctx.run_stage("train", strategy=name, examples=n, force=force, oracle=oracle)
        trainings[name] = trained.info
    try:
        assert_comparable(trainings)
    except ComparisonError as e:
        raise StageError(str(e)) from None

    results = {UNTRAINED: ctx.run_stage("eval", model="base")}
    for name in names:
        results[name] = ctx.run_stage("eval", model=name)
    costs = {
        name: {"generations": r.generations, "rows": r.rows}
        for name, r in built.items()
    }
    ev = ctx.config.eval
    table = comparison_table(
        results,
        costs=costs,
        trainings={k: _train_summary(v) for k, v in trainings.items()},
        references=(UNTRAINED, "strong"),
        confidence=ev.confidence,
        resamples=ev.resamples,
        seed=ev.seed,
    )
    doc = {
        "table": table.to_dict(),
        "rendered": table.render(),
        "examples": n,
        "strategies": names,
        "train": ctx.config.train.model_dump(mode="json"),
        "teachers": teacher_accuracy(ctx),
        "routing": {name: r.teacher_counts for name, r in built.items()},
        "eval_sets": {name: len(r.items) for name, r in results[UNTRAINED].items()},
        "student": ctx.config.student.model,
    }
    ctx.write_artifact(COMPARE_FILE, doc)
    ctx.store.log_event("compare", "done", f"{len(names)} strategies, {n} examples each", examples=n)
    return table


def _names(ctx: RunContext, strategies, oracle: bool) -> list[str]:
    if strategies is None:
        return default_strategies(ctx, oracle)
    names = [s.strip() for s in (strategies.split(",") if isinstance(strategies, str) else strategies)]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise StageError("compare: no strategies given")
    return names


def _train_summary(info: dict[str, Any]) -> dict[str, Any]:
    keep = ("settings", "base_model", "examples", "steps", "final_loss", "wall_s", "tokens_per_s", "dtype")
    return {k: info.get(k) for k in keep}
