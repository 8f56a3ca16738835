"""The executor layer without models: failure isolation in `run_batch`, NaN scores, and the local
executor's engine LRU (one load per spec; the evicted engine is closed before the next loads)."""

from __future__ import annotations

import math

import pytest

from persyn.engines.base import ContextLengthError, EngineError, Generation, GenerationParams
from persyn.engines.spec import EngineSpec
from persyn.executors import Job, WorkItem, run_batch, todo_positions
from persyn.executors.local import LocalExecutor


class FakeEngine:
    """Echoes prompts; refuses prompts containing 'LONG' as over the context and raises on 'BOOM'."""

    kind = "causal"

    def __init__(self, spec: EngineSpec, log: list):
        self.spec = spec
        self.fingerprint = f"fake:{spec.model}"
        self.log = log
        self.calls = 0
        log.append(("load", spec.model))

    def _check(self, prompts):
        self.calls += 1
        long = [i for i, p in enumerate(prompts) if "LONG" in p]
        if long:
            raise ContextLengthError("too long", indices=long)
        if any("BOOM" in p for p in prompts):
            raise RuntimeError("boom")

    def generate(self, prompts, params):
        self._check(prompts)
        return [Generation(p.upper(), len(p), 3, "stop") for p in prompts]

    def score(self, prompts, responses):
        self._check(prompts)
        return [float(len(r)) if r else math.nan for r in responses]

    def loglik(self, prompts, responses):
        return self.score(prompts, responses)

    def close(self):
        self.log.append(("close", self.spec.model))


def items(*prompts, response=None):
    return [WorkItem(i, p, response) for i, p in enumerate(prompts)]


def test_run_batch_isolates_failing_items():
    eng = FakeEngine(EngineSpec(model="a"), [])
    job = Job("t", eng.spec, "generate", items("a", "LONG x", "b", "BOOM", "c"), GenerationParams())
    res = run_batch(eng, job, job.items)
    assert [r.item.prompt for r in res.results] == ["a", "LONG x", "b", "BOOM", "c"]  # order kept
    assert [r.ok for r in res.results] == [True, False, True, False, True]
    assert res.results[0].value.text == "A" and res.results[4].value.text == "C"
    assert res.results[1].error.startswith("ContextLengthError") and "boom" in res.results[3].error
    assert res.seconds >= 0


class ItemErrorEngine(FakeEngine):
    """Like the HTTP engine: with return_exceptions=True a failed item's error comes back in its
    place (over the context: ContextLengthError; otherwise EngineError) and nothing raises."""

    supports_return_exceptions = True

    def _verb(self, prompts, values, return_exceptions):
        self.calls += 1
        out = []
        for i, (p, v) in enumerate(zip(prompts, values, strict=True)):
            if "LONG" in p:
                out.append(ContextLengthError(f"item {i}: too long", indices=[i]))
            elif "BOOM" in p:
                out.append(EngineError(f"item {i}: boom"))
            else:
                out.append(v)
        if not return_exceptions and any(isinstance(v, Exception) for v in out):
            raise EngineError("some items failed")
        return out

    def generate(self, prompts, params, *, return_exceptions=False):
        values = [Generation(p.upper(), len(p), 3, "stop") for p in prompts]
        return self._verb(prompts, values, return_exceptions)

    def score(self, prompts, responses, *, return_exceptions=False):
        return self._verb(prompts, [float(len(r)) for r in responses], return_exceptions)

    def loglik(self, prompts, responses, *, return_exceptions=False):
        return self.score(prompts, responses, return_exceptions=return_exceptions)


@pytest.mark.parametrize("verb", ["generate", "judge", "loglik"])
def test_per_item_errors_cost_one_call(verb):
    """An engine that returns per-item errors is called once per batch: the good items are not
    sent again one by one. Over-context inputs are errors when generating, missing (NaN) scores."""
    eng = ItemErrorEngine(EngineSpec(model="a"), [])
    params = GenerationParams() if verb == "generate" else None
    job = Job("t", eng.spec, verb, items("a", "LONG x", "bb", "BOOM", response="resp"), params)
    res = run_batch(eng, job, job.items).results
    assert eng.calls == 1
    assert [r.item.prompt for r in res] == ["a", "LONG x", "bb", "BOOM"]
    assert not res[3].ok and "boom" in res[3].error
    if verb == "generate":
        assert [r.ok for r in res] == [True, False, True, False]
        assert res[1].error.startswith("ContextLengthError") and res[2].value.text == "BB"
    else:
        assert [r.ok for r in res] == [True, True, True, False]
        assert res[0].value == 4.0 and math.isnan(res[1].value)


