"""Stage strategies: datasets of the baselines, built from the same run as the PerSyn dataset, for
comparison.

    results = ctx.run_stage("strategies", names=["persyn", "strong", "random", "car", "oracle"])
    results = ctx.result("strategies")     # later: {name: StrategyResult} with each dataset's path

| strategy | who answers each prompt |
|---|---|
| persyn | the routed teacher (the run's own dataset, `<run>/dataset/`) |
| persyn-alphaA | the teacher a router trained with `router.alpha = A` routes to (the alpha grid) |
| strong | the teacher with the best mean quality on the calibration set |
| family-strong | the strongest teacher of the student's family (`student.family` / `teachers[].family`) |
| random | a seeded uniform draw per prompt |
| mix | `baselines.mix_share` of prompts to the strong teacher, the rest to `baselines.mix_weak` |
| car | the teacher with the best compatibility-adjusted reward (docs/method.md), for every prompt |
| oracle | the best combined label per prompt (see below) |

`mix_weak` defaults to the best CAR teacher other than the strong one. The oracle's labels need every
teacher's response, so it is Generate-then-Select: with `oracle=True` on all prompts, else on the
calibration prompts only.

Only what the store does not already hold is generated (calibration responses, routed ones, and
any other strategy's are reused). Each dataset is exported like the main one into
`<run>/strategies/<name>/`, and `<run>/strategies.json` lists, per strategy: `generations` (what a
standalone run of it costs: calibration x teachers plus the other prompts for strategies that
choose from calibration scores; prompts for random; prompts x teachers for the full oracle),
`new_generations` (what this call generated), `rows`, and for comparison on the calibration
prompts (where every strategy's choice has a score) `mean_quality` (raw, the same prompts for
every strategy), `mean_label` (combined label) and `mean_learnability`, plus `accuracy` over the
rows that have a reference answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from persyn.defaults import STRATEGIES
from persyn.router.baselines import persyn_alpha
from persyn.stages.context import STRATEGIES_DIR, STRATEGIES_FILE, RunContext, StageError
from persyn.stages.export_records import build_records, dataset_files, left_out_notes, write_dataset


@dataclass
class StrategyResult:
    name: str
    scope: str  # "all" prompts, or "calibration" (the oracle without --oracle)
    rows: int
    generations: int
    new_generations: int
    teacher_counts: dict[str, int]
    path: Path | None = None
    mean_quality: float | None = None
    mean_label: float | None = None
    mean_learnability: float | None = None
    accuracy: float | None = None
    n_accuracy: int = 0
    #: Share of its prompts this strategy gives another teacher than Strong's (None: no Strong).
    routed_unlike_strong: float | None = None
    notes: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)  # format -> dataset file (to train on)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path) if self.path else None
        d["files"] = {k: str(v) for k, v in self.files.items()}
        return d

    def figures(self) -> dict[str, Any]:
        """What `<run>/strategies.json` records of this strategy, in its order."""
        return {
            "generations": self.generations,
            "new_generations": self.new_generations,
            "rows": self.rows,
            "scope": self.scope,
            "mean_quality": self.mean_quality,
            "mean_label": self.mean_label,
            "mean_learnability": self.mean_learnability,
            "accuracy": self.accuracy,
            "n_accuracy": self.n_accuracy,
            "routed_unlike_strong": self.routed_unlike_strong,
            "path": str(self.path) if self.path else None,
        }


def result(ctx: RunContext) -> dict[str, StrategyResult]:
    """The strategies built so far in this run (empty if none), from `<run>/strategies.json`:
    each one's figures and dataset folder (None where it has no rows)."""
    out = {}
    for name, d in (ctx.artifact(STRATEGIES_FILE) or {}).items():
        fields = {k: v for k, v in d.items() if k not in ("path",)}
        path = Path(d["path"]) if d.get("path") else None
        files = dataset_files(ctx, name, path) if path else {}
        out[name] = StrategyResult(name=name, teacher_counts={}, path=path, files=files, **fields)
    return out


def parse_strategies(text: str | list[str]) -> list[str]:
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    try:
        unknown = [n for n in names if n not in STRATEGIES and persyn_alpha(n) is None]
    except ValueError as e:
        raise StageError(str(e)) from None
    if unknown:
        raise StageError(
            f"unknown strateg{'ies' if len(unknown) > 1 else 'y'} {unknown}; choose from {list(STRATEGIES)}"
        )
    if not names:
        raise StageError(f"no strategy given; choose from {list(STRATEGIES)}")
    return list(dict.fromkeys(names))


#: Strategy -> the baseline router (persyn.router.baselines) that picks its teachers.
BASELINE_OF = {
    "strong": "strongest",
    "family-strong": "family-strong",
    "random": "random",
    "mix": "mix",
    "car": "car",
}


