"""The Ray executor (`executor: {kind: ray}`) on a local Ray cluster (2 CPUs) started by this module.

- the same tiny config run with the local executor and on Ray gives identical responses, routes and
  (to float precision) scores;
- replicas SIGKILLed mid-run lose no rows: Ray restarts them and runs their batches again, or (with
  restarts used up) the batches move to the pool's other replica; every item comes back once;
- config errors: an unknown pool name, a role the config lacks, a shared model asked two ways.

Every Ray job is watched by `ItemCounter`, which fails the test if a job yields an item twice or
leaves one out (the store ignores a duplicate row, so only this can see one).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from pipeline_fixtures import responses, routes, scores, subset, tiny_config, write_prompts

ray = pytest.importorskip("ray", reason="the Ray executor needs `pip install 'persyn[ray]'`")

from persyn import Pipeline  # noqa: E402
from persyn.config import ConfigError, ExecutorConfig, load_config  # noqa: E402
from persyn.engines.base import GenerationParams  # noqa: E402
from persyn.engines.spec import EngineSpec  # noqa: E402
from persyn.executors import Job, WorkItem, make_executor, run_batch  # noqa: E402
from persyn.executors.ray import RayExecutor  # noqa: E402

# A smaller run than the other pipeline tests: 12 prompts, 6 on calibration, 2 rows per batch.
N_MATH, N_INSTR, C, BATCH = 6, 6, 6, 2
STAGES = ("calibrate", "score", "train_router", "route", "generate")
# One replica per model, two for t1 and the student (the ones killed below); a quarter CPU each,
# so that every pool stays up for the whole run on the 2-CPU cluster (a replica starts in seconds
# on CPU, mostly importing torch: restarting pools would dominate the test's time).
RAY = {
    "executor.kind": "ray",
    "executor.replicas": 1,
    "executor.num_cpus_per_replica": 0.25,
    "executor.max_loaded_engines": 5,
    "executor.pools": {"t1": {"replicas": 2}, "student": {"replicas": 2}},
}


@pytest.fixture(scope="module")
def ray_cluster():
    """A local 2-CPU Ray cluster for this module; the executors join it and leave it running."""
    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def make_root(root: Path, **extra) -> Path:
    """Prompts and persyn.yaml (the small config, `extra` as dotted keys) in `root`."""
    write_prompts(root / "prompts.jsonl", N_MATH, N_INSTR)
    write_config(root, **extra)
    return root


def write_config(root: Path, name: str = "persyn.yaml", **extra) -> Path:
    return tiny_config(root, calibration=C, selection="random", batch_size=BATCH, extra=extra, name=name)


def run_stages(root: Path, stages=STAGES) -> float:
    """The model stages of a run (export and report add nothing here); returns the wall time."""
    t0 = time.perf_counter()
    with Pipeline.from_config(root / "persyn.yaml", progress=False) as pipe:
        for stage in stages:
            getattr(pipe, stage)()
    return time.perf_counter() - t0


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    root = make_root(tmp_path_factory.mktemp("local"))
    seconds = run_stages(root)
    print(f"\nlocal executor: {seconds:.1f}s")
    return root / "run"


class ItemCounter:
    """Wraps RayExecutor.run: each job must yield each of its items exactly once. For the jobs named
    in `kill`, every replica of the job's pool is SIGKILLed as its first batch arrives (the others
    are in flight on them), and the replicas' processes are looked up again after the next one."""

    def __init__(self, monkeypatch, kill: tuple[str, ...] = ()):
        self.jobs: list[str] = []
        self.killed: dict[str, set[int]] = {}
        self.after: dict[str, set[int]] = {}
        run = RayExecutor.run
        counter = self

        def counted(ex, job):
            want = Counter(it.key for it in job.items)
            got: Counter = Counter()
            for n, batch in enumerate(run(ex, job)):
                got.update(r.item.key for r in batch.results)
                if job.name in kill and n == 0:
                    counter.killed[job.name] = {r["pid"] for r in ex.replicas(job.spec).values()}
                    for pid in counter.killed[job.name]:
                        os.kill(pid, signal.SIGKILL)
                elif job.name in kill and n == 1:
                    counter.after[job.name] = {r["pid"] for r in ex.replicas(job.spec).values()}
                yield batch
            dup = {k: n for k, n in got.items() if n > 1}
            assert not dup, f"{job.name}: items yielded more than once: {dup}"
            assert got == want, f"{job.name}: items missing: {set(want) - set(got)}"
            counter.jobs.append(job.name)

        monkeypatch.setattr(RayExecutor, "run", counted)


