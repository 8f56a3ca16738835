"""The Ray executor (`executor: {kind: ray, address: ...}`): model work on a Ray cluster.

Each model (engine spec) gets a pool of replica actors with the resources of its pool in the config
(`executor.pools.<teacher name | student | judge | reward>`, else the executor's defaults). A
replica loads its engine once, in `__init__`, and then runs `run_batch` on the batches it is sent;
the results travel back to the driver, which writes them to the store (the driver stays the only
writer, so resume works as with the local executor).

Dispatch uses Ray's own facilities: each ready replica is kept busy with `IN_FLIGHT` batches and
`ray.wait` hands back whichever finishes first; batches come back in any order, every item once.

Faults: replicas are actors with `max_restarts` (config) and unlimited task retries, so when a
replica's process dies Ray restarts it (the engine loads again) and runs the batches it held again;
the driver sees each batch once. A replica whose restarts are used up is dead: its batches go to the
pool's other replicas; a batch that outlives `MAX_BATCH_LOSSES` replicas comes back with its items
failed (it may be what kills them; `--retry-failed` tries them again). A pool with no replica left
stops the run with an error; the rows written so far stay, and the next run resumes.

Pools stay alive between jobs (a teacher that is also the student is loaded once) up to
`max_loaded_engines` pools (None: 1 when a pool uses GPUs, else 4) and as many as the cluster's
CPUs and GPUs hold; the least recently used pool is killed first, which frees its GPUs.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ObjectLostError, RayActorError

from persyn.config import ExecutorConfig, PoolConfig
from persyn.engines.base import EngineError
from persyn.engines.spec import EngineSpec
from persyn.executors.base import (
    BatchResult,
    Executor,
    ItemResult,
    Job,
    WorkItem,
    engine_description,
    run_batch,
)

log = logging.getLogger(__name__)

__all__ = ["IN_FLIGHT", "MAX_BATCH_LOSSES", "PASS_ENV", "RayExecutor", "Replica"]

#: Environment variables handed to the replicas when the driver has them: the zoo cache and the
#: Hugging Face cache settings. (API keys are not: set them where the workers run.)
PASS_ENV = (
    "PERSYN_CACHE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HUB_DISABLE_PROGRESS_BARS",
    "TOKENIZERS_PARALLELISM",
)
#: Batches sent to a replica ahead: one running and one waiting, so it never idles while the
#: driver writes.
IN_FLIGHT = 2
#: Replicas a batch may outlive (lost for good with it in flight) before its items come back failed.
MAX_BATCH_LOSSES = 2
#: Seconds between "still waiting for a replica" warnings.
WAIT_WARN_S = 60.0


class Replica:
    """One replica of a pool (a Ray actor): loads its engine once, then runs batches."""

    def __init__(self, spec_json: str, threads: int):
        from transformers.utils import logging as hf_logging

        from persyn.engines import load_engine
        from persyn.util.hardware import set_threads

        hf_logging.disable_progress_bar()  # the driver's bars cover the work
        # As many torch threads as CPUs reserved, so replicas sharing a node do not oversubscribe
        # it (said explicitly: an OMP_NUM_THREADS inherited from the driver would win over Ray's).
        set_threads(threads, "the replica's num_cpus")
        self.spec = EngineSpec.model_validate_json(spec_json)
        self.engine = load_engine(self.spec)

    def ready(self) -> dict[str, Any]:
        """The engine's fingerprint, how it runs and where (answered once loaded)."""
        return {
            "fingerprint": self.engine.fingerprint,
            "engine": engine_description(self.engine, self.spec),
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
        }

    def run(self, job: Job, items: list[WorkItem]) -> BatchResult:
        return run_batch(self.engine, job, items)


def _spec_key(spec: EngineSpec) -> str:
    return spec.model_dump_json()


@dataclass
class _Pool:
    name: str
    spec: EngineSpec
    resources: PoolConfig
    actors: list[Any]
    probes: dict[Any, int] = field(default_factory=dict)  # ready() calls not answered yet -> replica
    ready: dict[int, dict[str, Any]] = field(default_factory=dict)  # replica -> its ready() answer
    dead: dict[int, str] = field(default_factory=dict)  # replica -> why
    fingerprint: str | None = None

    def live(self) -> list[int]:
        return [i for i in self.ready if i not in self.dead]

    def need(self) -> tuple[float, float]:
        r = self.resources
        assert r.replicas is not None and r.num_cpus is not None and r.num_gpus is not None
        return r.replicas * r.num_cpus, r.replicas * r.num_gpus