def fit_strategy_baselines(cfg, teachers: list[str], q: np.ndarray, lm: np.ndarray):
    """The baselines that pick the strategies' teachers, fitted on every calibration prompt by the
    function the report's measurement uses (`build_baselines`), with the config's settings."""
    from persyn.router.baselines import build_baselines

    return build_baselines(teachers, q, lm, **cfg.baseline_settings())


def _assignments(
    ctx: RunContext, names: list[str], oracle: bool
) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """name -> (scope, [(prompt id, teacher)])."""
    from persyn.router.baselines import FixedRouter

    cfg = ctx.config
    teachers = ctx.teachers
    ids = ctx.working_ids()
    cal = ctx.calibration_ids()
    scores = ctx.result("score")
    q, lm = scores.matrices(cal, gate=True)  # choices see junk responses as the router's labels do
    if np.isnan(q).all():
        raise StageError("no calibration scores yet: run `persyn score CONFIG` first")
    fitted = fit_strategy_baselines(cfg, teachers, q, lm)
    texts: list[str] | None = None

    def all_texts() -> list[str]:
        nonlocal texts
        if texts is None:
            texts = [p.text for batch in ctx.store.iter_prompts() for p in batch]
            pos = {p: i for i, p in enumerate(ctx.store.prompt_ids())}
            texts = [texts[pos[i]] for i in ids]
        return texts

    out: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    for name in names:
        if (alpha := persyn_alpha(name)) is not None:  # PerSyn with a router of another alpha
            variant = ctx.with_router_alpha(alpha)
            variant.run_stage("train-router")
            routes = ctx.store.get_routes(variant.run_stage("route").router_key, ids)
            out[name] = ("all", list(zip(routes.prompt_ids, routes.assigned, strict=True)))
            continue
        router = fitted.routers.get(BASELINE_OF.get(name, name))
        if name in BASELINE_OF and router is None:
            if name == "family-strong" and not cfg.family_teachers():
                raise StageError(
                    "family-strong needs student.family and at least one teacher with that family "
                    f"(student.family = {cfg.student.family!r}; teacher families: "
                    f"{ {t.name: t.family for t in cfg.teachers} })"
                )
            raise StageError(f"cannot build strategy {name!r}: {fitted.skipped(BASELINE_OF[name])}")
        if name == "persyn":
            routes = ctx.result("route").routes
            out[name] = ("all", list(zip(routes.prompt_ids, routes.assigned, strict=True)))
        elif isinstance(router, FixedRouter):  # strong, family-strong, car: one teacher writes everything
            out[name] = ("all", [(pid, router.choice) for pid in ids])
        elif router is not None:  # random, mix: a seeded draw per prompt
            out[name] = ("all", list(zip(ids, router.route(all_texts()), strict=True)))
        elif name == "oracle":
            if oracle:
                out[name] = ("all", [])  # filled after every teacher answered and was scored
            else:
                labels = scores.labels(q, lm)
                keep = ~np.isnan(labels).all(axis=1)
                best = np.argmax(np.where(np.isnan(labels), -np.inf, labels), axis=1)
                out[name] = ("calibration", [(cal[i], teachers[best[i]]) for i in np.flatnonzero(keep)])
    return out


def run(
    ctx: RunContext,
    names: list[str] | str | None = None,
    *,
    oracle: bool = False,
) -> dict[str, StrategyResult]:
    """Build the datasets of `names` (default: the config's default set, persyn.defaults),
    generating only what the store lacks; see the module docstring."""
    names = ctx.config.default_strategies(oracle) if names is None else parse_strategies(names)
    teachers = ctx.teachers
    ids = ctx.working_ids()
    cal = ctx.calibration_ids()
    n, T, c = len(ids), len(teachers), len(cal)
    plans = _assignments(ctx, names, oracle)
    before = _response_total(ctx)
    results: dict[str, StrategyResult] = {}
    scores = ctx.result("score")
    q_cal, l_cal = scores.matrices(cal)
    labels_cal = scores.labels(*scores.matrices(cal, gate=True))
    cal_pos = {pid: i for i, pid in enumerate(cal)}
    strong = fit_strategy_baselines(ctx.config, teachers, q_cal, l_cal).routers.get("strongest")
    strong_choice = getattr(strong, "choice", None)

    for name, (scope, assignment) in plans.items():
        ctx.ui.say(f"[bold]strategies[/]: {name}")
        start = _response_total(ctx)
        if name == "oracle" and scope == "all":
            assignment = _full_oracle(ctx, ids, scores)
        else:
            _generate(ctx, assignment)
        new = _response_total(ctx) - start
        scores.check_answers(assignment, stage="strategies")
        if name == "persyn":
            exp = ctx.run_stage("export")
            path, rows, counts = exp.path, exp.n_rows, exp.teacher_counts
        else:
            path = ctx.path(STRATEGIES_DIR, name)
            rows, counts = _write_baseline_dataset(ctx, name, scope, assignment, path)
        if name == "random":
            standalone = n
        elif name == "oracle":
            standalone = n * T if scope == "all" else c * T
        else:
            standalone = c * T + (n - c)
        res = StrategyResult(name, scope, rows, standalone, new, counts, path if rows else None)
        res.files = dataset_files(ctx, name, path) if rows else {}
        _calibration_metrics(ctx, res, assignment, cal_pos, q_cal, l_cal, labels_cal)
        _accuracy(ctx, res, assignment)
        if assignment and strong_choice is not None:
            res.routed_unlike_strong = sum(t != strong_choice for _, t in assignment) / len(assignment)
        results[name] = res
        ctx.store.log_event(
            "strategies",
            "done",
            f"{name}: {rows} rows, {new} new generations",
            strategy=name,
            rows=rows,
            new=new,
        )
    _write_summary(ctx, results)
    ctx.ui.say(f"strategies: {_response_total(ctx) - before} new generations in all")
    return results