def assert_same_rows(run_dir: Path, local: Path, *, with_routes: bool = True) -> None:
    assert responses(run_dir) == responses(local)  # status, greedy text, token counts, attempts
    got, want = scores(run_dir), scores(local)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert (got[key] is None) == (value is None), key
        if value is not None:
            assert got[key] == pytest.approx(value, abs=1e-5), key
    if with_routes:
        assert routes(run_dir) == routes(local) and routes(local)


# ------------------------------------------------------------------------------------------------
# the pipeline on Ray


def test_ray_run_matches_the_local_run(ray_cluster, local_run, tmp_path, monkeypatch):
    counter = ItemCounter(monkeypatch)
    root = make_root(tmp_path, **RAY)
    seconds = run_stages(root)
    print(f"\nray executor: {seconds:.1f}s")
    assert_same_rows(root / "run", local_run)
    # calibration x 3 teachers, judge + student scores, and the routed generations all ran on Ray
    assert {"calibrate/t1", "calibrate/t2", "calibrate/t3"} <= set(counter.jobs)
    assert any(j.startswith("generate/") for j in counter.jobs)
    assert "learnability" in counter.jobs and any(j.startswith("quality") for j in counter.jobs)


def test_killed_replicas_lose_no_rows(ray_cluster, local_run, tmp_path, monkeypatch):
    """SIGKILL the running replicas of t1 during calibration and of the student during scoring, each
    time with batches in flight on them: the stages still end with every row once, as run locally."""
    counter = ItemCounter(monkeypatch, kill=("calibrate/t1", "learnability"))
    root = make_root(tmp_path, **RAY)
    run_stages(root, STAGES[:2])
    assert set(counter.killed) == set(counter.after) == {"calibrate/t1", "learnability"}
    for job, pids in counter.killed.items():  # the killed processes were replaced (restarted)
        after = counter.after[job]
        assert pids and len(after) >= len(pids) and not after & pids, (job, pids, after)
    run = root / "run"
    cal = subset(run, "calibration")
    rows = responses(run)
    assert len(cal) == C and len(rows) == C * 3
    assert {(t, p) for t, _, p in rows} == {(t, p) for t in ("t1", "t2", "t3") for p in cal}
    assert all(r[0] == "ok" for r in rows.values())
    # the same rows as the local run's calibration and scores (the local run went further)
    local_rows = {k: v for k, v in responses(local_run).items() if k[2] in cal}
    assert rows == local_rows
    local_scores = scores(local_run)
    for key, value in scores(run).items():
        assert (value is None) == (local_scores[key] is None)
        if value is not None:
            assert value == pytest.approx(local_scores[key], abs=1e-5)
    assert len(scores(run)) == len({k for k in local_scores if k[4] in cal})
    assert {"calibrate/t1", "learnability"} <= set(counter.jobs)


# ------------------------------------------------------------------------------------------------
# the executor alone


def test_a_replica_lost_for_good_hands_its_batches_to_the_other(ray_cluster, monkeypatch):
    """With no restarts left a killed replica is dead: its batches move to the other replica."""
    ItemCounter(monkeypatch)
    spec = EngineSpec(model="zoo:tiny-llama-s1", dtype="float32")
    items = [WorkItem(i, f"What is {i} plus {i}?") for i in range(16)]
    job = Job("lost", spec, "generate", items, GenerationParams(max_new_tokens=6), batch_size=2)
    config = ExecutorConfig(kind="ray", replicas=2, num_cpus_per_replica=0.5, max_restarts=0)
    with make_executor(config) as ex:
        assert isinstance(ex, RayExecutor)
        fingerprint = ex.fingerprint(spec)
        out = {}
        for batch in ex.run(job):
            if not out:
                victim = batch.meta["replica"]  # it holds another batch in flight right now
                os.kill(ex.replicas(spec)[victim]["pid"], signal.SIGKILL)
            out.update({r.item.key: r.value.text for r in batch.results if r.ok})
        assert ex.lost_replicas == 1 and ex.resubmitted >= 1
        assert ex.pools()[spec.model]["ready"] == 1
    from persyn.engines import load_engine

    engine = load_engine(spec)
    assert engine.fingerprint == fingerprint
    want = {r.item.key: r.value.text for r in run_batch(engine, job, items).results}
    engine.close()
    assert out == want


