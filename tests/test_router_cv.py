"""Router metrics you can read: k-fold folds, bootstrap intervals over prompts, and the report's
table and chart with them (values far below 0 cut, labelled)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from persyn.router.metrics import bootstrap_intervals, compare, evaluate_scores
from persyn.router.model import cv_folds


def test_folds_are_balanced_deterministic_and_order_free():
    prompts = [f"prompt {i}" for i in range(23)]
    f = cv_folds(prompts, 5, seed=3)
    assert sorted(np.bincount(f).tolist()) == [4, 4, 5, 5, 5]  # sizes differ by at most one
    assert (cv_folds(prompts, 5, seed=3) == f).all()
    perm = np.random.default_rng(0).permutation(23)
    again = cv_folds([prompts[i] for i in perm], 5, seed=3)
    assert (again == f[perm]).all()  # a prompt's fold depends on its text, not its row
    assert not (cv_folds(prompts, 5, seed=4) == f).all()
    assert set(cv_folds(prompts[:3], 5, seed=0).tolist()) == {0, 1, 2}  # k capped at n
    with pytest.raises(ValueError, match="at least 2 folds"):
        cv_folds(prompts, 1, seed=0)


def test_intervals_hold_the_point_estimate_and_shrink_with_more_prompts():
    rng = np.random.default_rng(0)

    def case(n):
        labels = rng.normal(size=(n, 3))
        scores = labels + rng.normal(scale=1.0, size=(n, 3))  # a decent but noisy router
        return scores, labels

    s, r = case(60)
    point = evaluate_scores(s, r, ["a", "b", "c"])
    ci = bootstrap_intervals(s, r, seed=0)
    for m in ("hit@1", "hit@3", "regret", "mean_label", "oracle_gain_recovered"):
        lo, hi = ci[m]
        assert lo <= point[m] <= hi, m
    assert ci["hit@3"] == [1.0, 1.0]  # three teachers: the top three always hold the best one
    s2, r2 = case(2000)
    ci2 = bootstrap_intervals(s2, r2, seed=0)
    width = lambda c: c[1] - c[0]  # noqa: E731
    assert width(ci2["hit@1"]) < 0.5 * width(ci["hit@1"])
    assert bootstrap_intervals(s, r, seed=0) == ci  # seeded


def test_compare_adds_the_same_resamples_interval_to_every_router():
    rng = np.random.default_rng(1)
    labels = rng.normal(size=(40, 2))
    out = compare({"x": labels, "y": -labels}, labels, ["a", "b"], intervals=True)
    assert out["x"]["ci95"]["hit@1"] == [1.0, 1.0] and out["x"]["ci95"]["regret"] == [0.0, 0.0]
    assert out["y"]["ci95"]["hit@1"] == [0.0, 0.0]
    assert "ci95" not in compare({"x": labels}, labels, ["a", "b"])["x"]


def test_report_shows_intervals_and_cuts_bars_far_below_zero(tmp_path, monkeypatch):
    from PIL import Image
    from test_report import make_data

    from persyn.report import write_report
    from persyn.report.router_charts import QUALITY_FLOOR

    metrics = {
        "router": {"hit@1": 0.5, "oracle_gain_recovered": 0.2, "n": 30, "ci95": {"hit@1": [0.3, 0.7]}},
        "random": {"hit@1": 0.3, "oracle_gain_recovered": -5.7, "n": 30},
        "mix": {"hit@1": 0.35, "oracle_gain_recovered": -6.7, "n": 30},
    }
    index = write_report(make_data(router_metrics=metrics), tmp_path)
    html = index.read_text(encoding="utf-8")
    assert re.search(r'<td class="num">0\.500 \[0\.300, 0\.700\]</td>', html)
    assert "95% bootstrap interval" in html
    # The chart's axis stops near the floor: the -5.7 and -6.7 bars are cut, not drawn to scale.
    import persyn.report.router_charts as charts

    seen = {}
    real = charts.save

    def spy(fig, path):
        if path.name == "router_quality.png":
            ax = fig.axes[0]
            seen["ylim"] = ax.get_ylim()
            seen["texts"] = [t.get_text() for t in ax.texts]
        real(fig, path)

    monkeypatch.setattr(charts, "save", spy)
    write_report(make_data(router_metrics=metrics), tmp_path / "again")
    assert QUALITY_FLOOR - 0.5 <= seen["ylim"][0] < QUALITY_FLOOR
    assert "-5.7" in seen["texts"] and "-6.7" in seen["texts"]
    assert any("cut at" in t for t in seen["texts"])
    with Image.open(tmp_path / "router_quality.png") as img:
        assert img.format == "PNG"