def _full_oracle(ctx: RunContext, ids: list[str], scores) -> list[tuple[str, str]]:
    """Generate-then-Select: every teacher answers every prompt, all are scored, and each prompt
    goes to its best combined label."""
    teachers = ctx.teachers
    for t in teachers:
        ctx.generate_responses("strategies", t, ids)
    ctx.run_stage("score", prompt_ids=ids, stage="strategies")
    labels = scores.labels(*scores.matrices(ids, gate=True))
    keep = ~np.isnan(labels).all(axis=1)
    best = np.argmax(np.where(np.isnan(labels), -np.inf, labels), axis=1)
    return [(ids[i], teachers[best[i]]) for i in np.flatnonzero(keep)]


def _generate(ctx: RunContext, assignment: list[tuple[str, str]]) -> None:
    """Each teacher answers the prompts assigned to it that the store does not hold yet."""
    per_teacher: dict[str, list[str]] = {}
    for pid, t in assignment:
        per_teacher.setdefault(t, []).append(pid)
    for t in ctx.teachers:
        if per_teacher.get(t):
            ctx.generate_responses("strategies", t, per_teacher[t])


def _write_baseline_dataset(ctx: RunContext, name: str, scope: str, assignment, path: Path):
    """A baseline's dataset exported like the main one -> (rows, rows per teacher)."""
    records, left = build_records(ctx, assignment, name)
    counts = {t: sum(1 for r in records if r.teacher == t) for t in ctx.teachers}
    gens = {t: {"dataset": v} for t, v in counts.items() if v}
    toks: dict[str, dict[str, int]] = {}
    for r in records:
        tk = toks.setdefault(r.teacher, {"prompt": 0, "completion": 0})
        tk["prompt"] += r.generation.get("prompt_tokens") or 0
        tk["completion"] += r.generation.get("completion_tokens") or 0
    notes = [
        f"Baseline strategy {name!r} built from PerSyn run {ctx.store.run_dir.name}.",
        *left_out_notes(left),
    ]
    if scope == "calibration":
        notes.append("Oracle on the calibration prompts only (labels need every teacher's response).")
    if records:
        write_dataset(
            ctx,
            records,
            path,
            strategy=name,
            generations=gens,
            tokens=toks,
            cost=None,
            notes=notes,
            row_checks=ctx.result("filter").summary(assignment),
        )
    return len(records), counts


def _response_total(ctx: RunContext) -> int:
    return sum(r["ok"] + r["error"] for r in ctx.store.response_counts())


def _calibration_metrics(ctx, res: StrategyResult, assignment, cal_pos, q, lm, labels) -> None:
    teachers = ctx.teachers
    qs, ls, rs = [], [], []
    for pid, t in assignment:
        i = cal_pos.get(pid)
        if i is None:
            continue
        j = teachers.index(t)
        qs.append(q[i, j])
        ls.append(lm[i, j])
        rs.append(labels[i, j])

    def mean(v):
        a = np.asarray(v, dtype=float)
        a = a[~np.isnan(a)]
        return float(a.mean()) if a.size else None

    res.mean_quality, res.mean_learnability, res.mean_label = mean(qs), mean(ls), mean(rs)


def _accuracy(ctx: RunContext, res: StrategyResult, assignment) -> None:
    vals = ctx.result("score").answer_values(assignment)
    res.n_accuracy = len(vals)
    res.accuracy = float(np.mean(vals)) if vals else None


def _write_summary(ctx: RunContext, results: dict[str, StrategyResult]) -> None:
    doc = ctx.artifact(STRATEGIES_FILE) or {}
    ctx.write_artifact(STRATEGIES_FILE, {**doc, **{name: r.figures() for name, r in results.items()}})
