"""Stage compare: every strategy's dataset, the student trained on each alike, each evaluated beside
the untrained student: the method's Table 2 for this run (`persyn compare CONFIG`).

    table = ctx.run_stage("compare", strategies=["persyn", "strong", "random"])   # ComparisonTable
    ctx.run_stage("compare", alpha_grid=[0, 0.2, 0.4, 0.6, 0.8], seeds=[0, 1])   # the student picks alpha
    doc = ctx.result("compare")                                   # <run>/compare.json, or None

1. `strategies` builds each dataset (generating only what the store lacks), the PerSyn datasets of
   the alpha grid included (`persyn-alphaA`: a router trained with alpha A; the config's own alpha is
   `persyn`).
2. Each student gets the same number of examples (`train.examples`, else the smallest dataset's
   usable rows; a seeded draw by prompt) and the same `train:` settings. Arms whose examples are
   identical (e.g. CAR and Strong when CAR picks the strong teacher) are trained and evaluated
   once and marked `same_data_as`. The `seeded` arms (PerSyn and Strong) are trained once per
   seed in `seeds`; the others with `train.seed`.
3. `eval` scores the untrained student and every arm on the `test` eval sets; the alpha grid's
   arms on the `validation` sets, where the alpha with the best primary metric is chosen; that
   one is then scored on the test sets (row `persyn (chosen alpha)`). A seeded arm's row pools its
   seeds item by item (student/compare.py `pool_seeds`), with each seed's mean beside it.
4. The table: each metric's mean with its 95% interval (Wilson for 0/1 metrics), the paired test
   against the untrained student and against Strong (exact McNemar for 0/1 outcomes, else paired
   bootstrap). One comparison is primary, named before the run (`primary`: arm, reference, metric);
   every other test is exploratory, its p-value Holm-adjusted and labelled so. Beside it: Strong's
   gain over the untrained student on the primary metric (if its interval holds 0, the miniature
   cannot rank strategies), each arm's share of prompts routed to another teacher than Strong's,
   and each teacher's own quality on the calibration prompts. Written to `<run>/compare.json`;
   the report draws it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from persyn.stages.context import COMPARE_FILE, RunContext, StageError
from persyn.stages.student_data import student_name, training_examples

__all__ = ["Primary", "result", "run"]

#: Arms trained once per seed when `seeds` is given (the primary comparison's two sides).
SEEDED = ("persyn", "strong")
CHOSEN = "persyn (chosen alpha)"


@dataclass(frozen=True)
class Primary:
    """The one comparison named before the run: `arm` against `against` on `metric` (a metric name,
    measured on the test sets that have it, e.g. `constraints_strict`)."""

    arm: str = "persyn"
    against: str = "strong"
    metric: str = "accuracy"

    @classmethod
    def parse(cls, text: str | None) -> Primary | None:
        """`persyn:strong:constraints_strict` -> Primary (None for None)."""
        if text is None:
            return None
        parts = text.split(":")
        if len(parts) != 3 or not all(parts):
            raise StageError(f"--primary {text!r}: expected ARM:AGAINST:METRIC, e.g. persyn:strong:accuracy")
        return cls(*parts)


def result(ctx: RunContext) -> dict[str, Any] | None:
    return ctx.artifact(COMPARE_FILE)


def default_strategies(ctx: RunContext, oracle: bool = False) -> list[str]:
    """What `persyn compare` compares when not told: the one default set (persyn.defaults)."""
    return ctx.config.default_strategies(oracle)


def teacher_quality(ctx: RunContext) -> dict[str, dict[str, Any]]:
    """Each teacher's mean quality (95% interval, n) on the calibration prompts, per quality method
    (answers checked, constraints met, judge): what routing had to choose from."""
    import numpy as np

    from persyn.student.stats import metric_interval

    scores = ctx.result("score")
    cal = ctx.calibration_ids()
    q, _ = scores.matrices(cal)
    methods = [k.split(":", 1)[0] for k in scores.quality_keys(ctx.store.get_prompts(cal))]
    out: dict[str, dict[str, Any]] = {}
    for j, t in enumerate(ctx.teachers):
        for m in sorted(set(methods)):
            rows = [i for i, mm in enumerate(methods) if mm == m]
            values = [float(v) for v in q[rows, j] if not np.isnan(v)]
            if values:
                out.setdefault(t, {})[m] = metric_interval(values, seed=ctx.config.seed).to_dict()
    return out


def run(
    ctx: RunContext,
    strategies: list[str] | str | None = None,
    *,
    oracle: bool = False,
    force: bool = False,
    alpha_grid: list[float] | None = None,
    seeds: list[int] | None = None,
    primary: Primary | str | None = None,
):
    """Compare `strategies` (default: `default_strategies`); see the module docstring. `oracle`:
    the oracle over every prompt (Generate-then-Select). `force`: retrain finished students.
    `alpha_grid`: PerSyn at each alpha (chosen on the validation sets). `seeds`: training seeds
    of PerSyn and Strong. `primary`: the pre-registered comparison (`Primary` or ARM:AGAINST:METRIC)."""
    from persyn.student.compare import UNTRAINED

    primary = Primary.parse(primary) if isinstance(primary, str) else primary
    names = _names(ctx, strategies, oracle)
    grid = _grid_names(ctx, alpha_grid)
    test_sets, val_sets = ctx.config.eval.names("test"), ctx.config.eval.names("validation")
    if not test_sets:
        raise StageError("compare: eval.sets has no test set (split: test)")
    if grid and (not val_sets or primary is None):
        raise StageError("compare --alpha-grid needs eval sets with split: validation and a primary metric")
    arms = list(dict.fromkeys([*names, *grid]))
    built = _datasets(ctx, arms, oracle)

    n, same_as = _equal_examples(ctx, arms, oracle)
    base_seed = ctx.config.train.seed
    seed_list = list(dict.fromkeys(seeds)) if seeds else [base_seed]
    seeded = ", ".join(a for a in SEEDED if a in arms)
    same = f"; identical data: {same_as}" if same_as else ""
    ctx.ui.say(f"[bold]compare[/]: {len(arms)} arms, {n} examples each, seeds {seed_list} for {seeded}{same}")

    def arm_seeds(arm: str) -> list[int]:
        return seed_list if arm in SEEDED else [base_seed]

    todo = [(arm, s) for arm in arms if arm not in same_as for s in arm_seeds(arm)]
    trainings = _train(ctx, todo, n, force=force, oracle=oracle)

    def evaluated(arm: str, sets: list[str]) -> list[dict[str, Any]]:
        src = same_as.get(arm, arm)
        return [ctx.run_stage("eval", model=student_name(ctx, src, s), sets=sets) for s in arm_seeds(src)]

    alpha_doc = None
    if grid:
        alpha_doc = _choose_alpha(ctx, grid, val_sets, primary, evaluated, same_as)
    test_runs = {UNTRAINED: [ctx.run_stage("eval", model="base", sets=test_sets)]}
    for arm in names:
        test_runs[arm] = evaluated(arm, test_sets)
    if alpha_doc is not None:
        test_runs[CHOSEN] = evaluated(alpha_doc["chosen_name"], test_sets)
    table, spread = _table(ctx, test_runs, built, trainings, alpha_doc)
    doc = {
        "table": table.to_dict(),
        "rendered": table.render(),
        "examples": n,
        "strategies": names,
        "arms": arms,
        "seeds": {a: arm_seeds(same_as.get(a, a)) for a in test_runs if a != UNTRAINED and a != CHOSEN},
        "seed_means": spread,
        "same_data_as": same_as,
        "routed_unlike_strong": {a: built[a].routed_unlike_strong for a in arms},
        "primary": _primary_doc(table, primary, test_sets) if primary else None,
        "strong_gain": _gain_doc(table, primary, test_sets) if primary else None,
        "alpha": alpha_doc,
        "exploratory": _exploratory(table, primary),
        "train": ctx.config.train.model_dump(mode="json"),
        "teachers": teacher_quality(ctx),
        "routing": {name: r.teacher_counts for name, r in built.items()},
        "eval_sets": {name: len(r.items) for name, r in test_runs[UNTRAINED][0].items()},
        "student": ctx.config.student.model,
    }
    ctx.write_artifact(COMPARE_FILE, doc)
    ctx.store.log_event("compare", "done", f"{len(arms)} arms, {n} examples each", examples=n)
    return table


# ----------------------------------------------------------------------------- arms


def _names(ctx: RunContext, strategies, oracle: bool) -> list[str]:
    if strategies is None:
        return default_strategies(ctx, oracle)
    names = [s.strip() for s in (strategies.split(",") if isinstance(strategies, str) else strategies)]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise StageError("compare: no strategies given")
    return names


def _grid_names(ctx: RunContext, alpha_grid: list[float] | None) -> list[str]:
    """The alpha grid's strategy names; the config's own alpha is `persyn` itself."""
    from persyn.router.baselines import persyn_at

    out = []
    for a in alpha_grid or []:
        if not 0.0 <= float(a) <= 1.0:
            raise StageError(f"--alpha-grid: {a} is not between 0 and 1")
        name = persyn_at(a)
        out.append("persyn" if abs(float(a) - ctx.config.router.alpha) < 1e-12 else name)
    return list(dict.fromkeys(out))


def _datasets(ctx: RunContext, arms: list[str], oracle: bool) -> dict[str, Any]:
    """Every arm's dataset (strategies stage), refused where one is empty or the oracle partial."""
    built = ctx.run_stage("strategies", names=arms, oracle=oracle)
    empty = [n for n, r in built.items() if not r.rows]
    if empty:
        raise StageError(f"compare: no dataset rows for {', '.join(empty)}")
    if built.get("oracle") is not None and built["oracle"].scope != "all":
        raise StageError("compare: the oracle needs --oracle (else it covers the calibration prompts only)")
    return built


