"""Executors: where model work runs. The pipeline driver hands a `Job` to an executor and writes
the `BatchResult`s it yields to the store; executors never open the store.

    executor = make_executor(config.executor)      # executors/factory.py
    fp = executor.fingerprint(spec)                 # the engine's identity (loads it if needed)
    for batch in executor.run(Job("calibrate/qwen", spec, "generate", items, params, batch_size=32)):
        store.put_responses(rows_from(batch))       # the driver: one transaction per batch

A job is one engine and one verb over a list of items:
- `generate`: items are prompts; values are `Generation`s;
- `loglik`: the student's mean log-likelihood of each item's response (learnability, docs/method.md Eq. 1);
- `judge` / `reward`: the quality model's score of each (prompt, response).
Scores that cannot be computed (an empty response, an input over the model's context) come back
NaN (`persyn.engines.base.scores_or_missing`); an item whose call fails comes back with `error`
set, and the rest of its batch still comes back (failures are isolated item by item).

`LocalExecutor` (executors/local.py) runs batches in this process, keeping a few engines loaded
(see `ExecutorConfig.max_loaded_engines`). `RayExecutor` (executors/ray.py, `executor: {kind: ray}`)
implements the same methods over a Ray cluster: each model is a pool of replica actors (resources per
teacher from `executor.pools`) that load the engine once; batches go to whichever replica is free
and come back in any order, every item exactly once, also when a replica dies mid-batch (Ray
restarts it and retries the batch, or the batch moves to another replica). `run_batch` is the one
function both call on a loaded engine.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from persyn.engines.base import (
    ContextLengthError,
    Engine,
    Generation,
    GenerationParams,
    loglik_or_missing,
    scores_or_missing,
)
from persyn.engines.spec import EngineSpec

__all__ = [
    "BatchResult",
    "Executor",
    "ItemResult",
    "JobEngine",
    "Job",
    "Verb",
    "WorkItem",
    "engine_batch_rows",
    "engine_description",
    "run_batch",
    "todo_positions",
]

Verb = Literal["generate", "loglik", "judge", "reward"]
VERBS: tuple[str, ...] = ("generate", "loglik", "judge", "reward")


@dataclass(frozen=True)
class WorkItem:
    """One unit of work. `key` is the caller's (usually a store `ResponseKey`): results carry it
    back so the driver knows which row each value belongs to."""

    key: Any
    prompt: str
    response: str | None = None  # scoring verbs only


#: Rows per batch when neither the job nor the engine says (HTTP and vLLM engines batch themselves).
DEFAULT_BATCH_SIZE = 32


@dataclass
class Job:
    """One engine and one verb over `items`, run in batches of `batch_size` items (None: the
    engine's own batch size, `Executor.batch_rows`); each batch is one store transaction.

    `positions`: each item's index in the whole list of work the job belongs to, done items
    included (items in that order). Batches are then cut from that whole list, at multiples of the
    batch size, and keep the items still to do: an item lands in the same batch, with the same
    companions, whatever was done before. A resumed run thus runs the very batches the
    interrupted run would have run (a crash loses whole batches: each is one transaction), and a
    model whose results depend on the rows batched together still writes the same rows."""

    name: str  # for progress and logs: "calibrate/qwen"
    spec: EngineSpec
    verb: Verb
    items: list[WorkItem]
    params: GenerationParams | None = None  # generate only
    batch_size: int | None = None
    positions: list[int] | None = None

    def __post_init__(self) -> None:
        if self.verb not in VERBS:
            raise ValueError(f"unknown verb {self.verb!r}; expected one of {VERBS}")
        if self.verb == "generate" and self.params is None:
            raise ValueError("a generate job needs GenerationParams")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.positions is not None:
            if len(self.positions) != len(self.items):
                raise ValueError("a job needs one position per item")
            if any(b <= a for a, b in zip(self.positions, self.positions[1:], strict=False)):
                raise ValueError("positions must increase")

    def batches(self, size: int | None = None) -> Iterator[list[WorkItem]]:
        """The job's batches; `size` (an executor's `batch_rows`) applies when the job sets none."""
        size = self.batch_size or size or DEFAULT_BATCH_SIZE
        if self.positions is None:
            for s in range(0, len(self.items), size):
                yield self.items[s : s + size]
            return
        batch: list[WorkItem] = []
        window = None
        for pos, item in zip(self.positions, self.items, strict=True):
            if batch and pos // size != window:
                yield batch
                batch = []
            window = pos // size
            batch.append(item)
        if batch:
            yield batch


def todo_positions(wanted: Sequence[Any], todo: Any) -> list[int]:
    """The positions (in `wanted`) of the keys in `todo` (a container), for `Job.positions`."""
    return [i for i, key in enumerate(wanted) if key in todo]


@dataclass
class ItemResult:
    item: WorkItem
    value: Generation | float | None  # None when `error` is set
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BatchResult:
    results: list[ItemResult]
    seconds: float  # wall time of the batch (per-row time is seconds / len(results))
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.results)


class Executor(ABC):
    """Runs jobs; see the module docstring. Executors are context managers (close frees engines)."""

    @abstractmethod
    def fingerprint(self, spec: EngineSpec) -> str:
        """The engine's `fingerprint` for `spec` (store keys depend on it). May load the engine."""

    @abstractmethod
    def run(self, job: Job) -> Iterator[BatchResult]:
        """Yield the job's results batch by batch as they finish; every item exactly once."""

    def batch_rows(self, spec: EngineSpec) -> int | None:
        """The engine's own rows per batch (a local transformers model's `batch_size`, chosen by
        persyn.util.hardware), or None: the default. May load the engine."""
        return None

    def describe(self, spec: EngineSpec) -> dict[str, Any]:
        """How the engine of `spec` runs (`engine_description`). May load the engine."""
        return {"engine": spec.engine, "model": spec.model, "fingerprint": self.fingerprint(spec)}

    def release(self, spec: EngineSpec | None = None) -> None:  # noqa: B027 - optional hook
        """Free the engine of `spec` (all engines when None)."""

    def close(self) -> None:
        self.release()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def engine_batch_rows(engine: Engine) -> int | None:
    """A local engine's rows per forward pass (`TransformersEngine.batch_size`), else None."""
    rows = getattr(engine, "batch_size", None)
    return rows if isinstance(rows, int) and rows > 0 else None


