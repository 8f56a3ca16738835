"""The pipeline stages, one module each, in run order:

ingest (the prompts, when the run opens) -> calibrate -> score -> train-router -> route -> generate
-> export -> report; and strategies (the baselines' datasets from the same run). The student's side:
train (fine-tune the student on a strategy's dataset) -> eval (held-out prompts) -> compare (every
strategy trained and evaluated alike: the method's Table 2).

Each stage module has `run(ctx, **options)`, which does the stage's work and resumes from what the
store holds; a stage whose output later stages use also has `result(ctx)`, which reads that output
back for the current config without redoing anything (or raises StageError naming the command to
run first). Stages never import each other: they ask the run context (`ctx.result("route")`,
`ctx.run_stage("export")`), which finds them in `STAGES`, handed to it by whoever makes it (the
pipeline, the plan): the context imports no stage, by name or by string, so there is no import
circle. docs/architecture.md has the recipe for adding one.
The stage modules are those in `STAGES`, and `ingest` (run by the pipeline when a run opens, not
registered). The other modules are not stages: `context` (the run context), and helpers that stages
share and that import no stage: `embeddings` (prompt embeddings cached in the store), `costs`
(prices, mean tokens, the ledger), `export_records` (dataset rows from the store),
`student_data` (the student's training rows, for train and compare).
tests/test_architecture.py enforces both rules.
"""

from types import ModuleType

from persyn.stages import (
    calibrate,
    compare_strategies,
    eval_student,
    export,
    generate,
    report,
    route,
    score,
    strategies,
    train_router,
    train_student,
)
from persyn.stages.context import RunContext, StageError, WorkCounts

#: Stage name (its command) -> its module in this package.
STAGES: dict[str, ModuleType] = {
    "calibrate": calibrate,
    "score": score,
    "train-router": train_router,
    "route": route,
    "generate": generate,
    "export": export,
    "report": report,
    "strategies": strategies,
    "train": train_student,
    "eval": eval_student,
    "compare": compare_strategies,
}

#: What `persyn run` runs, in order (`Pipeline.run` runs exactly these).
RUN_ORDER = ("calibrate", "score", "train-router", "route", "generate", "export", "report")

__all__ = ["RUN_ORDER", "STAGES", "RunContext", "StageError", "WorkCounts"]
