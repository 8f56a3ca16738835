"""Executors: where model work runs. The pipeline driver hands a `Job` to an executor and writes
the `BatchResult`s it yields to the store; executors never open the store.

Modules: `base` (`Job`, `WorkItem`, `Executor`, `run_batch`), `factory` (`make_executor`), `local`
(this process), `ray` (a Ray cluster).
This file only re-exports the package's public names.
"""

# The modules' own __all__ lists are the one list of the package's public names.
from persyn.executors import base, factory
from persyn.executors.base import *  # noqa: F403
from persyn.executors.factory import *  # noqa: F403

__all__ = base.__all__ + factory.__all__