def engine_description(engine: Engine, spec: EngineSpec) -> dict[str, Any]:
    """The engine's own `describe()` (model, fingerprint, dtype and why, device, threads), or the
    basics for an engine without one (an HTTP server keeps its dtype to itself)."""
    describe = getattr(engine, "describe", None)
    if describe is not None:
        return dict(describe())
    return {"engine": spec.engine, "model": spec.model, "fingerprint": engine.fingerprint}


# ------------------------------------------------------------------------------------------------
# the work itself, shared by every executor


class _ItemErrors:
    """An engine whose verbs return a failed item's exception in its place instead of raising
    (engines with `supports_return_exceptions`, e.g. the HTTP engine): one bad request then costs
    one error row, and the rest of the batch is not sent again."""

    def __init__(self, engine: Engine):
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Any]:
        return self._engine.generate(prompts, params, return_exceptions=True)  # type: ignore[call-arg]

    def loglik(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Any]:
        return self._engine.loglik(prompts, responses, return_exceptions=True)  # type: ignore[call-arg]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Any]:
        return self._engine.score(prompts, responses, return_exceptions=True)  # type: ignore[call-arg]


def _call(engine: Engine, job: Job, items: Sequence[WorkItem]) -> list[Any]:
    if getattr(engine, "supports_return_exceptions", False):
        engine = _ItemErrors(engine)  # type: ignore[assignment]
    prompts = [it.prompt for it in items]
    if job.verb == "generate":
        assert job.params is not None
        return list(engine.generate(prompts, job.params))
    responses = [it.response or "" for it in items]
    if job.verb == "loglik":
        return loglik_or_missing(engine, prompts, responses, job.name)
    return scores_or_missing(engine.score, prompts, responses, job.name)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_batch(engine: Engine, job: Job, items: Sequence[WorkItem]) -> BatchResult:
    """Run one batch on a loaded engine. A failing batch is split so that only the items that
    fail carry an error: prompts over the context window (named by the engine) fail alone, and
    any other error retries the items one by one."""
    t0 = time.perf_counter()
    results = _run_isolating(engine, job, list(items))
    return BatchResult(results, time.perf_counter() - t0)


