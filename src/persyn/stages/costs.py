"""What generations cost: a teacher's price for tokens, its mean tokens on the calibration set,
and the cost ledger (shared by route, export and report).

The ledger counts the responses this run holds for each teacher configuration by stage:
`calibration` (calibration prompts), `routed` (other prompts routed to that teacher),
`strategies` (generated only for a baseline dataset), and `regenerated` (second tries at cut
calibration or routed responses, `generation.regenerate_cut`; those of strategy-only prompts count
under `strategies`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from persyn.stages.context import RunContext


@dataclass
class LedgerEntry:
    teacher: str
    stage: str
    generations: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None


def teacher_cost(
    ctx: RunContext, teacher: str, prompt_tokens: float, completion_tokens: float
) -> float | None:
    """What `teacher` charges for these tokens (its `cost_per_1k_tokens`), or None if unpriced."""
    from persyn.assignment import cost_per_prompt

    price = ctx.config.teacher(teacher).cost_per_1k_tokens
    if price is None:
        return None
    return cost_per_prompt(prompt_tokens, completion_tokens, price.input, price.output)


def calibration_tokens(ctx: RunContext, teacher: str) -> tuple[float, float]:
    """Mean prompt and completion tokens of `teacher`'s calibration responses (completion:
    `max_new_tokens`, an upper bound, while it has none)."""
    rows = ctx.store.get_responses(
        teacher, ctx.teacher_gen_key(teacher), ctx.store.get_subset("calibration") or []
    )
    p = [r.prompt_tokens for r in rows.values() if r.prompt_tokens is not None]
    c = [r.completion_tokens for r in rows.values() if r.completion_tokens is not None]
    mean_c = float(np.mean(c)) if c else float(ctx.config.generation_for(teacher).max_new_tokens)
    return (float(np.mean(p)) if p else 0.0), mean_c


def ledger(ctx: RunContext, routes: Mapping[str, str] | None = None) -> list[LedgerEntry]:
    """Generations and tokens spent per teacher and stage (see the module docstring).
    `routes`: prompt id -> teacher of the current routing (None: everything outside calibration
    counts as routed)."""
    cal = set(ctx.store.get_subset("calibration") or [])
    out: list[LedgerEntry] = []
    for t in ctx.teachers:
        rgk = ctx.regen_gen_key(t)
        entries = {s: LedgerEntry(t, s) for s in ("calibration", "routed", "regenerated", "strategies")}
        for gk in [ctx.teacher_gen_key(t), *([rgk] if rgk else [])]:
            for batch in ctx.store.iter_responses(t, gk, status=None):
                for r in batch:
                    if r.prompt_id in cal or routes is None or routes.get(r.prompt_id) == t:
                        stage = "routed" if r.prompt_id not in cal else "calibration"
                        e = entries["regenerated" if gk == rgk else stage]
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
                e.cost = teacher_cost(ctx, t, e.prompt_tokens, e.completion_tokens)
                out.append(e)
    return out
