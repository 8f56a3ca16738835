"""The persyn command line with a crash injected, for tests/test_crash.py: with
PERSYN_TEST_KILL_AFTER=STAGE:N in the environment, the process SIGKILLs itself right after its
N-th committed batch in STAGE (the pipeline's `on_commit` hook)."""

import os
import signal
from functools import partialmethod

from persyn.cli import main
from persyn.pipeline import Pipeline


def kill_after(target: str):
    def on_commit(stage: str, batches: int) -> None:
        if f"{stage}:{batches}" == target:
            os.kill(os.getpid(), signal.SIGKILL)

    return on_commit


if __name__ == "__main__":
    target = os.environ.get("PERSYN_TEST_KILL_AFTER")
    if target:
        Pipeline.__init__ = partialmethod(Pipeline.__init__, on_commit=kill_after(target))
    main()