def _run_isolating(engine: Engine, job: Job, items: list[WorkItem]) -> list[ItemResult]:
    try:
        values = _call(engine, job, items)
    except ContextLengthError as exc:
        bad = {i for i in exc.indices if 0 <= i < len(items)}
        if not bad:
            return _one_by_one(engine, job, items, exc)
        keep = [it for i, it in enumerate(items) if i not in bad]
        rest = iter(_run_isolating(engine, job, keep) if keep else [])
        return [
            ItemResult(it, None, f"ContextLengthError: {exc}") if i in bad else next(rest)
            for i, it in enumerate(items)
        ]
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as exc:
        return _one_by_one(engine, job, items, exc)
    if len(values) != len(items):
        raise RuntimeError(f"{job.name}: engine returned {len(values)} results for {len(items)} items")
    return [
        ItemResult(it, None, _describe(v)) if isinstance(v, Exception) else ItemResult(it, _finite_or_nan(v))
        for it, v in zip(items, values, strict=True)
    ]


def _one_by_one(engine: Engine, job: Job, items: list[WorkItem], exc: BaseException) -> list[ItemResult]:
    if len(items) == 1:
        return [ItemResult(items[0], None, _describe(exc))]
    out: list[ItemResult] = []
    for it in items:
        out += _run_isolating(engine, job, [it])
    return out


def _finite_or_nan(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return math.nan
    return v


# ------------------------------------------------------------------------------------------------
# the executor seen as an engine


class JobEngine:
    """The `Engine` verbs of one model, each call run as a job on an executor: library code that
    takes an engine (the student's evaluation) then does its model work wherever the executor runs
    it (this process, a Ray cluster) and loads each model once.

        judge = JobEngine(executor, judge_spec, score_verb="judge")
        judge.score(prompts, answers)       # one Job("judge") over the pairs

    A generation that fails raises `EngineError` (an answer cannot be made up); a score or
    log-likelihood that fails comes back NaN, as a missing score does everywhere else."""

    def __init__(
        self,
        executor: Executor,
        spec: EngineSpec,
        *,
        score_verb: Verb = "judge",
        batch_size: int | None = None,
    ):
        self.executor, self.spec, self.score_verb, self.batch_size = executor, spec, score_verb, batch_size

    @property
    def fingerprint(self) -> str:
        return self.executor.fingerprint(self.spec)

    def _run(
        self, verb: Verb, items: list[WorkItem], params: GenerationParams | None = None
    ) -> list[ItemResult]:
        job = Job(f"{verb}/{self.spec.model}", self.spec, verb, items, params, self.batch_size)
        out: dict[int, ItemResult] = {}
        for batch in self.executor.run(job):
            out.update((r.item.key, r) for r in batch.results)
        return [out[i] for i in range(len(items))]

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Generation]:
        results = self._run("generate", [WorkItem(i, p) for i, p in enumerate(prompts)], params)
        failed = [r for r in results if not r.ok]
        if failed:
            from persyn.engines.base import EngineError

            raise EngineError(
                f"{self.spec.model}: {len(failed)} generation(s) failed, first: {failed[0].error}"
            )
        return [r.value for r in results]  # type: ignore[misc]

    def _scores(self, verb: Verb, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        items = [WorkItem(i, p, r) for i, (p, r) in enumerate(zip(prompts, responses, strict=True))]
        return [float(r.value) if r.ok and r.value is not None else math.nan for r in self._run(verb, items)]  # type: ignore[arg-type]

    def loglik(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        return self._scores("loglik", prompts, responses)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        return self._scores(self.score_verb, prompts, responses)
