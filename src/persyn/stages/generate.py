"""Stage generate (the method's step 7, docs/method.md): each teacher answers only the prompts
routed to it.

Teachers run one after another (in config order), each loaded once; prompts whose response the
store already holds (every calibration prompt, anything generated before a crash) are skipped.
A failed row is recorded with its error and the run goes on; `--retry-failed` tries those again.
"""

from __future__ import annotations

from dataclasses import dataclass

from persyn.stages.context import RunContext, TeacherWork


@dataclass
class GenerateResult(TeacherWork):
    router_key: str

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.teachers.values())


def run(ctx: RunContext) -> GenerateResult:
    routed = ctx.result("route")
    per_teacher: dict[str, list[str]] = {t: [] for t in ctx.teachers}
    for pid, t in zip(routed.routes.prompt_ids, routed.routes.assigned, strict=True):
        per_teacher[t].append(pid)
    result = GenerateResult(routed.router_key)
    total = sum(len(v) for v in per_teacher.values())
    ctx.ui.say(f"[bold]generate[/]: {total} routed prompts")
    for teacher in ctx.teachers:
        result.teachers[teacher] = ctx.generate_responses("generate", teacher, per_teacher[teacher])
    return result
