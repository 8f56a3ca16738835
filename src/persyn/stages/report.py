"""Stage report: gather the run's figures into `persyn.report.ReportData` and write
`<run>/report/index.html` (allocation, router metrics against the baselines, the cost ledger
against Generate-then-Select, strategies, sample rows).

Generate-then-Select counterfactual per teacher: every working prompt answered by that teacher,
tokens estimated from its observed means on the calibration set (prompt and completion), cost
from its prices where given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from persyn.stages.context import REPORT_DIR, ROUTING_FILE, RunContext, engine_line
from persyn.stages.costs import calibration_tokens, ledger, teacher_cost
from persyn.stages.export_records import build_records


def gts_counterfactual(ctx: RunContext, n_prompts: int) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for t in ctx.teachers:
        mean_p, mean_c = calibration_tokens(ctx, t)
        cost = teacher_cost(ctx, t, mean_p, mean_c)
        gts_cost = None if cost is None else n_prompts * cost
        out[t] = {"generations": n_prompts, "tokens": n_prompts * (mean_p + mean_c), "cost": gts_cost}
    return out


def run(ctx: RunContext) -> Path:
    from persyn.report import LedgerRow, ReportData, write_report

    cfg = ctx.config
    ids = ctx.working_ids()
    routes = ctx.result("route").routes
    assignment = routes.pairs()
    route_map = dict(assignment)
    allocation = {t: 0 for t in ctx.teachers}
    for _, t in assignment:
        allocation[t] += 1
    doc = ctx.result("train-router").doc
    metrics = doc.get("metrics", {})
    notes = list(doc.get("notes", []))
    if not metrics:
        notes.append("No calibration prompts were held out (router.test_fraction = 0): no router metrics.")
    else:
        notes.append(
            f"Router metrics: {doc.get('n_test')} held-out calibration prompts "
            f"(router.test_fraction = {cfg.router.test_fraction}); labels use alpha = {cfg.router.alpha}."
        )
    routing_doc = ctx.artifact(ROUTING_FILE)
    if routing_doc is not None:
        r = routing_doc.get("routing", {})
        if r.get("method") and r["method"] != "argmax":
            notes.append(
                f"Routing under caps/budget ({r['method']}): total router score "
                f"{r.get('total_score', 0):.4g} "
                f"of {r.get('argmax_score', 0):.4g} unconstrained"
                + (", optimal." if r.get("optimal") else f", gap {r.get('gap', 0):.3g}.")
            )
    # The dtype each model actually ran in (it depends on the machine with `dtype: auto`).
    notes += [f"Model {engine_line(info)}." for info in ctx.store.get_state("engines", {}).values()]
    led = [
        LedgerRow(e.teacher, e.stage, e.generations, e.prompt_tokens, e.completion_tokens, e.cost)
        for e in ledger(ctx, route_map)
    ]
    # A few sample rows spread over the dataset (deterministic).
    k = min(cfg.output.samples, len(assignment))
    picks = [assignment[i] for i in np.linspace(0, len(assignment) - 1, num=k, dtype=int)] if k else []
    scores = routes.scores_by_id()
    samples, _ = build_records(ctx, picks, "persyn", router_scores=scores)
    strategies = {
        name: {k: v for k, v in r.figures().items() if isinstance(v, int | float) and not isinstance(v, bool)}
        for name, r in ctx.result("strategies").items()
    }
    data = ReportData(
        title=f"PerSyn run: {cfg.output.dataset_name} for {cfg.student.model}",
        run_dir=ctx.store.run_dir,
        config=cfg.to_dict(),
        allocation=allocation,
        router_metrics=metrics,
        ledger=led,
        gts=gts_counterfactual(ctx, len(ids)),  # type: ignore[arg-type]
        samples=samples,
        strategies=strategies,
        notes=notes,
        router_name="router",
        headline_stages=["calibration", "routed"],
        quality=ctx.result("score").summary(),
        comparison=ctx.result("compare"),
    )
    out = write_report(data, ctx.path(REPORT_DIR))
    ctx.store.log_event("report", "done", f"report written to {out}")
    ctx.ui.say(f"[bold]report[/]: {out}")
    return out
