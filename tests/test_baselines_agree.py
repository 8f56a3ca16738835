"""One function builds every baseline (`persyn.router.baselines.build_baselines`): the report's
measurement (stage train-router), the strategies' datasets (stage strategies, `persyn compare`) and
`persyn router eval` all call it, and on one fixture they fit the same baselines and pick the same
teachers (the Mix pair and Family-Strong above all, which used to be chosen three ways)."""

from __future__ import annotations

import numpy as np
import pytest

import persyn.router.baselines as baselines_mod
from persyn.cli.router import baseline_matrices
from persyn.config import Config
from persyn.router.baselines import FixedRouter, build_baselines
from persyn.router.matrix import ScoreMatrix
from persyn.scoring.labels import combine_labels, quality_labels
from persyn.stages.strategies import BASELINE_OF, fit_strategy_baselines
from persyn.stages.train_router import measure

TEACHERS = ["a", "b", "c"]
N = 16


def _config(**baselines) -> Config:
    return Config.model_validate(
        {
            "seed": 3,
            "prompts": {"path": "prompts.jsonl", "answer_field": "answer"},
            "quality": {"method": "answers"},
            "student": {"model": "zoo:tiny-llama-s4", "family": "x"},
            "teachers": [
                {"name": "a", "model": "zoo:tiny-llama-s1", "family": "y"},
                {"name": "b", "model": "zoo:tiny-llama-s2", "family": "x"},
                {"name": "c", "model": "zoo:tiny-llama-s3", "family": "x"},
            ],
            "baselines": baselines,
        }
    )


@pytest.fixture
def calibration():
    """Quality ranks a > c > b, but the student learns b far better than c, so CAR's best teacher
    other than the strongest (b) is not the second by quality (c): the old CLI rule and the stages'
    rule disagreed here."""
    rng = np.random.default_rng(0)
    q = np.column_stack([rng.normal(0.8, 0.05, N), rng.normal(0.4, 0.05, N), rng.normal(0.5, 0.05, N)])
    lm = np.column_stack([rng.normal(-2.0, 0.1, N), rng.normal(-0.2, 0.05, N), rng.normal(-3.0, 0.1, N)])
    q[2, 1] = np.nan  # a missing score is allowed
    labels = combine_labels(q, lm, alpha=0.4)
    emb = rng.normal(size=(N, 8)).astype(np.float32)
    texts = [f"prompt {i}" for i in range(N)]
    return q, lm, labels, emb, texts


@pytest.fixture
def calls(monkeypatch):
    """Every call of `build_baselines`, whoever makes it."""
    seen: list[dict] = []
    real = baselines_mod.build_baselines

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append({"args": args, "kwargs": kwargs, "out": out})
        return out

    monkeypatch.setattr(baselines_mod, "build_baselines", spy)
    return seen


def _picks(fitted) -> dict:
    """What a baseline set decides: the fixed teachers, the Mix pair, and the routes of 40 prompts."""
    prompts = [f"new {i}" for i in range(40)]
    out = {name: r.choice for name, r in fitted.routers.items() if isinstance(r, FixedRouter)}
    out["mix_pair"] = fitted.mix_pair
    for name in ("random", "mix"):
        if name in fitted.routers:
            out[f"{name}_routes"] = fitted.routers[name].route(prompts)
    return out


def test_the_three_paths_share_one_builder_and_agree(calibration, calls):
    q, lm, labels, emb, texts = calibration
    cfg = _config(mix_share=0.3)
    settings = cfg.baseline_settings()
    expected = build_baselines(TEACHERS, q, lm, labels, emb, **settings)
    calls.clear()  # the direct call above is the reference, not one of the paths

    # 1. The report's measurement: baselines fitted on the calibration prompts outside `test`, and
    #    scored with a stand-in router on the `test` ones.
    test = np.zeros(N, dtype=bool)
    test[:4] = True
    router = FixedRouter(TEACHERS, np.array([0.0, 1.0, 0.0]), "router")
    metrics, notes = measure(router, TEACHERS, texts, q, lm, labels, emb, test, settings, False)
    measured = calls[-1]["out"]
    assert set(metrics) == {"router", *measured.routers, "oracle"}
    # 2. The strategies' datasets (what `persyn strategies` / `persyn compare` train on).
    strategies = fit_strategy_baselines(cfg, TEACHERS, q, lm)
    # 3. `persyn router eval` (quality only: a score file has no learnability).
    calib = ScoreMatrix(texts, TEACHERS, q.copy())
    cli_matrices, cli_notes = baseline_matrices(
        TEACHERS, calib, emb, texts[:4], emb[:4], "zscore", seed=3, mix_share=0.3, mix_weak=None, knn_k=10
    )
    cli = calls[-1]["out"]
    assert len(calls) == 3  # each path went through the one function

    # The same inputs give the same baselines. The measurement fits on its training rows, the
    # strategies on every calibration prompt; on this fixture both pick the reference's teachers.
    ref = _picks(expected)
    assert ref["strongest"] == "a" and ref["mix_pair"] == ("a", "b") and ref["family-strong"] == "c"
    fit = ~test
    assert _picks(measured) == _picks(
        build_baselines(TEACHERS, q[fit], lm[fit], labels[fit], emb[fit], **settings)
    )
    assert _picks(measured) == ref
    assert _picks(strategies) == ref
    # Every strategy that is a baseline finds its router there.
    assert {BASELINE_OF[s] for s in BASELINE_OF} <= set(strategies.routers)
    # The CLI, without learnability, fits what the one rule gives for quality alone: no CAR, and
    # Mix's weak teacher is then the second by quality.
    quality_only = build_baselines(TEACHERS, q, None, quality_labels(q), emb, seed=3, mix_share=0.3, knn_k=10)
    assert _picks(cli) == _picks(quality_only) and cli.mix_pair == ("a", "c")
    assert "car" not in cli_matrices and set(cli_matrices) == set(quality_only.routers)
    assert any("car skipped" in n for n in cli_notes)
    assert not notes  # every baseline fitted in the measurement


def test_mix_weak_from_the_config_reaches_every_path(calibration):
    q, lm, labels, emb, texts = calibration
    cfg = _config(mix_weak="c")
    assert fit_strategy_baselines(cfg, TEACHERS, q, lm).mix_pair == ("a", "c")
    assert build_baselines(TEACHERS, q, lm, labels, emb, **cfg.baseline_settings()).mix_pair == ("a", "c")
    same = build_baselines(TEACHERS, q, lm, **_config(mix_weak="a").baseline_settings())
    assert "mix" not in same.routers and "weak one is the strong one" in same.skipped("mix")
