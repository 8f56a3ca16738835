"""Executors: where model work runs. The pipeline driver hands a `Job` to an executor and writes
the `BatchResult`s it yields to the store; executors never open the store.

Modules: `base` (`Job`, `WorkItem`, `Executor`, `run_batch`, `make_executor`), `local` (this
process), `ray` (a Ray cluster).
This file only re-exports the package's public names.
"""

from persyn.executors.base import (
    BatchResult,
    Executor,
    ItemResult,
    Job,
    JobEngine,
    Verb,
    WorkItem,
    engine_description,
    make_executor,
    run_batch,
)

__all__ = [
    "BatchResult",
    "Executor",
    "ItemResult",
    "JobEngine",
    "Job",
    "Verb",
    "WorkItem",
    "engine_description",
    "make_executor",
    "run_batch",
]
