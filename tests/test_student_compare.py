"""Comparing strategies (persyn.student.compare): equal-count subsamples, the sameness check of the
trainings, and the Table-2-shaped table with paired differences."""

from __future__ import annotations

import math

import pytest

from persyn.student.compare import (
    ComparisonError,
    assert_comparable,
    comparison_table,
    equal_subsamples,
)
from persyn.student.evaluate import EvalItem, EvalResult
from persyn.student.settings import TrainSettings
from persyn.student.stats import bootstrap_mean
from persyn.student.train import SFTExample


def _dataset(teacher: str, n: int = 20, start: int = 0) -> list[SFTExample]:
    return [SFTExample(f"Problem {i}: what is {i} + 1?", f"{teacher} says {i + 1}.") for i in range(start, n)]


def test_equal_subsamples_take_the_same_count_and_the_same_prompts():
    data = {"persyn": _dataset("qwen"), "strong": _dataset("gemma"), "random": _dataset("mixed", 20, 4)}
    data["strong"][3] = SFTExample(data["strong"][3].prompt, "  ")  # an empty answer is not usable
    subs = equal_subsamples(data)
    assert {k: len(v) for k, v in subs.items()} == {"persyn": 16, "strong": 16, "random": 16}
    assert all(e.completion.strip() for v in subs.values() for e in v)
    assert subs == equal_subsamples(data)  # deterministic
    small = equal_subsamples(data, 5, seed=1)
    prompts = [{e.prompt for e in v} for v in small.values()]
    assert len(prompts[0]) == 5 and prompts[0] == prompts[1]  # the same prompts where both have them
    assert [e for e in small["persyn"]] == [e for e in data["persyn"] if e.prompt in prompts[0]]  # order kept
    assert equal_subsamples(data, 5, seed=2)["persyn"] != small["persyn"]  # the seed matters
    with pytest.raises(ComparisonError, match="strong has 19"):
        equal_subsamples(data, 20)


def test_assert_comparable_names_what_differs():
    s = TrainSettings().model_dump(mode="json")
    info = {"settings": s, "base_model": "zoo:smollm2-135m-instruct", "examples": 300}
    assert_comparable({"persyn": info, "strong": dict(info)})
    with pytest.raises(ComparisonError, match=r"strong\.examples = 299 but persyn\.examples = 300"):
        assert_comparable({"persyn": info, "strong": {**info, "examples": 299}})
    other = TrainSettings(seed=1).model_dump(mode="json")
    with pytest.raises(ComparisonError, match=r"car\.settings"):
        assert_comparable({"persyn": info, "car": {**info, "settings": other}})


def _result(name: str, correct: list[float], wins: list[float] | None = None, n_open: int = 10) -> EvalResult:
    """Math items with accuracy, then open items with a win rate (none for the untrained student)."""
    items = [EvalItem(f"m{i}", f"q{i}", "1") for i in range(len(correct))]
    items += [EvalItem(f"i{i}", f"open {i}") for i in range(n_open)]
    scores = {"accuracy": correct + [math.nan] * n_open}
    if wins is not None:
        scores["win_rate"] = [math.nan] * len(correct) + wins
    metrics = {k: bootstrap_mean(v) for k, v in scores.items()}
    return EvalResult(name, items, ["x"] * len(items), scores, metrics)


def test_comparison_table_rows_columns_and_paired_differences():
    n = 40
    base = [float(i % 4 == 0) for i in range(n)]  # 25%
    better = [1.0 if i % 4 == 0 or i % 4 == 1 else 0.0 for i in range(n)]  # 50%, a superset of base's
    results = {
        "untrained": {"math": _result("u", base, None)},
        "persyn": {"math": _result("p", better, [1.0] * 10)},
        "strong": {"math": _result("s", base, [0.5] * 10)},
    }
    info = {"settings": TrainSettings().model_dump(mode="json"), "base_model": "b", "examples": 300}
    costs = {"persyn": {"generations": 480}, "strong": {"generations": 300}}
    table = comparison_table(results, costs=costs, trainings={"persyn": info, "strong": info})
    assert [r.name for r in table.rows] == ["untrained", "persyn", "strong"]
    assert table.columns == ["math/accuracy", "math/win_rate"]
    assert table.references == ["untrained", "strong"]
    p = table.row("persyn")
    assert p.metrics["math/accuracy"].mean == 0.5 and p.cost == {"generations": 480}
    d = p.vs["untrained"]["math/accuracy"]
    assert d.mean == pytest.approx(0.25) and d.excludes_zero
    assert "math/win_rate" not in p.vs["untrained"]  # the untrained student has no win rate of its own
    assert p.vs["strong"]["math/win_rate"].mean == pytest.approx(0.5)
    assert not table.row("strong").vs["untrained"]["math/accuracy"].excludes_zero
    text = table.render()
    assert "persyn" in text and "accuracy +0.250*" in text and "480" in text
    assert table.to_dict()["rows"][1]["vs"]["untrained"]["math/accuracy"]["n"] == n

    with pytest.raises(ComparisonError, match="not trained alike"):
        comparison_table(results, trainings={"persyn": info, "strong": {**info, "examples": 299}})
    results["strong"] = {"math": _result("s", base[:-1], [0.5] * 10)}
    with pytest.raises(ComparisonError, match="other items"):
        comparison_table(results)
