"""A toy stage written by the recipe "Adding a stage" of docs/architecture.md (tests/test_recipes.py
registers it and runs it through a run context). It counts each teacher's calibration responses.
"""

from __future__ import annotations

from dataclasses import dataclass

from persyn.stages.context import RunContext, StageError

ARTIFACT = "toy.json"


@dataclass
class ToyResult:
    teachers: list[str]
    factor: int


def result(ctx: RunContext) -> ToyResult:
    """The toy output of the current config, or a StageError naming the command to run first."""
    doc = ctx.artifact(ARTIFACT)
    if doc is None or doc["teachers"] != ctx.teachers:
        raise StageError("no toy output for this config yet: run `persyn toy CONFIG` first")
    return ToyResult(doc["teachers"], doc["factor"])


def run(ctx: RunContext, factor: int = 2) -> ToyResult:
    done = ctx.artifact(ARTIFACT)
    if done is not None and done["teachers"] == ctx.teachers and done["factor"] == factor:
        ctx.store.log_event("toy", "resume", "toy output written earlier")
        return result(ctx)
    ctx.write_artifact(ARTIFACT, {"teachers": ctx.teachers, "factor": factor})
    ctx.store.log_event("toy", "done", f"toy output for {len(ctx.teachers)} teachers")
    return result(ctx)