def _equal_examples(ctx: RunContext, arms: list[str], oracle: bool) -> tuple[int, dict[str, str]]:
    """The number of examples every arm trains on (`train.examples`, else the smallest usable
    dataset), and which arms' drawn examples are another arm's row for row (trained once)."""
    from persyn.student.compare import equal_subsamples

    examples = {a: training_examples(ctx, a, oracle=oracle) for a in arms}
    counts = {a: len(rows) for a, rows in examples.items()}
    n = ctx.config.train.examples or min(counts.values())
    short = {k: v for k, v in counts.items() if v < n}
    if short:
        have = ", ".join(f"{k} has {v}" for k, v in short.items())
        raise StageError(f"compare: train.examples = {n}, but {have} usable rows")
    return n, _same_data(equal_subsamples(examples, n, seed=ctx.config.train.seed))


def _train(ctx: RunContext, todo: list[tuple[str, int]], n: int, *, force: bool, oracle: bool) -> dict:
    """Train each (arm, seed) on `n` examples (the train stage resumes or reuses), then check that
    every training but for its seed was alike. Returns {student name: train.json}."""
    from persyn.student.compare import ComparisonError, assert_comparable

    trainings: dict[str, dict[str, Any]] = {}
    for arm, seed in todo:
        trained = ctx.run_stage("train", strategy=arm, examples=n, force=force, oracle=oracle, seed=seed)
        trainings[student_name(ctx, arm, seed)] = trained.info
    try:
        assert_comparable({k: {**v, "settings": _without_seed(v)} for k, v in trainings.items()})
    except ComparisonError as e:
        raise StageError(str(e)) from None
    return trainings


