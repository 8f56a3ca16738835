"""The shipped judge set and its measurements: the set's integrity, the statistics, the lookup the
report uses, and the default judge itself on part of the set (zoo)."""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources

import numpy as np
import pytest
from judge_set import DOMAINS, bootstrap_interval, load_triples, pair_outcomes

from persyn.engines.base import DEFAULT_JUDGE_TEMPLATE
from persyn.engines.spec import EngineSpec
from persyn.scoring.reliability import ACCURACY_FILE, judge_id, load_measurements, measured_accuracy

DEMO_JUDGE = "zoo:qwen2.5-coder-0.5b-instruct"  # the judge `persyn demo` uses


def test_the_set_is_big_balanced_and_well_formed():
    triples = load_triples()
    assert len(triples) >= 100
    counts = Counter(t.domain for t in triples)
    assert set(counts) == set(DOMAINS) and min(counts.values()) >= 25
    assert len({t.id for t in triples}) == len(triples)
    assert len({(t.prompt, t.good) for t in triples}) == len(triples)
    for t in triples:
        assert t.prompt.strip() and t.good.strip() and t.bad.strip() and t.why.strip(), t.id
        assert t.good != t.bad, t.id
        assert t.id.startswith(t.domain), t.id
    # Plausible bad answers: about as long as the good ones, so a judge cannot win on length alone.
    ratio = np.array([len(t.bad) / len(t.good) for t in triples])
    assert 0.7 < float(np.median(ratio)) < 1.4


def test_pair_outcomes_and_interval():
    got = pair_outcomes(np.array([2.0, 0.0, 1.0, np.nan]), np.array([1.0, 1.0, 1.0, 0.0]))
    assert got.tolist() == [1.0, 0.0, 0.5, 0.5]  # win, loss, tie, missing counts as a tie
    v = np.array([1.0] * 80 + [0.0] * 40)
    lo, hi = bootstrap_interval(v)
    assert lo < v.mean() < hi and 0.05 < hi - lo < 0.25
    assert bootstrap_interval(v) == (lo, hi)  # seeded
    lo4, hi4 = bootstrap_interval(np.tile(v, 4))
    assert hi4 - lo4 < (hi - lo) * 0.7  # four times the data, about half the width


def test_judge_id_names_model_and_judging_prompt():
    a = judge_id(EngineSpec(model=DEMO_JUDGE))
    assert a == judge_id(EngineSpec(model=DEMO_JUDGE, judge_template=DEFAULT_JUDGE_TEMPLATE))
    assert a != judge_id(EngineSpec(model=DEMO_JUDGE, judge_template="{prompt} {response} ok?"))
    assert a != judge_id(EngineSpec(model=DEMO_JUDGE, system_prompt="Be strict."))
    assert a != judge_id(EngineSpec(model="zoo:smollm2-135m-instruct"))
    assert a.startswith(DEMO_JUDGE + "#")


def test_shipped_measurements_describe_this_set():
    doc = json.loads(resources.files("persyn").joinpath("data", ACCURACY_FILE).read_text())
    n = len(load_triples())
    assert doc["judges"] == load_measurements()
    for key, m in doc["judges"].items():
        assert key.split("#")[0] == m["model"]
        assert m["n"] == n, key  # measured on the whole current set, not an older one
        lo, hi = m["ci95"]
        assert 0 <= lo <= m["accuracy"] <= hi <= 1, key
        assert set(m["per_domain"]) == set(DOMAINS)
        assert abs(np.mean(list(m["per_domain"].values())) - m["accuracy"]) < 1e-3  # balanced domains
        assert m["cpu"] and m["date"]
    # The demo's judge, as a config names it (default judging prompt), is measured.
    demo = measured_accuracy(EngineSpec(model=DEMO_JUDGE))
    assert demo is not None and demo["template"] == "default"
    assert measured_accuracy(EngineSpec(model="some/unmeasured-judge")) is None


@pytest.mark.zoo
@pytest.mark.slow
def test_the_demo_judge_prefers_the_good_answer_more_often_than_chance(qwen_engine):
    """The demo's judge with the default judging prompt, on the whole set. Measured (docs/router.md,
    Intel Xeon): 0.625 in bf16 (what dtype auto picks there) and 0.592 in float32 (what it picks on
    a CPU without native bf16); 4 pairs flip between the two. The bar, 0.55 (66 of 120), is chance
    plus a margin that still leaves 5 more pairs to numerical differences; a judge that ignores the
    answer, or a prompt that no longer reaches the model, scores about 0.5."""
    triples = load_triples()
    prompts = [t.prompt for t in triples]
    good = np.asarray(qwen_engine.score(prompts, [t.good for t in triples]))
    bad = np.asarray(qwen_engine.score(prompts, [t.bad for t in triples]))
    accuracy = float(pair_outcomes(good, bad).mean())
    assert accuracy >= 0.55, accuracy