def test_scores_nan_means_missing_not_error():
    eng = FakeEngine(EngineSpec(model="a"), [])
    job = Job("q", eng.spec, "judge", [WorkItem(0, "p", "resp"), WorkItem(1, "p", "")])
    res = run_batch(eng, job, job.items).results
    assert res[0].value == 4.0
    assert res[1].ok and math.isnan(res[1].value)


def test_job_checks_its_arguments():
    with pytest.raises(ValueError, match="GenerationParams"):
        Job("g", EngineSpec(model="a"), "generate", [])
    with pytest.raises(ValueError, match="unknown verb"):
        Job("g", EngineSpec(model="a"), "embed", [])  # type: ignore[arg-type]


def test_local_executor_lru_loads_once_and_closes_before_loading_the_next():
    log: list = []
    ex = LocalExecutor(max_loaded=2, loader=lambda spec: FakeEngine(spec, log))
    a, b, c = (EngineSpec(model=m) for m in "abc")
    assert ex.fingerprint(a) == "fake:a"
    list(ex.run(Job("a", a, "generate", items("x", "y", "z"), GenerationParams(), batch_size=2)))
    assert ex.engine(a).calls == 2  # two batches, one engine
    ex.fingerprint(b)
    ex.fingerprint(a)  # a is used again: b becomes the least recently used
    ex.fingerprint(c)
    assert log == [("load", "a"), ("load", "b"), ("close", "b"), ("load", "c")]
    ex.close()
    assert sorted(log[-2:]) == [("close", "a"), ("close", "c")]
    assert ex.loads == {"a": 1, "b": 1, "c": 1}


def test_batches_are_cut_from_the_whole_list_so_a_resume_runs_the_same_batches():
    """Job.positions: the batches of a job whose earlier items are partly done are the batches of
    the whole list minus the done items, so a resumed run groups its prompts as the first run did."""
    spec = EngineSpec(model="a")
    wanted = [f"p{i}" for i in range(10)]
    whole = Job("a", spec, "generate", items(*wanted), GenerationParams(), batch_size=4)
    first = [[it.prompt for it in b] for b in whole.batches()]
    assert first == [wanted[0:4], wanted[4:8], wanted[8:10]]
    # A crash after the first batch, and two prompts of the third done by an earlier stage.
    todo = set(wanted[4:8]) | {"p9"}
    pos = todo_positions(wanted, todo)
    resumed = Job("a", spec, "generate", items(*[wanted[i] for i in pos]), GenerationParams(), 4, pos)
    assert [[it.prompt for it in b] for b in resumed.batches()] == [wanted[4:8], ["p9"]]
    # Without a size of its own, the job takes the executor's (the engine's rows per pass).
    unsized = Job("a", spec, "generate", items(*[wanted[i] for i in pos]), GenerationParams(), positions=pos)
    assert [len(b) for b in unsized.batches(3)] == [2, 2, 1]  # windows [3,6), [6,9), [9,12)
    with pytest.raises(ValueError, match="increase"):
        Job("a", spec, "generate", items("x", "y"), GenerationParams(), positions=[1, 0])


def test_local_executor_batches_at_the_engines_own_size():
    log: list = []
    engine = FakeEngine(EngineSpec(model="a"), log)
    engine.batch_size = 4  # a local model's rows per forward pass (persyn.util.hardware.batch_rows)
    ex = LocalExecutor(max_loaded=1, loader=lambda spec: engine)
    job = Job(
        "a", EngineSpec(model="a"), "generate", items(*[f"p{i}" for i in range(10)]), GenerationParams()
    )
    assert ex.batch_rows(job.spec) == 4
    assert [len(b) for b in ex.run(job)] == [4, 4, 2]


def test_batches_cover_every_item_once():
    log: list = []
    ex = LocalExecutor(max_loaded=1, loader=lambda spec: FakeEngine(spec, log))
    spec = EngineSpec(model="a")
    job = Job("a", spec, "generate", items(*[f"p{i}" for i in range(10)]), GenerationParams(), batch_size=3)
    batches = list(ex.run(job))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert [r.item.key for b in batches for r in b.results] == list(range(10))
