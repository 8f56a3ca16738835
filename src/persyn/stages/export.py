"""Stage export: the routed responses as SFT datasets (`persyn.dataset.export_dataset`), with a
data card, into `<run>/dataset/` (baseline strategies: `<run>/strategies/<name>/`).

Rows follow prompt order. A prompt whose routed generation failed, or whose response a row filter
drops (stage filter: cut at the token limit even after the second try, empty, a loop, an echo of
the prompt, the wrong shape), is left out and counted in the card's notes and its "Rows left out"
table, per teacher and filter with examples (`--retry-failed` on `generate` tries failed ones again). Each row
keeps its provenance: teacher, router scores, quality and learnability where scored (calibration
prompts, and answer-checked prompts), and the generation's parameters, key, finish reason, tokens
and engine fingerprint. `<run>/export.json` records what each export wrote; `result(ctx)` reads
back the PerSyn dataset's entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persyn.stages.context import DATASET_DIR, EXPORTS_FILE, RunContext, StageError
from persyn.stages.costs import ledger
from persyn.stages.export_records import build_records, left_out_notes, write_dataset


@dataclass
class ExportResult:
    strategy: str
    path: Path
    files: dict[str, Path]
    n_rows: int
    teacher_counts: dict[str, int]
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> prompts
    # per teacher: rows, cut at the first try, regenerated, dropped and dropped by filter
    row_checks: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "path": str(self.path),
            "files": {k: str(v) for k, v in self.files.items()},
            "rows": self.n_rows,
            "teacher_counts": self.teacher_counts,
            "left_out": self.left_out,
            "row_checks": self.row_checks,
        }


def result(ctx: RunContext) -> ExportResult:
    """The PerSyn dataset as last exported (from `<run>/export.json`)."""
    doc = (ctx.artifact(EXPORTS_FILE) or {}).get("persyn")
    if doc is None:
        raise StageError("no dataset exported yet: run `persyn export CONFIG` first")
    files = {k: Path(v) for k, v in doc["files"].items()}
    return ExportResult(
        "persyn",
        Path(doc["path"]),
        files,
        doc["rows"],
        doc["teacher_counts"],
        doc["left_out"],
        doc.get("row_checks", {}),
    )


def run(ctx: RunContext) -> ExportResult:
    """Export the PerSyn dataset of the current routes into `<run>/dataset/`."""
    routes = ctx.result("route").routes
    ids = ctx.working_ids()
    assignment = routes.pairs()
    scores = routes.scores_by_id()
    records, left = build_records(ctx, assignment, "persyn", router_scores=scores)
    checks = ctx.result("filter").summary(assignment)
    generations: dict[str, dict[str, int]] = {}
    tokens: dict[str, dict[str, int]] = {}
    cost: dict[str, float] = {}
    for e in ledger(ctx, dict(assignment)):
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
    out = ctx.path(DATASET_DIR)
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
        row_checks=checks,
    )
    counts = {t: sum(1 for r in records if r.teacher == t) for t in ctx.teachers}
    res = ExportResult("persyn", out, files, len(records), counts, left, _counts_only(checks))
    ctx.write_artifact(EXPORTS_FILE, {**(ctx.artifact(EXPORTS_FILE) or {}), res.strategy: res.to_dict()})
    ctx.store.log_event("export", "done", f"{len(records)} rows to {out}", rows=len(records), **left)
    return res


def _counts_only(checks: dict[str, Any]) -> dict[str, Any]:
    """What export.json keeps of the row checks: the counts per teacher (examples are in the card)."""
    return {t: {k: v for k, v in e.items()} for t, e in checks.get("teachers", {}).items()}
