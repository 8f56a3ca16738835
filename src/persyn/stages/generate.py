"""Stage 5, generate (PAPER.md step 7): each teacher answers only the prompts routed to it.

Teachers run one after another (in config order), each loaded once; prompts whose response the
store already holds (every calibration prompt, anything generated before a crash) are skipped.
A failed row is recorded with its error and the run goes on; `--retry-failed` tries those again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from persyn.stages.context import RunContext, WorkCounts
from persyn.stages.route import current_route_key


@dataclass
class GenerateResult:
    router_key: str
    teachers: dict[str, WorkCounts] = field(default_factory=dict)

    @property
    def new_generations(self) -> int:
        return sum(c.new for c in self.teachers.values())

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.teachers.values())


def routed_ids(ctx: RunContext, router_key: str) -> dict[str, list[str]]:
    """Prompt ids per teacher under the current routes, in prompt order."""
    routes = ctx.store.get_routes(router_key, ctx.working_ids())
    out: dict[str, list[str]] = {t: [] for t in ctx.teachers}
    if routes is not None:
        for pid, t in zip(routes.prompt_ids, routes.assigned, strict=True):
            out[t].append(pid)
    return out


def generate(ctx: RunContext) -> GenerateResult:
    key = current_route_key(ctx)
    per_teacher = routed_ids(ctx, key)
    result = GenerateResult(key)
    total = sum(len(v) for v in per_teacher.values())
    ctx.ui.say(f"[bold]generate[/]: {total} routed prompts")
    for teacher in ctx.teachers:
        result.teachers[teacher] = ctx.generate_responses("generate", teacher, per_teacher[teacher])
    return result
