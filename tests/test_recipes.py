"""The recipes of docs/architecture.md, followed once each: adding a stage, a baseline, a strategy
(tests/test_strategies.py, on a real run) and an engine. If a recipe stops working as written,
one of these fails."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import toy_stage
from test_architecture import stages_imported

import persyn.router.baselines as baselines_mod
from persyn.config import Config
from persyn.engines.base import Generation, GenerationParams, check_pairs
from persyn.engines.spec import EngineSpec
from persyn.executors import Job, WorkItem, run_batch
from persyn.router.baselines import Calibration, FixedRouter, build_baselines
from persyn.stages import STAGES
from persyn.stages.context import RunContext, StageError
from persyn.store import RunStore
from persyn.util.progress import Progress

TEACHERS = ["a", "b", "c"]


def _config(tmp_path: Path) -> Config:
    return Config.model_validate(
        {
            "prompts": {"path": "prompts.jsonl", "answer_field": "answer"},
            "quality": {"method": "answers"},
            "student": {"model": "zoo:tiny-llama-s4"},
            "teachers": [{"name": t, "model": f"zoo:tiny-llama-s{i + 1}"} for i, t in enumerate(TEACHERS)],
            "output": {"dir": str(tmp_path / "run")},
        }
    )


# ----------------------------------------------------------------------------- adding a stage


def test_adding_a_stage(tmp_path):
    # 1. tests/toy_stage.py has run(ctx, **options) and result(ctx), and (3.) imports no stage.
    assert not stages_imported(Path(toy_stage.__file__)) - {"context"}
    # 2. Registered in STAGES (here a copy, as the pipeline hands STAGES to the run context).
    cfg = _config(tmp_path)
    store = RunStore.open(cfg.output.dir, cfg.manifest_dict())
    ctx = RunContext(cfg, store, None, Progress(None), stages={**STAGES, "toy": toy_stage})
    try:
        with pytest.raises(StageError, match="run `persyn toy CONFIG` first"):
            ctx.result("toy")
        assert ctx.run_stage("toy", factor=3) == toy_stage.ToyResult(TEACHERS, 3)
        assert ctx.result("toy").factor == 3  # read back, not recomputed
        ctx.run_stage("toy", factor=3)
        kinds = [e.kind for e in store.events() if e.stage == "toy"]
        assert kinds == ["done", "resume"]  # 4. it resumes and logs like the others
    finally:
        store.close()
    with pytest.raises(StageError, match="unknown stage 'toy'"):
        RunContext(cfg, RunStore.open(cfg.output.dir), None, Progress(None), stages=STAGES).run_stage("toy")


# ----------------------------------------------------------------------------- adding a baseline


def _last_teacher(c: Calibration) -> FixedRouter:
    """A toy baseline: the last teacher writes everything (it needs quality, as most do)."""
    c.need("quality")
    return FixedRouter(c.teachers, np.arange(len(c.teachers), dtype=float), "last-teacher")


def test_adding_a_baseline(monkeypatch, tmp_path):
    from persyn.cli.router import baseline_matrices
    from persyn.router.matrix import ScoreMatrix
    from persyn.scoring.labels import combine_labels
    from persyn.stages.strategies import fit_strategy_baselines
    from persyn.stages.train_router import measure

    # 1. A Router (here FixedRouter) and 2. one entry in BASELINES.
    monkeypatch.setitem(baselines_mod.BASELINES, "last-teacher", _last_teacher)
    rng = np.random.default_rng(1)
    q, lm = rng.normal(size=(12, 3)), rng.normal(-1, 0.2, size=(12, 3))
    labels, emb, texts = combine_labels(q, lm), rng.normal(size=(12, 4)), [f"p{i}" for i in range(12)]
    # It reaches the report's measurement, the strategies and `persyn router eval` alike.
    test = np.arange(12) < 4
    router = FixedRouter(TEACHERS, np.ones(3), "router")
    metrics, _ = measure(router, TEACHERS, texts, q, lm, labels, emb, test, {}, False)
    assert metrics["last-teacher"]["allocation"] == {"a": 0, "b": 0, "c": 4}
    assert fit_strategy_baselines(_config(tmp_path), TEACHERS, q, lm).routers["last-teacher"].choice == "c"
    cli_matrices, _ = baseline_matrices(
        TEACHERS, ScoreMatrix(texts, TEACHERS, q), emb, texts[:4], emb[:4], "zscore", mix_share=0.2
    )
    assert cli_matrices["last-teacher"].argmax(axis=1).tolist() == [2, 2, 2, 2]
    # Without what it needs it is left out with a note, never silently.
    assert "baseline last-teacher skipped: no quality scores" in build_baselines(TEACHERS, None).notes


# ----------------------------------------------------------------------------- adding an engine


class EchoEngine:
    """A toy engine following "Adding an engine": the verbs, a fingerprint, the shared checks."""

    def __init__(self, spec: EngineSpec):
        self.spec = spec
        self.fingerprint = f"echo:{spec.model}"

    def generate(self, prompts, params: GenerationParams) -> list[Generation]:
        out = []
        for p in prompts:
            words = p.split()[: params.max_new_tokens]
            cut = len(p.split()) > params.max_new_tokens
            out.append(Generation(" ".join(words), len(p.split()), len(words), "length" if cut else "stop"))
        return out

    def loglik(self, prompts, responses) -> list[float]:
        check_pairs(prompts, responses)
        return [-abs(len(p) - len(r)) / max(len(p), 1) for p, r in zip(prompts, responses, strict=True)]

    def score(self, prompts, responses) -> list[float]:
        check_pairs(prompts, responses)
        return [float(r in p) for p, r in zip(prompts, responses, strict=True)]

    def close(self) -> None:
        pass


def test_adding_an_engine():
    from persyn.engines.base import Engine

    engine = EchoEngine(EngineSpec(model="echo"))
    assert isinstance(engine, Engine)  # the protocol everything above the engines relies on
    items = [WorkItem(i, p) for i, p in enumerate(["one two three", "four"])]
    spec = EngineSpec(model="echo")
    gen = run_batch(engine, Job("t/echo", spec, "generate", items, GenerationParams(max_new_tokens=2)), items)
    assert [r.value.text for r in gen.results] == ["one two", "four"]
    assert [r.value.finish_reason for r in gen.results] == ["length", "stop"]
    scored = [WorkItem(0, "one two", "one"), WorkItem(1, "x", "")]
    ll = run_batch(engine, Job("t/echo", spec, "loglik", scored), scored)
    assert ll.results[0].value == pytest.approx(-4 / 7) and math.isnan(ll.results[1].value)  # empty: missing
