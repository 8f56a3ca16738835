"""Stage route (the method's step 6, docs/method.md): one teacher per prompt.

- Prompts outside the calibration set (the new generations) go to `argmax pi(x)`, or, under
  `routing.caps` / `routing.budget`, to the assignment that maximises the total router score
  within the limits (`persyn.assignment.route_prompts`). Costs per prompt come from each teacher's
  `cost_per_1k_tokens` and its observed mean prompt/completion tokens on the calibration set.
- Calibration prompts already hold every teacher's response: `routing.calibration_prompts:
  router` (default, the paper) routes them by argmax too; `best` takes the teacher with the best
  combined label. They are outside the caps and the budget (they cost nothing more).

Routes are stored under a router key covering the router's weights (digest of its files), the
caps, budget and prices, and the calibration policy; a stored route is final, so re-running reuses
them and any change routes afresh under a new key. `<run>/routing.json` summarises the routing of
the current routes. `result(ctx)` is the current routes (a StageError if the config has none yet).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from persyn.assignment import (
    RoutingInfeasibleError,
    RoutingResult,
    TeacherCap,
    route_prompts,
)
from persyn.stages.context import ROUTING_FILE, RunContext, StageError
from persyn.stages.costs import calibration_tokens, teacher_cost
from persyn.stages.embeddings import embed_ids
from persyn.store import RouteSet
from persyn.store.keys import canonical_json, content_key, digest

_PUT_CHUNK = 20_000


@dataclass
class RouteResult:
    router_key: str
    routing: RoutingResult  # the prompts outside the calibration set
    counts: dict[str, int]  # every prompt, by teacher
    calibration_counts: dict[str, int]
    reused: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    #: Every working prompt's teacher and router scores, in prompt order (as `result(ctx)` reads them).
    routes: RouteSet | None = None

    @property
    def n_prompts(self) -> int:
        return sum(self.counts.values())


def router_digest(path: Path) -> str:
    """What routing depends on: the weight files, the teacher columns and the encoder settings.
    Not the training record in router.json (it holds wall times, which differ run to run)."""
    cfg = json.loads((path / "router.json").read_text())
    head = canonical_json({k: cfg.get(k) for k in ("teachers", "encoder", "head")}, spaced=True)
    skip = ("router.json", "metrics.json")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name not in skip)
    chunks = (part for f in files for part in (str(f.relative_to(path)).encode(), f.read_bytes()))
    return digest(chain([head.encode()], chunks))


def teacher_costs(ctx: RunContext) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Expected cost of one generation per priced teacher, from its mean tokens on calibration."""
    costs: dict[str, float] = {}
    tokens: dict[str, dict[str, float]] = {}
    for t in ctx.config.teachers:
        if t.cost_per_1k_tokens is None:
            continue
        mean_p, mean_c = calibration_tokens(ctx, t.name)
        tokens[t.name] = {"prompt": mean_p, "completion": mean_c}
        costs[t.name] = teacher_cost(ctx, t.name, mean_p, mean_c)  # type: ignore[assignment]
    return costs, tokens


def result(ctx: RunContext) -> RouteResult:
    """The routes of the current config, with the summary of how they were made."""
    key = ctx.store.get_state("route", {}).get("router_key")
    expected = _route_key(ctx, ctx.result("train-router").path, None)
    doc = ctx.artifact(ROUTING_FILE)
    ids = ctx.working_ids()
    routes = ctx.store.get_routes(key, ids) if key == expected else None
    if routes is None or doc is None or doc.get("router_key") != key:
        raise StageError("no routes for this config yet: run `persyn route CONFIG` first")
    cal = set(ctx.calibration_ids())
    by_id = dict(zip(routes.prompt_ids, routes.assigned, strict=True))
    res = _result_from_doc(doc, [ctx.teachers.index(by_id[i]) for i in ids if i not in cal and i in by_id])
    res.routes = routes
    return res


def _route_key(ctx: RunContext, router: Path, costs: dict[str, float] | None) -> str:
    r = ctx.config.routing
    if costs is None:
        costs, _ = teacher_costs(ctx) if (r.budget is not None or r.caps) else ({}, {})
    return content_key(
        "route",
        router_digest(router),
        ctx.teachers,
        {k: v.model_dump(mode="json") for k, v in sorted(r.caps.items())},
        r.budget,
        {k: round(v, 12) for k, v in sorted(costs.items())},
        r.calibration_prompts,
        digest(ctx.working_ids(), spaced=True),
    )


