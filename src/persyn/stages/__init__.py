"""The pipeline stages, one module each, in run order:

ingest (prompts; before every stage) -> calibrate -> score -> train_router -> route -> generate
-> export -> report.  `context.RunContext` is what they share (config, store, executor, display)
and holds the driver-side helpers that turn executor results into store rows.
"""

from persyn.stages.context import RunContext, StageError, WorkCounts

__all__ = ["RunContext", "StageError", "WorkCounts"]