def _same_data(drawn: dict[str, list]) -> dict[str, str]:
    """arm -> the earlier arm whose drawn examples are the same, row for row."""
    from persyn.store.keys import digest

    first: dict[str, str] = {}
    out = {}
    for arm, rows in drawn.items():
        h = digest([[e.prompt, e.completion] for e in rows])
        if h in first:
            out[arm] = first[h]
        else:
            first[h] = arm
    return out


def _without_seed(info: dict[str, Any]) -> Any:
    """A training's settings without the seed (seeds differ on purpose; everything else may not)."""
    settings = dict(info.get("settings") or {})
    settings.pop("seed", None)
    return settings


# ----------------------------------------------------------------------------- alpha, table, tests


def _choose_alpha(ctx, grid, val_sets, primary, evaluated, same_as) -> dict[str, Any]:
    """Each grid arm's primary metric on the validation sets (seed `train.seed`); the best wins
    (ties: the smaller alpha, i.e. the earlier in the grid)."""
    import numpy as np

    from persyn.router.baselines import persyn_alpha
    from persyn.student.stats import metric_interval

    curve = []
    for name in grid:
        runs = evaluated(name, val_sets)[0]
        values = [v for r in runs.values() for v in r.scores.get(primary.metric, [])]
        values = [v for v in values if not np.isnan(v)]
        if not values:
            raise StageError(f"compare: no validation set measures {primary.metric!r}")
        alpha = ctx.config.router.alpha if name == "persyn" else persyn_alpha(name)
        iv = metric_interval(values, seed=ctx.config.eval.seed)
        curve.append(
            {"alpha": alpha, "name": name, "validation": iv.to_dict(), "same_data_as": same_as.get(name)}
        )
    best = max(range(len(curve)), key=lambda i: (curve[i]["validation"]["mean"], -i))
    return {
        "metric": primary.metric,
        "sets": val_sets,
        "curve": sorted(curve, key=lambda c: c["alpha"]),
        "chosen": curve[best]["alpha"],
        "chosen_name": curve[best]["name"],
    }


