"""The evidence machinery: intervals and paired tests (student/stats.py), seeds pooled item by item,
constraint metrics in eval, the evidence project, and on the tiny random Llama the paired test
declaring a known-better dataset better and two identical datasets not different."""

from __future__ import annotations

import json
import math

import pytest

from persyn.demo.evidence import SIZES, evidence_fewshot_template, write_evidence
from persyn.engines.base import Generation
from persyn.student.compare import pool_seeds
from persyn.student.evaluate import EvalItem, EvalResult, evaluate, load_eval_set
from persyn.student.settings import EvalSet, EvalSettings
from persyn.student.stats import holm, metric_interval, paired_test, proportion_interval

pytest.importorskip("lm_eval")

END = {"id": "startend:end_checker", "kwargs": {"end_phrase": "Done."}}


# ----------------------------------------------------------------------------- stats


def test_wilson_interval_is_never_zero_width_and_matches_the_known_value():
    iv = proportion_interval([0.0] * 30)
    assert iv.mean == 0 and iv.low == 0 and 0.11 < iv.high < 0.12  # Wilson 0/30: [0, 0.1135]
    iv = proportion_interval([1.0] * 15 + [0.0] * 15)
    assert iv.low == pytest.approx(0.3325, abs=1e-3) and iv.high == pytest.approx(0.6675, abs=1e-3)
    assert metric_interval([1.0, 0.0, 1.0]).to_dict() == proportion_interval([1.0, 0.0, 1.0]).to_dict()
    assert metric_interval([0.5, 0.25, 1.0]).low < 0.58 < metric_interval([0.5, 0.25, 1.0]).high


def test_paired_tests_exact_mcnemar_for_binary_and_bootstrap_otherwise():
    a = [1.0] * 12 + [0.0] * 8
    b = [0.0] * 12 + [0.0] * 8  # a better on 12 items, never worse
    t = paired_test(a, b)
    assert t.test == "exact McNemar" and (t.a_better, t.b_better) == (12, 0)
    assert t.p_value == pytest.approx(2 * 0.5**12)
    assert t.difference.mean == pytest.approx(0.6) and t.difference.low > 0
    same = paired_test(a, a)
    assert same.p_value == 1.0 and same.difference.mean == 0
    cont = paired_test([0.9, 0.8, 0.95, 0.7] * 10, [0.2, 0.3, 0.1, 0.25] * 10)
    assert cont.test == "paired bootstrap" and cont.p_value < 0.01
    noisy = paired_test([0.5, 0.6, 0.4, 0.5], [0.6, 0.5, 0.5, 0.4])
    assert noisy.p_value > 0.5
    with_nan = paired_test([1.0, math.nan, 0.0], [0.0, 1.0, 0.0])  # the NaN item is left out
    assert with_nan.difference.n == 2


def test_holm_adjusts_in_order_and_caps_at_one():
    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5})
    assert adj == {"a": 0.04, "c": 0.09, "b": 0.09, "d": 0.5}


def test_pooled_seeds_average_items_and_keep_each_seed_mean():
    items = [EvalItem(str(i), f"q{i}") for i in range(4)]

    def result(values):
        return EvalResult("m", items, [None] * 4, {"acc": values}, {"acc": metric_interval(values)})

    pooled, per_seed = pool_seeds([result([1.0, 0.0, 1.0, 0.0]), result([1.0, 1.0, 0.0, 0.0])])
    assert pooled.scores["acc"] == [1.0, 0.5, 0.5, 0.0]
    assert per_seed == {"acc": [0.5, 0.5]}
    assert pooled.metrics["acc"].mean == 0.5


# ----------------------------------------------------------------------------- constraints in eval


class _Fixed:
    """An engine that answers every prompt with a fixed text (for eval's bookkeeping)."""

    fingerprint = "fixed"

    def __init__(self, text: str):
        self.text = text

    def generate(self, prompts, params):
        return [Generation(self.text, 3, 3, "stop") for _ in prompts]

    def loglik(self, prompts, texts):
        return [0.0 for _ in prompts]


