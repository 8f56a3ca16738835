"""Student evaluation (persyn.student.evaluate, stats): bootstrap intervals, the paired difference,
the two-order win rate, the overlap refusal, and `evaluate` end to end (a scripted engine for exact
values, the tiny Llama for the real engine path)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persyn.engines.base import Generation
from persyn.student.evaluate import (
    EvalItem,
    MemoryCache,
    OverlapError,
    evaluate,
    find_overlap,
    load_eval_set,
    refuse_overlap,
    two_order_score,
    win_scores,
    wrong_references,
)
from persyn.student.settings import EvalSet, EvalSettings
from persyn.student.stats import bootstrap_mean, paired_difference

# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_interval_holds_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.binomial(1, 0.4, size=50).astype(float)
    large = rng.binomial(1, 0.4, size=800).astype(float)
    a, b = bootstrap_mean(small), bootstrap_mean(large)
    for iv, x in ((a, small), (b, large)):
        assert iv.mean == pytest.approx(x.mean()) and iv.low <= iv.mean <= iv.high
    assert (b.high - b.low) < 0.5 * (a.high - a.low)  # ~1/sqrt(16) = 0.25 of the width
    assert bootstrap_mean(small, seed=3) == bootstrap_mean(small, seed=3)  # seeded


def test_bootstrap_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = sum(
        (iv := bootstrap_mean(rng.binomial(1, 0.3, 100), resamples=500, seed=k)).low <= 0.3 <= iv.high
        for k in range(300)
    )
    assert 0.89 <= hits / 300 <= 0.99


def test_bootstrap_edge_cases():
    assert bootstrap_mean([]).n == 0 and math.isnan(bootstrap_mean([]).mean)
    one = bootstrap_mean([0.7])
    assert (one.mean, one.low, one.high, one.n) == (0.7, 0.7, 0.7, 1)
    with_nan = bootstrap_mean([1.0, math.nan, 0.0])
    assert with_nan.n == 2 and with_nan.mean == 0.5
    assert bootstrap_mean([1, 1, 1]).to_dict()["low"] == 1.0
    assert bootstrap_mean([]).to_dict()["mean"] is None


def test_paired_difference_finds_a_small_consistent_gain_that_separate_intervals_miss():
    rng = np.random.default_rng(2)
    difficulty = rng.normal(0, 1, 60)  # items differ far more than the models do
    base = difficulty + rng.normal(0, 0.05, 60)
    better = difficulty + 0.1 + rng.normal(0, 0.05, 60)
    a, b = bootstrap_mean(better), bootstrap_mean(base)
    assert a.low < b.high  # the separate intervals overlap
    d = paired_difference(better, base)
    assert d.excludes_zero and d.low > 0 and d.mean == pytest.approx(0.1, abs=0.03)
    assert not paired_difference(base, base).excludes_zero
    with pytest.raises(ValueError, match="same items"):
        paired_difference([1.0], [1.0, 2.0])


# ----------------------------------------------------------------------------- win rate


class ScriptedJudge:
    """An engine whose pairwise judgement is scripted: `prefer(a, b)` returns log P(A) - log P(B)
    for answers a (shown first) and b; `score` rewards the word "good"; counts loglik calls."""

    fingerprint = "scripted-judge"

    def __init__(self, prefer):
        self.prefer = prefer
        self.loglik_calls = 0

    def loglik(self, prompts, responses):
        self.loglik_calls += 1
        out = []
        for text, label in zip(prompts, responses, strict=True):
            a = text.split("Answer A:\n", 1)[1].split("\n\nAnswer B:\n", 1)[0]
            b = text.split("\n\nAnswer B:\n", 1)[1].split("\n\nWhich answer", 1)[0]
            d = self.prefer(a, b)
            out.append(d / 2 if label == "A" else -d / 2)
        return out

    def score(self, prompts, responses):
        return [1.0 if "good" in r else -1.0 for r in responses]


def _quality(text: str) -> int:
    return text.count("good")


def test_two_order_score_cancels_position_bias():
    assert two_order_score(+2.0, -2.0) == 1.0  # prefers the candidate in both orders
    assert two_order_score(-1.0, +1.0) == 0.0  # prefers the baseline in both orders
    assert two_order_score(+3.0, +3.0) == 0.5  # always the first position: bias only
    assert two_order_score(0.0, 0.0) == 0.5
    assert math.isnan(two_order_score(math.nan, 1.0))


def test_win_scores_with_a_position_biased_and_a_fair_judge():
    prompts = ["p1", "p2", "p3", "p4"]
    cand = ["good good", "good", "meh", "same answer"]
    base = ["meh", "good good", "meh good", "same  answer "]  # last: inner spaces differ: judged, even
    biased = ScriptedJudge(lambda a, b: 5.0)  # always "A", whatever the answers
    assert win_scores(biased, prompts, cand, base) == [0.5] * 4
    fair = ScriptedJudge(lambda a, b: float(_quality(a) - _quality(b)))
    assert win_scores(fair, prompts, cand, base) == [1.0, 0.0, 0.0, 0.5]
    # bias weaker than quality: the better answer still wins in both orders
    mixed = ScriptedJudge(lambda a, b: 3.0 * (_quality(a) - _quality(b)) + 1.0)
    assert win_scores(mixed, prompts, cand, base) == [1.0, 0.0, 0.0, 0.5]


def test_identical_answers_tie_without_asking_the_judge():
    judge = ScriptedJudge(lambda a, b: 1 / 0)
    assert win_scores(judge, ["p", "q"], ["same", " x\r\n"], ["same ", "x"]) == [0.5, 0.5]
    assert judge.loglik_calls == 0


# ----------------------------------------------------------------------------- overlap


def test_eval_refuses_prompts_that_are_training_prompts():
    train = ["What is 2 + 2?", "Write a haiku about rain.\r\n"]
    items = [EvalItem("a", "  Write a haiku about rain.\n"), EvalItem("b", "What is 3 + 3?")]
    assert find_overlap([i.prompt for i in items], train) == ["  Write a haiku about rain.\n"]
    with pytest.raises(OverlapError, match=r"1 of 2 prompts also appear in the training prompts"):
        refuse_overlap(items, train)
    refuse_overlap(items[1:], train)  # disjoint: fine
    engine = ScriptedStudent({})
    with pytest.raises(OverlapError):
        evaluate(engine, items, EvalSettings(), train_prompts=train)
    assert engine.generated == 0  # refused before any model work


# ----------------------------------------------------------------------------- evaluate


class ScriptedStudent:
    """An engine that answers from a table and scores a reference by its length."""

    fingerprint = "scripted-student"

    def __init__(self, answers):
        self.answers = answers
        self.generated = 0

    def generate(self, prompts, params):
        self.generated += len(prompts)
        assert params.greedy
        return [Generation(self.answers[p], 5, 3, "stop") for p in prompts]

    def loglik(self, prompts, responses):
        return [-float(len(r)) for r in responses]

    def score(self, prompts, responses):
        raise AssertionError("the student is not the judge")


def test_evaluate_scores_each_kind_of_item_with_its_metrics():
    items = [
        EvalItem("m1", "What is 6 x 7?", "42"),
        EvalItem("m2", "What is 10 / 4?", "2.5"),
        EvalItem("m3", "What is 1 + 1?", "2", reference="1 + 1 = 2. The answer is 2."),
        EvalItem("i1", "Describe rain."),
        EvalItem("i2", "Describe snow."),
    ]
    student = ScriptedStudent(
        {
            "What is 6 x 7?": "6 x 7 = 42. The answer is 42.",
            "What is 10 / 4?": "The answer is 3.",
            "What is 1 + 1?": "2",
            "Describe rain.": "good water",
            "Describe snow.": "cold",
        }
    )
    judge = ScriptedJudge(lambda a, b: float(_quality(a) - _quality(b)))
    base = ["meh", "meh", "meh", "wet", "good flakes"]
    result = evaluate(student, items, EvalSettings(), judge=judge, baseline=base)
    assert result.scores["accuracy"][:3] == [1.0, 0.0, 1.0] and all(
        math.isnan(x) for x in result.scores["accuracy"][3:]
    )
    assert result.metrics["accuracy"].n == 3 and result.metrics["accuracy"].mean == pytest.approx(2 / 3)
    # default reference "The answer is {answer}.", or the item's own
    assert result.scores["reference_loglik"][:3] == [-17.0, -18.0, -27.0]
    # a length-only scorer: 2.5's wrong numbers 3.5, 1.5 and 5 are one shorter on average
    assert result.scores["reference_margin"][:3] == pytest.approx([0.0, -2 / 3, 0.0])
    assert result.scores["judge_score"][3:] == [1.0, -1.0]
    assert result.scores["win_rate"][3:] == [1.0, 0.0] and result.metrics["win_rate"].mean == 0.5
    assert result.cost["generated_tokens"] == 15
    rows = result.rows()
    assert rows[3]["accuracy"] is None and rows[3]["win_rate"] == 1.0 and rows[0]["response"].endswith("42.")
    # A cache that holds the answers and scores (the run store's eval rows): nothing is redone
    cache = MemoryCache()
    first = evaluate(student, items, EvalSettings(), judge=judge, baseline=base, cache=cache)
    calls = (student.generated, judge.loglik_calls)
    again = evaluate(student, items, EvalSettings(), judge=judge, baseline=base, cache=cache)
    assert (student.generated, judge.loglik_calls) == calls
    assert again.scores == first.scores and again.answers == first.answers


def test_answer_limit_answers_the_first_items_and_scores_references_on_all():
    items = [EvalItem(f"m{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(1, 5)] + [
        EvalItem("o", "Hi.")
    ]
    student = ScriptedStudent({it.prompt: f"The answer is {2 * k}." for k, it in enumerate(items[:4], 1)})
    r = evaluate(student, items, EvalSettings(), answer_limit=2)
    assert student.generated == 2 and r.answers[2:] == [None, None, None]
    assert r.metrics["accuracy"].n == 2 and r.metrics["accuracy"].mean == 1.0
    assert r.metrics["reference_loglik"].n == 4 and r.metrics["reference_margin"].n == 4
    assert r.rows()[3]["response"] is None


def test_reference_margin_rewards_the_right_number_not_the_phrasing():
    class KnowsSix(ScriptedStudent):
        def loglik(self, prompts, responses):  # likes its own phrasing, and the number 6
            return [
                (0.0 if r.startswith("The answer") else -5.0) + (1.0 if "6" in r else 0.0) for r in responses
            ]

    items = [EvalItem("a", "What is 2 x 3?", "6"), EvalItem("b", "What is 2 + 2?", "4")]
    engine = KnowsSix({"What is 2 x 3?": "6", "What is 2 + 2?": "6"})
    r = evaluate(engine, items, EvalSettings())
    assert r.scores["reference_loglik"] == [1.0, 0.0]
    assert r.scores["reference_margin"] == [1.0, 0.0]  # the phrasing alone earns nothing
    other = [EvalItem("c", "q", "6", reference="Worked: 2 x 3 = 6.")]
    assert evaluate(KnowsSix({"q": "6"}), other, EvalSettings()).scores["reference_margin"] == [1.0]


def test_wrong_references_replace_the_final_answer_only():
    assert wrong_references("The answer is 42.", "42") == [
        "The answer is 43.",
        "The answer is 41.",
        "The answer is 84.",
    ]
    # "2" inside "12" or "2.5" is not the answer; the last whole "2" is
    assert (
        wrong_references("12 - 10 = 2.5, so 2 left; total 12.", "2")[0]
        == "12 - 10 = 2.5, so 3 left; total 12."
    )
    assert wrong_references("The answer is 0.5.", "0.5") == [
        "The answer is 1.5.",
        "The answer is 2.5.",
        "The answer is 1.",
    ]
    assert wrong_references("The answer is 0.", "0") == [
        "The answer is 1.",
        "The answer is 2.",
        "The answer is 3.",
    ]
    assert wrong_references("The answer is blue.", "blue") == []
    assert wrong_references("No number here.", "7") == []


def test_evaluate_through_the_transformers_engine(tiny_engine):
    # The real verbs: greedy generation, loglik of a reference, the judge's Yes/No score and the
    # pairwise "A"/"B" loglik, all on the tiny Llama (random: only the plumbing is checked).
    items = [EvalItem("m", "What is 2 + 3?", "5"), EvalItem("i", "Say hello.")]
    settings = EvalSettings(max_new_tokens=8, batch_size=2)
    base = evaluate(tiny_engine, items, settings, judge=tiny_engine)
    assert set(base.metrics) == {"accuracy", "reference_loglik", "reference_margin", "judge_score"}
    other = evaluate(tiny_engine, items, settings, judge=tiny_engine, baseline=["x", "a different answer"])
    assert other.metrics["win_rate"].n == 1 and other.scores["win_rate"][1] in (0.0, 0.5, 1.0)
    assert other.answers == base.answers  # greedy
    assert base.scores["reference_loglik"][0] < 0


def test_load_eval_set_reads_answers_and_references(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text(
        '{"id": "a", "prompt": "What is 1+1?", "answer": "2", "solution": "1 + 1 = 2."}\n'
        '{"id": "b", "prompt": "Say hi.", "answer": null}\n'
    )
    spec = EvalSet(name="mix", path=path, answer_field="answer", id_field="id", reference_field="solution")
    items = load_eval_set(spec)
    assert items == [EvalItem("a", "What is 1+1?", "2", "1 + 1 = 2."), EvalItem("b", "Say hi.", None, None)]
