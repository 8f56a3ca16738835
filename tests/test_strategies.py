"""Baseline datasets from one run: each strategy's assignment, generating only what the store lacks,
exported one folder per strategy, with generation counts, and listed in the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pipeline_fixtures import TEACHERS, C, N, T, base_run, cli, copy_run, responses, scores, state, subset

pytest.importorskip("persyn.engines.transformers_engine")


@pytest.fixture(scope="module")
def run_copy(tmp_path_factory):
    return copy_run(base_run(tmp_path_factory), tmp_path_factory.mktemp("strategies") / "r")


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def _strongest(run) -> str:
    """The teacher with the best mean raw quality on calibration, recomputed from the store."""
    gks = {v["teacher"]: k for k, v in state(run, "gen_keys").items()}
    cal = set(subset(run, "calibration"))
    means = {}
    for t in TEACHERS:
        vals = [
            v
            for (kind, _, tt, g, p), v in scores(run).items()
            if kind == "quality" and tt == t and g == gks[t] and p in cal and v is not None
        ]
        means[t] = np.mean(vals)
    return max(TEACHERS, key=lambda t: (means[t], -TEACHERS.index(t)))


def test_strategies_build_each_dataset_generating_only_what_is_missing(run_copy):
    run = run_copy / "run"
    before = responses(run)
    res = cli(
        [
            "strategies",
            str(run_copy / "persyn.yaml"),
            "--strategies",
            "persyn,strong,family-strong,random,mix,car,oracle",
            "--json",
        ]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    after = responses(run)
    assert set(before) <= set(after) and all(after[k] == before[k] for k in before)  # nothing redone
    assert sum(v["new_generations"] for v in out.values()) == len(after) - len(before)

    strong = _strongest(run)
    rows = _rows(run / "strategies" / "strong" / "persyn-strong.messages.jsonl")
    assert len(rows) == N and {r["teacher"] for r in rows} == {strong}
    assert out["strong"]["rows"] == N and out["strong"]["generations"] == C * T + (N - C)
    # family-strong: the student's family is "a" (t1, t3)
    fam = {
        r["teacher"]
        for r in _rows(run / "strategies" / "family-strong" / "persyn-family-strong.messages.jsonl")
    }
    assert len(fam) == 1 and fam <= {"t1", "t3"}
    assert out["random"]["generations"] == N
    assert set(out["random"]["teacher_counts"]) <= set(TEACHERS)
    mix = out["mix"]["teacher_counts"]
    assert sum(mix.values()) == N and len([t for t, n in mix.items() if n]) <= 2
    # Without --oracle the oracle covers the calibration prompts only, with the best label.
    assert out["oracle"]["scope"] == "calibration" and out["oracle"]["rows"] <= C
    assert out["oracle"]["new_generations"] == 0
    assert (
        out["oracle"]["mean_label"]
        >= max(v["mean_label"] for k, v in out.items() if v["mean_label"] is not None) - 1e-9
    )
    # persyn is the run's own dataset; nothing new to generate for it.
    assert out["persyn"]["new_generations"] == 0 and out["persyn"]["path"].endswith("dataset")

    summary = json.loads((run / "strategies.json").read_text())
    assert set(summary) == set(out)
    html = (run / "report" / "index.html").read_text()
    for name in ("strong", "random", "car", "mix"):
        assert name in html

    # Again: everything is held now, so nothing is generated.
    res = cli(["strategies", str(run_copy / "persyn.yaml"), "--strategies", "strong,random", "--json"])
    assert res.exit_code == 0, res.output
    assert all(v["new_generations"] == 0 for v in json.loads(res.stdout).values())


def test_full_oracle_costs_generate_then_select(run_copy):
    run = run_copy / "run"
    res = cli(["strategies", str(run_copy / "persyn.yaml"), "--strategies", "oracle", "--oracle", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)["oracle"]
    gks = {v["teacher"]: k for k, v in state(run, "gen_keys").items()}
    held = {(t, p) for (t, g, p) in responses(run) if gks.get(t) == g}
    assert len(held) == N * T  # every teacher answered every prompt
    assert out["scope"] == "all" and out["generations"] == N * T and out["rows"] == N
    learn = [k for k in scores(run) if k[0] == "learnability"]
    assert len(learn) == N * T  # and every response was scored


def test_adding_a_strategy_follows_the_recipe(run_copy, monkeypatch):
    """docs/architecture.md, "Adding a strategy", followed once: a baseline in BASELINES, its name
    in STRATEGIES and in BASELINE_OF; then `persyn strategies` builds its dataset like the others."""
    import persyn.router.baselines as baselines_mod
    import persyn.stages.strategies as strategies_mod
    from persyn.router.baselines import FixedRouter

    def last_teacher(c):
        c.need("quality")
        return FixedRouter(c.teachers, np.arange(len(c.teachers), dtype=float), "last-teacher")

    monkeypatch.setitem(baselines_mod.BASELINES, "last-teacher", last_teacher)
    monkeypatch.setattr(strategies_mod, "STRATEGIES", (*strategies_mod.STRATEGIES, "last"))
    monkeypatch.setitem(strategies_mod.BASELINE_OF, "last", "last-teacher")
    res = cli(["strategies", str(run_copy / "persyn.yaml"), "--strategies", "last", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)["last"]
    rows = _rows(run_copy / "run" / "strategies" / "last" / "persyn-last.messages.jsonl")
    assert out["rows"] == N and {r["teacher"] for r in rows} == {TEACHERS[-1]}
    assert {r["strategy"] for r in rows} == {"last"}
