"""Stage 6, export: the routed responses as SFT datasets (`persyn.dataset.export_dataset`), with a
data card, into `<run>/dataset/` (baseline strategies: `<run>/strategies/<name>/`).

Rows follow prompt order. A prompt whose routed generation failed, or came back empty, is left out
and counted in the card's notes (`--retry-failed` on `generate` tries failed ones again). Each row
keeps its provenance: teacher, router scores, quality and learnability where scored (calibration
prompts, and answer-checked prompts), and the generation's parameters, key, finish reason, tokens
and engine fingerprint.

The cost ledger (`ledger`) counts the responses this run holds for each teacher configuration by
stage: `calibration` (calibration prompts), `routed` (other prompts routed to that teacher),
`strategies` (generated only for a baseline dataset).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persyn.stages.context import RunContext, StageError
from persyn.stages.score import LEARNABILITY, QUALITY, learnability_scorer_key, quality_keys
from persyn.store import ResponseKey, ResponseRow

DATASET_DIR = "dataset"
STRATEGIES_DIR = "strategies"
EXPORT_FILE = "export.json"
_CHUNK = 5000


@dataclass
class LedgerEntry:
    teacher: str
    stage: str
    generations: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None


@dataclass
class ExportResult:
    strategy: str
    path: Path
    files: dict[str, Path]
    n_rows: int
    teacher_counts: dict[str, int]
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> prompts

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "path": str(self.path),
            "files": {k: str(v) for k, v in self.files.items()},
            "rows": self.n_rows,
            "teacher_counts": self.teacher_counts,
            "left_out": self.left_out,
        }


def _cost(ctx: RunContext, teacher: str, ptoks: int, ctoks: int) -> float | None:
    price = ctx.config.teacher(teacher).cost_per_1k_tokens
    if price is None:
        return None
    return ptoks / 1000 * price.input + ctoks / 1000 * price.output


def ledger(ctx: RunContext, routes: Mapping[str, str] | None = None) -> list[LedgerEntry]:
    """Generations and tokens spent per teacher and stage (see the module docstring).
    `routes`: prompt id -> teacher of the current routing (None: everything outside calibration
    counts as routed)."""
    cal = set(ctx.store.get_subset("calibration") or [])
    out: list[LedgerEntry] = []
    for t in ctx.teachers:
        gk = ctx.teacher_gen_key(t)
        entries = {s: LedgerEntry(t, s) for s in ("calibration", "routed", "strategies")}
        for batch in ctx.store.iter_responses(t, gk, status=None):
            for r in batch:
                if r.prompt_id in cal:
                    e = entries["calibration"]
                elif routes is None or routes.get(r.prompt_id) == t:
                    e = entries["routed"]
                else:
                    e = entries["strategies"]
                if r.status == "ok":
                    e.generations += 1
                    e.prompt_tokens += r.prompt_tokens or 0
                    e.completion_tokens += r.completion_tokens or 0
                else:
                    e.failed += 1
        for e in entries.values():
            if e.generations or e.failed:
                e.cost = _cost(ctx, t, e.prompt_tokens, e.completion_tokens)
                out.append(e)
    return out


def build_records(
    ctx: RunContext,
    assignment: Sequence[tuple[str, str]],
    strategy: str,
    *,
    router_scores: Mapping[str, Sequence[float]] | None = None,
) -> tuple[list[Any], dict[str, int]]:
    """ExportRecords for (prompt id, teacher) pairs, in the given order; plus prompts left out
    by reason ("failed", "missing", "empty")."""
    from persyn.dataset import ExportRecord

    teachers = ctx.teachers
    gks = ctx.gen_keys()
    lkey = learnability_scorer_key(ctx)
    left: dict[str, int] = {}
    records: list[ExportRecord] = []
    info = ctx.store.get_state("gen_keys", {})
    for s in range(0, len(assignment), _CHUNK):
        chunk = list(assignment[s : s + _CHUNK])
        prompts = {p.id: p for p in ctx.store.get_prompts([pid for pid, _ in chunk])}
        by_teacher: dict[str, list[str]] = {}
        for pid, t in chunk:
            by_teacher.setdefault(t, []).append(pid)
        rows: dict[tuple[str, str], ResponseRow] = {}
        for t, pids in by_teacher.items():
            for pid, row in ctx.store.get_responses(t, gks[t], pids, include_errors=True).items():
                rows[(pid, t)] = row
        keys = [ResponseKey(pid, t, gks[t]) for pid, t in chunk]
        qk = _quality_keys_or_none(ctx, [prompts[pid] for pid, _ in chunk])
        quality: dict[ResponseKey, float] = {}
        for mkey in {k for k in qk if k}:
            sel = [k for k, m in zip(keys, qk, strict=True) if m == mkey]
            quality.update({k: r.value for k, r in ctx.store.get_scores(QUALITY, mkey, sel).items()})
        learn = {k: r.value for k, r in ctx.store.get_scores(LEARNABILITY, lkey, keys).items()}
        for (pid, t), key in zip(chunk, keys, strict=True):
            row = rows.get((pid, t))
            if row is None:
                left["missing"] = left.get("missing", 0) + 1
                continue
            if row.status != "ok":
                left["failed"] = left.get("failed", 0) + 1
                continue
            if not (row.text or "").strip():
                left["empty"] = left.get("empty", 0) + 1
                continue
            p = prompts[pid]
            scores = router_scores.get(pid) if router_scores is not None else None
            records.append(
                ExportRecord(
                    prompt_id=pid,
                    prompt=p.text,
                    response=row.text or "",
                    teacher=t,
                    strategy=strategy,
                    answer=p.answer,
                    router_scores=(
                        {name: float(v) for name, v in zip(teachers, scores, strict=True)}
                        if scores is not None
                        else None
                    ),
                    quality=quality.get(key),
                    learnability=learn.get(key),
                    generation={
                        "params": row.params or {},
                        "gen_key": row.gen_key,
                        "finish_reason": row.finish_reason,
                        "prompt_tokens": row.prompt_tokens,
                        "completion_tokens": row.completion_tokens,
                        "engine": info.get(row.gen_key, {}).get("fingerprint"),
                        "attempts": row.attempts,
                    },
                )
            )
    return records, left


def _quality_keys_or_none(ctx: RunContext, prompts) -> list[str | None]:
    """The quality key of each prompt; None where none applies (provenance only, never an error)."""
    try:
        return list(quality_keys(ctx, prompts))
    except StageError:
        return [None] * len(prompts)


def left_out_notes(left: Mapping[str, int]) -> list[str]:
    why = {
        "failed": "their generation failed (errors are in the store; `persyn generate --retry-failed`)",
        "missing": "no response was generated yet (run `persyn generate`)",
        "empty": "the teacher answered with an empty text",
    }
    return [f"{n} prompt(s) left out: {why[k]}." for k, n in left.items() if n]


def write_dataset(
    ctx: RunContext,
    records: list[Any],
    out_dir: Path,
    *,
    strategy: str,
    generations: dict[str, dict[str, int]],
    tokens: dict[str, dict[str, int]],
    cost: dict[str, float] | None,
    notes: list[str],
) -> dict[str, Path]:
    from persyn.dataset import DataCard, export_dataset

    cfg = ctx.config
    counts: dict[str, int] = {}
    for r in records:
        counts[r.teacher] = counts.get(r.teacher, 0) + 1
    n = len(ctx.working_ids())
    card = DataCard(
        title=f"{cfg.output.dataset_name}: {strategy} dataset for student {cfg.student.model}",
        strategy=strategy,
        config=cfg.to_dict(),
        teacher_counts=counts,
        n_rows=len(records),
        generations=generations,
        tokens=tokens,
        cost=cost,
        gts_generations=n * len(ctx.teachers),
        notes=notes,
    )
    name = cfg.output.dataset_name if strategy == "persyn" else f"{cfg.output.dataset_name}-{strategy}"
    return export_dataset(records, out_dir, formats=list(cfg.output.formats), name=name, card=card)


def export(ctx: RunContext) -> ExportResult:
    """Export the PerSyn dataset of the current routes into `<run>/dataset/`."""
    from persyn.stages.route import current_route_key

    key = current_route_key(ctx)
    ids = ctx.working_ids()
    routes = ctx.store.get_routes(key, ids)
    assert routes is not None
    assignment = list(zip(routes.prompt_ids, routes.assigned, strict=True))
    scores = (
        {pid: routes.scores[i] for i, pid in enumerate(routes.prompt_ids)}
        if routes.scores is not None
        else None
    )
    records, left = build_records(ctx, assignment, "persyn", router_scores=scores)
    route_map = dict(assignment)
    led = ledger(ctx, route_map)
    generations: dict[str, dict[str, int]] = {}
    tokens: dict[str, dict[str, int]] = {}
    cost: dict[str, float] = {}
    for e in led:
        if e.stage == "strategies":
            continue
        generations.setdefault(e.teacher, {})[e.stage] = e.generations + e.failed
        tk = tokens.setdefault(e.teacher, {"prompt": 0, "completion": 0})
        tk["prompt"] += e.prompt_tokens
        tk["completion"] += e.completion_tokens
        if e.cost is not None:
            cost[e.teacher] = cost.get(e.teacher, 0.0) + e.cost
    cal = ctx.calibration_ids()
    notes = [
        f"Route-then-Generate: {len(cal)} calibration prompts x {len(ctx.teachers)} teachers, then "
        f"{len(ids) - len(cal)} routed prompts, one teacher each.",
        f"Calibration prompts are assigned by {ctx.config.routing.calibration_prompts!r} "
        "(routing.calibration_prompts).",
        *left_out_notes(left),
    ]
    out = ctx.store.path(DATASET_DIR)
    ctx.ui.say(f"[bold]export[/]: {len(records)} rows -> {out}")
    files = write_dataset(
        ctx,
        records,
        out,
        strategy="persyn",
        generations=generations,
        tokens=tokens,
        cost=cost or None,
        notes=notes,
    )
    counts = {t: sum(1 for r in records if r.teacher == t) for t in ctx.teachers}
    result = ExportResult("persyn", out, files, len(records), counts, left)
    _record_export(ctx, result)
    ctx.store.log_event("export", "done", f"{len(records)} rows to {out}", rows=len(records), **left)
    return result


def _record_export(ctx: RunContext, result: ExportResult) -> None:
    path = ctx.store.path(EXPORT_FILE)
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc[result.strategy] = result.to_dict()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def exports(ctx: RunContext) -> dict[str, dict[str, Any]]:
    path = ctx.store.path(EXPORT_FILE)
    return json.loads(path.read_text()) if path.is_file() else {}
