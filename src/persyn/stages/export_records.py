"""Datasets from the store (shared by export, strategies and report): the export records of
(prompt, teacher) pairs with their provenance, and a dataset folder with its data card."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from persyn.stages.context import LEARNABILITY, QUALITY, RunContext
from persyn.store import ResponseKey, ResponseRow

_CHUNK = 5000


def build_records(
    ctx: RunContext,
    assignment: Sequence[tuple[str, str]],
    strategy: str,
    *,
    router_scores: Mapping[str, Sequence[float]] | None = None,
) -> tuple[list[Any], dict[str, int]]:
    """ExportRecords for (prompt id, teacher) pairs, in the given order, from each teacher's final
    response (`ctx.final_responses`); plus prompts left out by reason ("failed", "missing",
    "empty", and "filter:<name>" for the first row filter that drops it: stage filter)."""
    from persyn.dataset import ExportRecord

    teachers = ctx.teachers
    scores = ctx.result("score")
    filters = ctx.result("filter")
    lkey = scores.learnability_key()
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
            for pid, row in ctx.final_responses(t, pids, include_errors=True).items():
                rows[(pid, t)] = row
        dropped = filters.verdicts(chunk)
        keys = [rows[(pid, t)].key if (pid, t) in rows else ResponseKey(pid, t, "") for pid, t in chunk]
        qk = scores.quality_keys_or_none([prompts[pid] for pid, _ in chunk])
        quality: dict[ResponseKey, float] = {}
        for mkey in {k for k in qk if k}:
            sel = [k for k, m in zip(keys, qk, strict=True) if m == mkey]
            quality.update({k: r.value for k, r in ctx.store.get_scores(QUALITY, mkey, sel).items()})
        learn = {k: r.value for k, r in ctx.store.get_scores(LEARNABILITY, lkey, keys).items()}
        for (pid, t), key in zip(chunk, keys, strict=True):
            row = rows.get((pid, t))
            why = _left_out(row, dropped.get((pid, t)))
            if why is not None:
                left[why] = left.get(why, 0) + 1
                continue
            assert row is not None
            p = prompts[pid]
            rs = router_scores.get(pid) if router_scores is not None else None
            records.append(
                ExportRecord(
                    prompt_id=pid,
                    prompt=p.text,
                    response=row.text or "",
                    teacher=t,
                    strategy=strategy,
                    answer=p.answer,
                    router_scores=(
                        {name: float(v) for name, v in zip(teachers, rs, strict=True)}
                        if rs is not None
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
                        # the second try at a response cut at the token limit (regenerate_cut)
                        **({"regenerated": True} if info.get(row.gen_key, {}).get("regenerates") else {}),
                    },
                )
            )
    return records, left


def _left_out(row: ResponseRow | None, dropped: list[str] | None) -> str | None:
    """Why a pair's response is not a dataset row (None: it is one)."""
    if row is None:
        return "missing"
    if row.status != "ok":
        return "failed"
    if dropped:
        return f"filter:{dropped[0]}"
    if not (row.text or "").strip():
        return "empty"
    return None


def left_out_notes(left: Mapping[str, int]) -> list[str]:
    why = {
        "failed": "their generation failed (errors are in the store; `persyn generate --retry-failed`)",
        "missing": "no response was generated yet (run `persyn generate`)",
        "empty": "the teacher answered with an empty text",
    }
    for k in left:
        if k.startswith("filter:"):
            why[k] = f"the `{k[7:]}` row filter drops the response (filters.{k[7:]}; stage filter)"
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
    row_checks: dict[str, Any] | None = None,
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
        row_checks=row_checks if ctx.config.filters.active() else None,
    )
    formats = list(cfg.output.formats)
    return export_dataset(records, out_dir, formats=formats, name=dataset_name(ctx, strategy), card=card)


def dataset_name(ctx: RunContext, strategy: str) -> str:
    """The name a strategy's dataset files carry (`persyn.messages.jsonl`, `persyn-strong.parquet`...)."""
    name = ctx.config.output.dataset_name
    return name if strategy == "persyn" else f"{name}-{strategy}"


def dataset_files(ctx: RunContext, strategy: str, folder: Path) -> dict[str, Path]:
    """The files of `strategy`'s dataset in `folder`, by format (those that exist)."""
    from persyn.dataset.formats import FILE_NAMES

    paths = {f: folder / n.format(name=dataset_name(ctx, strategy)) for f, n in FILE_NAMES.items()}
    return {f: p for f, p in paths.items() if p.exists()}