def test_eval_scores_constraints_strict_and_loose_per_item(tmp_path):
    path = tmp_path / "c.jsonl"
    lower = {"id": "change_case:english_lowercase", "kwargs": {}}
    rows = [
        {"id": "a", "prompt": "Say hi. End with Done.", "constraints": [END]},
        {"id": "b", "prompt": "Say hi in lowercase, end with Done.", "constraints": [lower, END]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_eval_set(EvalSet(name="c", path=path, id_field="id"))
    assert items[1].constraints == (lower, END) and items[0].key != EvalItem("a", items[0].prompt).key
    res = evaluate(_Fixed("Hello there. Done."), items, EvalSettings())
    assert res.scores["constraints_strict"] == [1.0, 0.5]  # "Hello" breaks lowercase
    assert res.scores["all_constraints_strict"] == [1.0, 0.0]
    assert res.metrics["all_constraints_strict"].n == 2 and "judge_score" not in res.scores


# ----------------------------------------------------------------------------- the evidence project


def test_evidence_project_is_disjoint_and_its_shots_meet_their_constraints(tmp_path):
    from persyn.config import load_config
    from persyn.prompts import normalise_text
    from persyn.scoring.constraints import check_response

    cfg_path = write_evidence(tmp_path, "quick")
    cfg = load_config(cfg_path)
    size = SIZES["quick"]
    train = [json.loads(x) for x in (tmp_path / "prompts-evidence-quick.jsonl").read_text().splitlines()]
    assert len(train) == 2 * size.train and cfg.eval.names("validation") == ["constraints-val", "math-val"]
    seen = {normalise_text(r["prompt"]) for r in train}
    bases = {r.get("base_id") for r in train}
    for name in ("constraints-test", "math-test", "constraints-val", "math-val"):
        rows = [json.loads(x) for x in (tmp_path / f"eval-{name}.jsonl").read_text().splitlines()]
        assert rows and not seen & {normalise_text(r["prompt"]) for r in rows}
        if name.startswith("constraints"):
            assert not bases & {r["base_id"] for r in rows}
    assert [t.name for t in cfg.teachers] == ["qwen", "gemma-fewshot", "smollm"]
    assert cfg.family_teachers() == ["smollm"]
    # The few-shot teacher is shown answers that meet their own constraints.
    template = evidence_fewshot_template()
    assert template.count("Question:") == 5 and template.endswith("Question: {prompt}\nAnswer:")
    from persyn.scoring.constraints import draw_constraint

    lower, _ = draw_constraint("change_case:english_lowercase", 99)
    shot = template.split("Answer: ")[1].split("\n\n")[0]
    assert check_response(shot, [lower]).all_strict


# ----------------------------------------------------------------------------- tiny Llama


@pytest.mark.slow
def test_paired_test_finds_a_known_better_dataset_and_no_difference_between_identical_ones(tmp_path):
    """Students of the tiny random Llama trained on data that ends every answer with "Done." (the
    constraint of the eval items) and on data that never does: the paired test calls the first
    better; two trainings on the same data give the same answers and no difference."""
    pytest.importorskip("trl")
    from persyn.engines.spec import EngineSpec
    from persyn.engines.transformers_engine import TransformersEngine
    from persyn.student.settings import TrainSettings
    from persyn.student.train import SFTExample, train_student
    from persyn.zoo import resolve_model

    tiny = "zoo:tiny-llama-s0"
    topics = ["apples", "rivers", "chess", "bread", "trains", "music", "stars", "rain"]
    good = [SFTExample(f"Tell me about {t} ({i}).", "Done.") for i in range(4) for t in topics]
    bad = [SFTExample(f"Tell me about {t} ({i}).", "Okay then, sure.") for i in range(4) for t in topics]
    settings = TrainSettings(epochs=6, batch_size=8, learning_rate=1e-2, lora=None, dtype="float32")
    models = {
        name: train_student(rows, resolve_model(tiny), tmp_path / name, settings, base_name=tiny).model_dir
        for name, rows in (("good", good), ("bad", bad), ("bad-again", bad))
    }
    items = [
        EvalItem(f"e{i}", f"Write a line about {t} number {i}. End with Done.", constraints=(END,))
        for i, t in enumerate(["cats", "snow", "boats", "tea", "maps", "fog", "glass", "wool"] * 3)
    ]
    settings_eval = EvalSettings(max_new_tokens=8, batch_size=24)
    scores = {}
    for name, path in models.items():
        engine = TransformersEngine(EngineSpec(model=str(path), dtype="float32"))
        try:
            scores[name] = evaluate(engine, items, settings_eval).scores["all_constraints_strict"]
        finally:
            engine.close()
    better = paired_test(scores["good"], scores["bad"])
    assert better.test == "exact McNemar"
    assert better.difference.mean > 0.5 and better.difference.low > 0 and better.p_value < 0.001
    same = paired_test(scores["bad"], scores["bad-again"])
    assert same.p_value == 1.0 and same.difference.mean == 0.0 and same.difference.high == 0.0


def test_demo_task_names_the_choices_and_an_evidence_folder_is_not_a_demo_folder(tmp_path):
    from pipeline_fixtures import cli

    res = cli(["demo", "--task", "nope", "--dir", str(tmp_path / "x")])
    assert res.exit_code == 2 and "choose demo, evidence or evidence-quick" in res.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    res = cli(["demo", "--task", "evidence-quick", "--dir", str(tmp_path / "other"), "--force"])
    assert res.exit_code == 2 and "not an evidence directory" in res.output
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