class RayExecutor(Executor):
    """See the module docstring. `roles` maps pool names (teacher names, student, judge, reward) to
    their specs (`Config.engine_roles()`); a spec no role names gets the executor's defaults."""

    def __init__(self, config: ExecutorConfig, roles: Mapping[str, EngineSpec] | None = None):
        self.config = config
        self._names: dict[str, list[str]] = {}
        for name, spec in (roles or {}).items():
            self._names.setdefault(_spec_key(spec), []).append(name)
        self._pools: OrderedDict[str, _Pool] = OrderedDict()
        self._started_ray = False
        self._remote: Any = None
        #: Replicas lost for good and batches sent again because of it (for logs and tests).
        self.lost_replicas = 0
        self.resubmitted = 0

    # ------------------------------------------------------------------ cluster and pools

    def _connect(self) -> None:
        if ray.is_initialized():
            return
        if self.config.address is None:
            ray.init(include_dashboard=False)
        else:
            ray.init(address=self.config.address)
        self._started_ray = True
        log.info("ray: %s", ray.cluster_resources())

    def _pool(self, spec: EngineSpec) -> _Pool:
        key = _spec_key(spec)
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            return pool
        self._connect()
        names = self._names.get(key, [])
        configured = [n for n in names if n in self.config.pools]
        res = self.config.pool(configured[0] if configured else None)
        name = "+".join(names) or spec.model
        self._make_room(res, name)
        if self._remote is None:
            self._remote = ray.remote(Replica)
        env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
        options: dict[str, Any] = {
            "num_cpus": res.num_cpus,
            "num_gpus": res.num_gpus,
            "max_restarts": self.config.max_restarts,
            "max_task_retries": -1,  # a restarted replica runs its batches again
        }
        if env:
            options["runtime_env"] = {"env_vars": env}
        assert res.replicas is not None
        threads = max(1, math.floor(res.num_cpus or 0))
        make = self._remote.options(**options)
        actors = [make.remote(spec.model_dump_json(), threads) for _ in range(res.replicas)]
        pool = _Pool(name, spec, res, actors)
        pool.probes = {a.ready.remote(): i for i, a in enumerate(actors)}
        self._pools[key] = pool
        log.info(
            "ray pool %s: %d replica(s), %s CPU and %s GPU each",
            name,
            res.replicas,
            res.num_cpus,
            res.num_gpus,
        )
        return pool

    def _make_room(self, res: PoolConfig, name: str) -> None:
        """Kill least recently used pools until the new one fits the pool limit and the cluster."""
        assert res.replicas is not None and res.num_cpus is not None and res.num_gpus is not None
        new_cpu, new_gpu = res.replicas * res.num_cpus, res.replicas * res.num_gpus
        limit = self.config.max_loaded_engines
        if limit is None:
            gpus = new_gpu > 0 or any(p.resources.num_gpus for p in self._pools.values())
            limit = 1 if gpus else 4
        total = ray.cluster_resources()
        cpu, gpu = total.get("CPU", 0.0), total.get("GPU", 0.0)
        if new_cpu > cpu or new_gpu > gpu:
            log.warning(
                "ray pool %s needs %s CPU and %s GPU in all; the cluster has %s and %s: replicas "
                "that do not fit wait for resources (an autoscaler may add nodes)",
                name,
                new_cpu,
                new_gpu,
                cpu,
                gpu,
            )

        def fits() -> bool:
            used_cpu = sum(p.need()[0] for p in self._pools.values())
            used_gpu = sum(p.need()[1] for p in self._pools.values())
            return used_cpu + new_cpu <= cpu and used_gpu + new_gpu <= gpu

        while self._pools and (len(self._pools) >= limit or not fits()):
            old = next(iter(self._pools.values()))
            log.info("freeing ray pool %s before starting %s", old.name, name)
            self._kill(next(iter(self._pools)))

    def _kill(self, key: str) -> None:
        pool = self._pools.pop(key, None)
        if pool is None:
            return
        for actor in pool.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def _settle(self, pool: _Pool, ref: Any) -> None:
        """Take one answered ready() call: the replica is ready, or it could not start."""
        i = pool.probes.pop(ref)
        try:
            info = ray.get(ref)
        except RayActorError as exc:
            pool.dead[i] = _short(exc)
            log.warning("ray pool %s: replica %d could not start: %s", pool.name, i, pool.dead[i])
            return
        if pool.fingerprint is None:
            pool.fingerprint = info["fingerprint"]
        elif info["fingerprint"] != pool.fingerprint:
            # Store keys hold the fingerprint: a replica that loads the model differently (another
            # dtype on other hardware) would mix two engines under one key.
            pool.dead[i] = f"its engine is {info['fingerprint']}, the pool's is {pool.fingerprint}"
            log.warning("ray pool %s: replica %d not used: %s", pool.name, i, pool.dead[i])
            ray.kill(pool.actors[i], no_restart=True)
            return
        pool.ready[i] = info

    def _wait_ready(self, pool: _Pool) -> None:
        """Block until the pool has a ready replica (or none can start)."""
        waited = 0.0
        while not pool.live():
            if not pool.probes:
                why = "; ".join(f"replica {i}: {w}" for i, w in sorted(pool.dead.items()))
                raise EngineError(f"ray pool {pool.name} ({pool.spec.model}): no replica is running: {why}")
            done, _ = ray.wait(list(pool.probes), num_returns=1, timeout=WAIT_WARN_S)
            for ref in done:
                self._settle(pool, ref)
            if not done:
                waited += WAIT_WARN_S
                r = pool.resources
                log.warning(
                    "ray pool %s: no replica ready after %.0fs (each needs %s CPU, %s GPU; the cluster "
                    "has %s available)",
                    pool.name,
                    waited,
                    r.num_cpus,
                    r.num_gpus,
                    ray.available_resources(),
                )

    # ------------------------------------------------------------------ Executor

    def fingerprint(self, spec: EngineSpec) -> str:
        pool = self._pool(spec)
        self._wait_ready(pool)
        assert pool.fingerprint is not None
        return pool.fingerprint

    def describe(self, spec: EngineSpec) -> dict[str, Any]:
        pool = self._pool(spec)
        self._wait_ready(pool)
        first = pool.ready[pool.live()[0]]
        return {**first["engine"], "replicas": len(pool.live())}

    def run(self, job: Job) -> Iterator[BatchResult]:
        if not job.items:
            return
        pool = self._pool(job.spec)
        self._wait_ready(pool)
        job_ref = ray.put(replace(job, items=[]))
        todo: deque[tuple[int, list[WorkItem]]] = deque(enumerate(job.batches()))
        losses: dict[int, int] = {}
        running: dict[Any, tuple[int, int, list[WorkItem]]] = {}  # ref -> (replica, batch, items)
        load: dict[int, int] = {}
        try:
            while todo or running:
                for i in pool.live():
                    while todo and load.get(i, 0) < IN_FLIGHT:
                        b, items = todo.popleft()
                        running[pool.actors[i].run.remote(job_ref, items)] = (i, b, items)
                        load[i] = load.get(i, 0) + 1
                if not running:
                    self._wait_ready(pool)  # raises when no replica is left
                    continue
                done, _ = ray.wait([*running, *pool.probes], num_returns=1)
                for ref in done:
                    if ref in pool.probes:  # a replica came up: it gets work next round
                        self._settle(pool, ref)
                        continue
                    i, b, items = running.pop(ref)
                    load[i] -= 1
                    try:
                        result: BatchResult = ray.get(ref)
                    except (RayActorError, ObjectLostError) as exc:
                        failed = self._lost(pool, i, b, items, exc, losses)
                        if failed is None:
                            todo.appendleft((b, items))
                        else:
                            yield failed
                        continue
                    result.meta.update(pool=pool.name, replica=i, node=pool.ready[i]["node"])
                    yield result
        finally:
            for ref in running:  # the caller stopped early: drop what is still queued
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - finished or gone meanwhile
                    pass

    def _lost(
        self, pool: _Pool, i: int, b: int, items: list[WorkItem], exc: Exception, losses: dict[int, int]
    ) -> BatchResult | None:
        """A batch whose replica died for good (its restarts used up) or whose result was lost:
        None to send it again, or its items failed once it has outlived MAX_BATCH_LOSSES replicas."""
        why = _short(exc)
        if isinstance(exc, ActorDiedError) and i not in pool.dead:
            pool.dead[i] = why
            self.lost_replicas += 1
            log.warning("ray pool %s: replica %d is gone: %s", pool.name, i, why)
        losses[b] = losses.get(b, 0) + 1
        if losses[b] > MAX_BATCH_LOSSES:
            msg = f"RayActorError: lost with {losses[b]} replicas running it: {why}"
            return BatchResult([ItemResult(it, None, msg) for it in items], 0.0, {"pool": pool.name})
        self.resubmitted += 1
        log.warning("ray pool %s: batch %d sent again (%s)", pool.name, b, why)
        return None

    def release(self, spec: EngineSpec | None = None) -> None:
        keys = list(self._pools) if spec is None else [_spec_key(spec)]
        for key in keys:
            self._kill(key)

    def close(self) -> None:
        self.release()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    # ------------------------------------------------------------------ inspection

    def replicas(self, spec: EngineSpec) -> dict[int, dict[str, Any]]:
        """The ready() answers (fingerprint, pid, node) of the pool's live replicas by replica
        number, asked now (a replica that was restarted answers from its new process)."""
        pool = self._pools.get(_spec_key(spec))
        if pool is None:
            return {}
        live = pool.live()
        return dict(zip(live, ray.get([pool.actors[i].ready.remote() for i in live]), strict=True))

    def pools(self) -> dict[str, dict[str, Any]]:
        """Live pools by name: replicas ready and dead, and their resources."""
        return {
            p.name: {
                "ready": len(p.live()),
                "dead": len(p.dead),
                "starting": len(p.probes),
                **p.resources.model_dump(),
            }
            for p in self._pools.values()
        }


def _short(exc: BaseException) -> str:
    """The first line of a Ray error (they carry long explanations and tracebacks)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if "creation task" in lines[0]:  # the engine failed to load: the last line says why
        return f"the engine failed to load: {lines[-1]}"
    return f"{type(exc).__name__}: {lines[0]}"