def _table(ctx, test_runs, built, trainings, alpha_doc):
    from persyn.student.compare import UNTRAINED, comparison_table, pool_seeds

    ev = ctx.config.eval
    boot = dict(confidence=ev.confidence, resamples=ev.resamples, seed=ev.seed)
    pooled: dict[str, dict[str, Any]] = {}
    spread: dict[str, dict[str, dict[str, list[float]]]] = {}
    for arm, runs in test_runs.items():
        pooled[arm] = {}
        for s in runs[0]:
            pooled[arm][s], per_seed = pool_seeds([r[s] for r in runs], **boot)
            if len(runs) > 1:
                spread.setdefault(arm, {})[s] = per_seed
    src = {CHOSEN: alpha_doc["chosen_name"]} if alpha_doc else {}
    costs = {
        arm: {"generations": built[b].generations, "rows": built[b].rows}
        for arm in test_runs
        if (b := src.get(arm, arm)) in built
    }
    summaries = {k: _train_summary(v) for k, v in trainings.items()}
    table = comparison_table(pooled, costs=costs, references=(UNTRAINED, "strong"), **boot)
    for row in table.rows:
        row.train = summaries.get(src.get(row.name, row.name))
    return table, spread


def _columns(table, metric: str, sets: list[str]) -> list[str]:
    return [c for c in table.columns if c.split("/", 1)[1] == metric and c.split("/", 1)[0] in sets]


def _test_doc(table, arm: str, against: str, columns: list[str]) -> dict[str, Any]:
    row = next((r for r in table.rows if r.name == arm), None)
    tests = (row.tests.get(against) or {}) if row else {}
    return {c: tests[c].to_dict() for c in columns if c in tests}


def _primary_doc(table, primary, test_sets) -> dict[str, Any]:
    cols = _columns(table, primary.metric, test_sets)
    return {
        "arm": primary.arm,
        "against": primary.against,
        "metric": primary.metric,
        "tests": _test_doc(table, primary.arm, primary.against, cols),
    }


def _gain_doc(table, primary, test_sets) -> dict[str, Any]:
    """Strong's gain over the untrained student on the primary metric: the check that the
    miniature can show anything (if its interval holds 0, no ranking of strategies is reported)."""
    from persyn.student.compare import UNTRAINED

    cols = _columns(table, primary.metric, test_sets)
    tests = _test_doc(table, "strong", UNTRAINED, cols)
    informative = bool(tests) and all(t["difference"]["low"] > 0 for t in tests.values())
    return {"tests": tests, "informative": informative}


def _exploratory(table, primary) -> dict[str, Any]:
    """Every other paired test, Holm-adjusted over the lot: exploratory, not confirmatory."""
    from persyn.student.stats import holm

    raw = {}
    for row in table.rows:
        for ref, by_col in row.tests.items():
            for col, test in by_col.items():
                if primary and row.name == primary.arm and ref == primary.against:
                    if col.split("/", 1)[1] == primary.metric:
                        continue
                raw[f"{row.name} vs {ref}: {col}"] = test.p_value
    return {"holm_adjusted_p": holm(raw), "note": "exploratory: Holm-adjusted over every test listed"}


def _train_summary(info: dict[str, Any]) -> dict[str, Any]:
    keep = ("settings", "base_model", "examples", "steps", "final_loss", "wall_s", "tokens_per_s", "dtype")
    return {k: info.get(k) for k in keep}