def run(ctx: RunContext) -> RouteResult:
    from persyn.router.io import load_router

    cfg = ctx.config
    teachers = ctx.teachers
    router_path = ctx.result("train-router").path
    r = cfg.routing
    costs, tokens = teacher_costs(ctx) if (r.budget is not None or r.caps) else ({}, {})
    key = _route_key(ctx, router_path, costs)
    ids = ctx.working_ids()
    cal = set(ctx.calibration_ids())

    stored = ctx.store.get_routes(key, ids)
    doc = ctx.artifact(ROUTING_FILE)
    if ctx.variant is not None:
        doc = None  # a variant's routes are recomputed (the router's scores; no model work)
    if stored is not None and len(stored) == len(ids) and doc is not None:
        if doc.get("router_key") == key:
            ctx.store.set_state("route", {"router_key": key})
            ctx.store.log_event("route", "resume", f"{len(ids)} prompts routed earlier ({key})", key=key)
            ctx.ui.say(f"[dim]route[/] {len(ids)} prompts: done earlier")
            outside = [i for i in ids if i not in cal]
            assigned_out = ctx.store.get_routes(key, outside).assigned if outside else []
            res = _result_from_doc(doc, [teachers.index(t) for t in assigned_out])
            res.reused = True
            return res

    router = load_router(
        router_path,
        expected_teachers=teachers,
        device=ctx.config.router.device,
        cache=ctx.store.embedding_cache(),
    )
    ctx.ui.say(f"[bold]route[/]: {len(ids)} prompts ({len(ids) - len(cal & set(ids))} outside calibration)")
    emb = embed_ids(ctx, ids, stage="route", encoder=router.encoder)
    scores = router.scores([""] * len(ids), embeddings=emb) if len(ids) else np.zeros((0, len(teachers)))
    in_cal = np.array([pid in cal for pid in ids], dtype=bool)
    out_idx = np.flatnonzero(~in_cal)
    caps = {name: TeacherCap(**c.model_dump()) for name, c in r.caps.items()}
    try:
        routing = route_prompts(
            scores[out_idx], teachers, caps, cost_per_prompt=costs or None, budget=r.budget
        )
    except RoutingInfeasibleError as exc:
        raise StageError(f"routing under routing.caps/budget is impossible: {exc}") from exc
    assigned = np.argmax(scores, axis=1) if len(ids) else np.zeros(0, dtype=np.int64)
    assigned[out_idx] = routing.assignment
    cal_idx = np.flatnonzero(in_cal)
    if r.calibration_prompts == "best" and cal_idx.size:
        _best_on_calibration(ctx, ids, cal_idx, assigned)
    _store_routes(
        ctx, key, ids, assigned, scores, meta={"router": str(router_path), "routing": routing.method}
    )
    counts = {t: int((assigned == j).sum()) for j, t in enumerate(teachers)}
    cal_counts = {t: int((assigned[cal_idx] == j).sum()) for j, t in enumerate(teachers)}
    info = {"teacher_costs": costs, "mean_tokens": tokens, "calibration_prompts": r.calibration_prompts}
    res = RouteResult(key, routing, counts, cal_counts, info=info)
    doc = {
        "router_key": key,
        "router": str(router_path),
        "counts": counts,
        "calibration_counts": cal_counts,
        "routing": routing.to_dict(),
        "info": info,
    }
    if ctx.variant is not None:  # routes stored under their key; the run's current ones untouched
        ctx.ui.say(f"[dim]route ({ctx.variant})[/] {counts}")
        return res
    ctx.write_artifact(ROUTING_FILE, doc)
    ctx.store.set_state("route", {"router_key": key})
    ctx.store.log_event("route", "done", routing.summary().splitlines()[0], key=key, counts=counts)
    ctx.ui.say(f"[dim]route[/] {routing.summary()}")
    return res


def _best_on_calibration(ctx: RunContext, ids: list[str], cal_idx: np.ndarray, assigned: np.ndarray) -> None:
    """`routing.calibration_prompts: best`: each calibration prompt to its best combined label."""
    scores_of = ctx.result("score")
    q, lm = scores_of.matrices([ids[i] for i in cal_idx], gate=True)
    labels = scores_of.labels(q, lm)
    has = ~np.isnan(labels).all(axis=1)
    best = np.nanargmax(np.where(has[:, None], np.nan_to_num(labels, nan=-np.inf), 0.0), axis=1)
    assigned[cal_idx[has]] = best[has]


def _store_routes(ctx: RunContext, key: str, ids, assigned: np.ndarray, scores: np.ndarray, meta) -> None:
    """The routes into the store, a chunk per transaction (a crash loses at most one chunk)."""
    teachers = ctx.teachers
    names = [teachers[i] for i in assigned]
    for s in range(0, len(ids), _PUT_CHUNK):
        ctx.store.put_routes(
            key,
            teachers,
            ids[s : s + _PUT_CHUNK],
            names[s : s + _PUT_CHUNK],
            scores[s : s + _PUT_CHUNK],
            meta=meta,
        )
        ctx.committed("route")


def _result_from_doc(doc: dict, assignment: list[int]) -> RouteResult:
    r = doc["routing"]
    rr = RoutingResult(
        teachers=r["teachers"],
        assignment=np.asarray(assignment, dtype=np.int64),
        counts=r["counts"],
        caps=r["caps"],
        cap_reasons=r["cap_reasons"],
        total_score=r["total_score"],
        argmax_score=r["argmax_score"],
        upper_bound=r["upper_bound"],
        optimal=r["optimal"],
        method=r["method"],
        costs=r.get("costs"),
        total_cost=r.get("total_cost"),
        budget=r.get("budget"),
        seconds=r.get("seconds", 0.0),
        info=r.get("info", {}),
    )
    return RouteResult(
        doc["router_key"], rr, doc["counts"], doc["calibration_counts"], info=doc.get("info", {})
    )
