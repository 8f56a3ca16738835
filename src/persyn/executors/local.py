"""The local executor: batches run in this process, one after another.

Engines are loaded through `load_engine` and kept in a small LRU keyed by their `EngineSpec`, so a
model that plays two roles (a teacher that is also the student or the judge) is loaded once, and a
stage never loads a model twice. When the LRU is full the least recently used engine is closed
before the next loads; with a GPU the default size is 1, so each model frees its memory before the
next one loads.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator

from persyn.engines.base import Engine
from persyn.engines.spec import EngineSpec
from persyn.executors.base import BatchResult, Executor, Job, engine_description, run_batch

log = logging.getLogger(__name__)


def _spec_key(spec: EngineSpec) -> str:
    return spec.model_dump_json()


def default_max_loaded() -> int:
    try:
        import torch

        return 1 if torch.cuda.is_available() else 4
    except ImportError:  # pragma: no cover - torch is a dependency
        return 4


class LocalExecutor(Executor):
    def __init__(
        self,
        max_loaded: int | None = None,
        *,
        loader: Callable[[EngineSpec], Engine] | None = None,
    ):
        self.max_loaded = max_loaded or default_max_loaded()
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        if loader is None:
            from persyn.engines import load_engine

            loader = load_engine
        self._loader = loader
        #: How many times each spec was loaded (the pipeline's tests check "once per stage").
        self.loads: dict[str, int] = {}

    def engine(self, spec: EngineSpec) -> Engine:
        key = _spec_key(spec)
        eng = self._engines.get(key)
        if eng is not None:
            self._engines.move_to_end(key)
            return eng
        while len(self._engines) >= self.max_loaded:
            old_key, old = self._engines.popitem(last=False)
            log.info("freeing %s before loading %s", old.fingerprint, spec.model)
            old.close()
        eng = self._loader(spec)
        self._engines[key] = eng
        self.loads[spec.model] = self.loads.get(spec.model, 0) + 1
        return eng

    def fingerprint(self, spec: EngineSpec) -> str:
        return self.engine(spec).fingerprint

    def describe(self, spec: EngineSpec) -> dict:
        return engine_description(self.engine(spec), spec)

    def run(self, job: Job) -> Iterator[BatchResult]:
        if not job.items:
            return
        engine = self.engine(job.spec)
        for items in job.batches():
            yield run_batch(engine, job, items)

    def release(self, spec: EngineSpec | None = None) -> None:
        keys = list(self._engines) if spec is None else [_spec_key(spec)]
        for key in keys:
            eng = self._engines.pop(key, None)
            if eng is not None:
                eng.close()

    def loaded(self) -> list[str]:
        return [e.fingerprint for e in self._engines.values()]
