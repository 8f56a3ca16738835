"""Baselines (random, strongest, CAR, Mix, kNN, oracle) and the metrics, on small exact cases."""

from __future__ import annotations

import numpy as np
import pytest

from persyn.router.baselines import (
    CARRouter,
    KNNRouter,
    MixRouter,
    OracleError,
    OracleRouter,
    RandomRouter,
    StrongestRouter,
    car_scores,
)
from persyn.router.metrics import compare, evaluate_scores, json_safe

T = ["big", "mid", "small"]
nan = np.nan


def test_random_is_seeded_and_independent_of_batching():
    prompts = [f"p{i}" for i in range(300)]
    r = RandomRouter(T, seed=1)
    full = r.route(prompts)
    assert full == RandomRouter(T, seed=1).route(prompts)
    assert r.route(prompts[150:]) == full[150:]  # same prompt, same teacher, whatever the batch
    assert full != RandomRouter(T, seed=2).route(prompts)
    counts = np.bincount([T.index(t) for t in full], minlength=3)
    assert counts.min() > 60  # roughly uniform
    s = r.scores(prompts)
    assert s.shape == (300, 3) and (s >= 0).all() and (s < 1).all()


def test_strongest_uses_mean_calibration_quality_ignoring_missing():
    q = np.array([[0.9, 0.5, 0.1], [0.1, 0.6, 0.2], [nan, 0.5, 0.3]])
    r = StrongestRouter(T, q)
    assert r.choice == "mid"  # big's mean 0.5 over its two prompts, mid 0.533
    assert r.route(["x", "y"]) == ["mid", "mid"]
    with pytest.raises(ValueError, match="no calibration scores at all"):
        StrongestRouter(T, np.array([[1.0, nan, 0.0]]))


def test_car_formula_and_raw_judge_scores():
    # Raw judge log-odds: negative for everyone. CAR min-maxes quality over the calibration set
    # first, so the formula keeps its meaning: r in [0, 1], L = -mean loglik >= 0.
    q = np.array([[-1.0, -3.0, -5.0], [-1.0, -3.0, -5.0]])
    ll = np.array([[-2.0, -0.5, -0.1], [-2.0, -0.5, -0.1]])
    scores = car_scores(q, ll, beta=3.0)
    r = np.array([1.0, 0.5, 0.0])
    np.testing.assert_allclose(scores, r / (1 + 3.0 * np.array([2.0, 0.5, 0.1])))
    assert CARRouter(T, q, ll, beta=3.0).choice == "mid"  # 0.5/2.5 beats 1/7
    assert CARRouter(T, q, ll, beta=0.0).choice == "big"  # beta 0: pure reward
    with pytest.raises(ValueError, match="beta"):
        CARRouter(T, q, ll, beta=-1)


def test_mix_share_and_teachers():
    prompts = [f"prompt {i}" for i in range(2000)]
    m = MixRouter(T, strong="big", weak="small", share=0.2, seed=0)
    routes = m.route(prompts)
    assert set(routes) == {"big", "small"}
    assert abs(routes.count("big") / 2000 - 0.2) < 0.03
    assert MixRouter(T, "big", "small", share=0.0).route(prompts[:50]) == ["small"] * 50
    assert routes == MixRouter(T, strong="big", weak="small", share=0.2, seed=0).route(prompts)
    with pytest.raises(ValueError, match="not one of"):
        MixRouter(T, strong="huge", weak="small")


def test_knn_averages_labels_of_nearest_calibration_prompts():
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], dtype=np.float32)
    labels = np.array([[1.0, 0.0, -1.0], [1.0, nan, -1.0], [-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]])
    knn = KNNRouter(T, emb, labels, k=2)
    q = np.array([[1.0, 0.05], [0.05, 1.0]], dtype=np.float32)
    s = knn.scores(["a", "b"], embeddings=q)
    np.testing.assert_allclose(s, [[1.0, 0.0, -1.0], [-1.0, 0.0, 1.0]])  # nan neighbour skipped
    assert knn.route(["a", "b"], embeddings=q) == ["big", "small"]
    with pytest.raises(ValueError, match="embeddings"):
        knn.scores(["a"])  # no embeddings and no encoder


def test_oracle_knows_only_complete_prompts():
    labels = np.array([[0.1, 0.9, 0.0], [0.5, nan, 0.2]])
    o = OracleRouter(T, ["p0", "p1"], labels)
    assert o.route(["p0"]) == ["mid"]
    with pytest.raises(OracleError, match=r"lacks \['mid'\]"):
        o.scores(["p1"])
    with pytest.raises(OracleError, match="no labels"):
        o.scores(["unknown prompt"])


def test_metrics_by_hand_with_oracle_ties():
    labels = np.array(
        [
            [1.0, 1.0, 0.0],  # oracle set {big, mid}
            [0.0, 0.5, 1.0],  # oracle small
            [0.2, 0.2, 0.2],  # all tie: left out of Hit@k, regret 0 whatever
            [0.0, 1.0, nan],  # incomplete: skipped
        ]
    )
    scores = np.array(
        [
            [0.0, 1.0, 0.5],  # picks mid: hit (tie)
            [0.9, 0.8, 0.1],  # picks big: miss; top-3 holds small
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
        ]
    )
    quality = np.array([[0.9, 0.9, 0.1], [0.0, 0.4, 0.8], [0.5, 0.5, 0.5], [0.0, 1.0, 0.0]])
    m = evaluate_scores(scores, labels, T, quality=quality)
    assert (m["n"], m["n_skipped"], m["n_ranked"]) == (3, 1, 2)
    assert m["hit@1"] == 0.5 and m["hit@3"] == 1.0
    np.testing.assert_allclose(m["regret"], (0.0 + 1.0 + 0.0) / 3)
    np.testing.assert_allclose(m["mean_score"], (0.9 + 0.0 + 0.5) / 3)
    assert m["allocation"] == {"big": 2, "mid": 1, "small": 0}
    # Column means over the 3 complete prompts: big 0.4, mid 0.567, small 0.4 -> best single = mid.
    # Oracle mean = (1 + 1 + 0.2) / 3; router mean = (1 + 0 + 0.2) / 3.
    assert m["best_single"] == "mid"
    best, oracle, router = 1.7 / 3, 2.2 / 3, 1.2 / 3
    np.testing.assert_allclose(m["oracle_gain_recovered"], (router - best) / (oracle - best))


def test_gain_is_none_when_the_oracle_has_no_gain():
    labels = np.array([[1.0, 0.0], [1.0, 0.0]])  # the same teacher is always best
    m = evaluate_scores(np.array([[1.0, 0.0], [0.0, 1.0]]), labels, ["a", "b"])
    assert m["oracle_gain_recovered"] is None
    assert m["hit@1"] == 0.5
    out = json_safe(compare({"x": np.zeros((2, 2))}, labels, ["a", "b"]))
    assert out["x"]["oracle_gain_recovered"] is None
    assert json_safe({"v": float("nan"), "w": np.float32(1.5)}) == {"v": None, "w": 1.5}


def test_metric_shapes_are_checked():
    with pytest.raises(ValueError, match="n x 3"):
        evaluate_scores(np.zeros((2, 2)), np.zeros((2, 2)), T)
