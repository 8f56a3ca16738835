"""Stage 7, report: gather the run's figures into `persyn.report.ReportData` and write
`<run>/report/index.html` (allocation, router metrics against the baselines, the cost ledger
against Generate-then-Select, strategies, sample rows).

Generate-then-Select counterfactual per teacher: every working prompt answered by that teacher,
tokens estimated from its observed means on the calibration set (prompt and completion), cost
from its prices where given.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from persyn.stages.context import RunContext, engine_line
from persyn.stages.export import build_records, ledger
from persyn.stages.route import ROUTING_FILE, current_route_key
from persyn.stages.score import quality_summary
from persyn.stages.train_router import METRICS_FILE, current_router

REPORT_DIR = "report"
STRATEGIES_FILE = "strategies.json"


def gts_counterfactual(ctx: RunContext, n_prompts: int) -> dict[str, dict[str, float | None]]:
    cal = ctx.store.get_subset("calibration") or []
    out: dict[str, dict[str, float | None]] = {}
    for t in ctx.config.teachers:
        rows = ctx.store.get_responses(t.name, ctx.teacher_gen_key(t.name), cal)
        p = [r.prompt_tokens for r in rows.values() if r.prompt_tokens is not None]
        c = [r.completion_tokens for r in rows.values() if r.completion_tokens is not None]
        mean_p = float(np.mean(p)) if p else 0.0
        mean_c = float(np.mean(c)) if c else float(ctx.config.generation_for(t.name).max_new_tokens)
        price = t.cost_per_1k_tokens
        cost = (
            None
            if price is None
            else n_prompts * (mean_p / 1000 * price.input + mean_c / 1000 * price.output)
        )
        out[t.name] = {"generations": n_prompts, "tokens": n_prompts * (mean_p + mean_c), "cost": cost}
    return out


def report(ctx: RunContext) -> Path:
    from persyn.report import LedgerRow, ReportData, write_report

    cfg = ctx.config
    key = current_route_key(ctx)
    ids = ctx.working_ids()
    routes = ctx.store.get_routes(key, ids)
    assert routes is not None
    assignment = list(zip(routes.prompt_ids, routes.assigned, strict=True))
    route_map = dict(assignment)
    allocation = {t: 0 for t in ctx.teachers}
    for _, t in assignment:
        allocation[t] += 1
    router_dir = current_router(ctx)
    doc = json.loads((router_dir / METRICS_FILE).read_text())
    metrics = doc.get("metrics", {})
    notes = list(doc.get("notes", []))
    if not metrics:
        notes.append("No calibration prompts were held out (router.test_fraction = 0): no router metrics.")
    else:
        notes.append(
            f"Router metrics: {doc.get('n_test')} held-out calibration prompts "
            f"(router.test_fraction = {cfg.router.test_fraction}); labels use alpha = {cfg.router.alpha}."
        )
    routing_doc = {}
    if ctx.store.path(ROUTING_FILE).is_file():
        routing_doc = json.loads(ctx.store.path(ROUTING_FILE).read_text())
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
    scores = (
        {pid: routes.scores[i] for i, pid in enumerate(routes.prompt_ids)}
        if routes.scores is not None
        else None
    )
    samples, _ = build_records(ctx, picks, "persyn", router_scores=scores)
    strategies = {}
    sfile = ctx.store.path(STRATEGIES_FILE)
    if sfile.is_file():
        strategies = {
            name: {k: v for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            for name, row in json.loads(sfile.read_text()).items()
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
        quality=quality_summary(ctx),
    )
    out = write_report(data, ctx.store.path(REPORT_DIR))
    ctx.store.log_event("report", "done", f"report written to {out}")
    ctx.ui.say(f"[bold]report[/]: {out}")
    return out