def test_a_replica_runs_as_many_torch_threads_as_cpus_it_reserves(ray_cluster):
    """Replicas sharing a node do not oversubscribe it, whatever OMP_NUM_THREADS the driver has."""
    spec = EngineSpec(model="zoo:tiny-llama-s1", dtype="float32")
    for cpus, threads in ((2, 2), (0.5, 1)):
        with RayExecutor(ExecutorConfig(kind="ray", num_cpus_per_replica=cpus)) as ex:
            about = ex.describe(spec)
        assert (about["threads"], about["dtype"], about["replicas"]) == (threads, "float32", 1)
        assert about["fingerprint"].startswith("transformers:zoo:tiny-llama-s1:")


def test_a_model_that_cannot_load_is_a_clear_error(ray_cluster):
    from persyn.engines.base import EngineError

    with RayExecutor(ExecutorConfig(kind="ray", num_cpus_per_replica=0.5)) as ex:
        with pytest.raises(EngineError, match="no replica is running.*failed to load"):
            ex.fingerprint(EngineSpec(model=str(Path("/nonexistent/model"))))


# ------------------------------------------------------------------------------------------------
# config


def test_pools_resolve_per_teacher_and_stay_out_of_the_manifest(tmp_path):
    root = make_root(tmp_path)
    extra = {"executor.pools": {"t2": {"replicas": 3, "num_gpus": 1}, "judge": {"num_cpus": 2}}}
    cfg = load_config(write_config(root, "ray.yaml", **{**RAY, **extra}))
    local = load_config(root / "persyn.yaml")
    assert cfg.hash() == local.hash()  # where the work runs is not part of the run's identity
    ex = cfg.executor
    assert ex.pool("t2").model_dump() == {"replicas": 3, "num_gpus": 1.0, "num_cpus": 0.25}
    assert ex.pool("judge").model_dump() == {"replicas": 1, "num_gpus": 0.0, "num_cpus": 2.0}
    assert ex.pool("t1") == ex.pool(None)
    roles = cfg.engine_roles()
    assert set(roles) == {"t1", "t2", "t3", "student", "judge"}
    assert roles["judge"] == cfg.quality.judge


@pytest.mark.parametrize(
    ("pools", "key", "message"),
    [
        ({"t9": {"replicas": 2}}, "executor.pools.t9", "unknown pool 't9'; pools are teacher names"),
        ({"reward": {"replicas": 2}}, "executor.pools.reward", "no reward model (quality.reward is not set)"),
    ],
)
def test_pool_names_must_exist(tmp_path, pools, key, message):
    cfg = write_config(make_root(tmp_path), "bad.yaml", **{**RAY, "executor.pools": pools})
    with pytest.raises(ConfigError) as exc:
        load_config(cfg)
    text = str(exc.value)
    assert key in text and message in text and "line " in text


def test_one_model_in_two_roles_is_one_pool(tmp_path):
    root = make_root(tmp_path)
    same = {"model": "zoo:tiny-llama-s1", "dtype": "float32", "family": "a"}  # t1's model as student
    pools = {"t1": {"replicas": 2}, "student": {"replicas": 3}}
    with pytest.raises(ConfigError, match=r"t1 and student are one model and so one pool"):
        load_config(write_config(root, "b.yaml", student=same, **{"executor.pools": pools}))
    cfg = load_config(
        write_config(root, "c.yaml", student=same, **{"executor.pools": {"student": pools["student"]}})
    )
    assert cfg.engine_roles()["t1"] == cfg.engine_roles()["student"]
