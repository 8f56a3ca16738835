"""Rows a user would train on (issue 19, items 1-3): cut responses generated again once and left
out if still cut, the row filters (each: a row it must drop, one it must keep, and off), and the
quality floor that gates learnability in the router's labels."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from pipeline_fixtures import GenerateSpy, cli, db, state, tiny_config, write_prompts

from persyn.dataset.filters import (
    FILTERS,
    FilterSettings,
    check_response,
    dup_ngram_char_fraction,
    words,
)
from persyn.scoring.labels import combine_labels, gate_scores, make_pairs

ALL = FilterSettings()

CODE = """```python
def count_words(text):
    counts = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return counts
```"""
PROSE = (
    "Photosynthesis is how plants turn light, water and carbon dioxide into sugar and oxygen. It "
    "happens in the chloroplasts, where chlorophyll absorbs the light. The light reactions make ATP "
    "and NADPH, and the Calvin cycle uses them to fix carbon into sugar for growth."
)
SPIDER = "How many legs does a spider have?"
APARTMENT = "How can I make my small apartment feel more spacious?"
WORDS = "Write a Python function that counts how many times each word appears in a string."
SUMMARY = "Summarise in one line: the cat sat on the mat all day and did not move at all, not even for food."

# filter -> (prompt, response it must drop, response it must keep, finish reasons, has_reference)
CASES = {
    "cut": ("Explain photosynthesis.", PROSE, PROSE, ("length", "stop"), False),
    "empty": ("Name a colour.", " \n\t ", "Blue.", ("stop", "stop"), False),
    "repetition": ("Explain photosynthesis.", "/bin/sh -c " * 30, PROSE, ("stop", "stop"), False),
    "echo": (SUMMARY, SUMMARY.split(": ", 1)[1], "A cat stayed on its mat all day.", ("stop", "stop"), False),
    "shape": (WORDS, "The answer is 1.", CODE, ("stop", "stop"), False),
}


@pytest.mark.parametrize("name", FILTERS)
def test_each_filter_drops_its_row_and_keeps_a_good_one(name):
    prompt, bad, good, (bad_finish, good_finish), ref = CASES[name]
    assert check_response(prompt, bad, bad_finish, ALL, has_reference=ref).dropped_by == [name]
    assert check_response(prompt, good, good_finish, ALL, has_reference=ref).kept
    # Switched off, it keeps what it would drop.
    off = replace(ALL, active=tuple(f for f in FILTERS if f != name))
    assert check_response(prompt, bad, bad_finish, off, has_reference=ref).kept


def test_repetition_sees_a_digit_run_and_leaves_code_and_working_alone():
    ten_to_40 = check_response("What is 10 to the 40th?", "1" + "0" * 40, "stop", ALL)
    assert ten_to_40.dropped_by == ["repetition"]
    assert check_response("What is 10 to the 4th?", "10000", "stop", ALL, has_reference=True).kept
    assert check_response(WORDS, CODE, "stop", ALL).kept
    steps = "Step 1: 12 * 3 = 36. Step 2: 36 + 4 = 40. Step 3: 40 / 2 = 20. Step 4: 20 - 5 = 15. So: 15."
    assert check_response("A shop has 12 boxes of 3...", steps, "stop", ALL, has_reference=True).kept


LEMONS = (
    "To determine the total number of lemons in all the baskets, we need to follow these steps:\n\n"
    "1. Identify the number of baskets.\n2. Identify the number of lemons in each basket.\n"
    "3. Multiply the number of baskets by the number of lemons in each basket to get the total number "
    "of lemons.\n\nLet's go through these steps in detail:\n\n1. The number of baskets is 34.\n"
    "2. The number of lemons in each basket is 10.\n3. To find the total number of lemons, we multiply "
    "the number of baskets by the number of lemons in each basket:\n   \\[\n   34 \\times 10 = 340\n"
    "   \\]\n\nTherefore, the total number of lemons is \\(\\boxed{340}\\)."
)
# A small student's real answer: one explanation said three times, then stop.
MICROWAVE = " ".join(
    [
        "The microwave oven heats food by using a device that converts electrical energy into heat. "
        "This device is called a microwave oven."
    ]
    * 3
)


def test_repetition_drops_a_loop_but_keeps_a_worked_answer_that_restates_its_question():
    # Gopher's web-page thresholds (dup 5-grams > 0.15) dropped answers like this one, real rows of
    # an evidence run: it restates "the number of lemons in each basket" twice, as worked answers do.
    lemons = check_response(
        "There are 34 baskets with 10 lemons in each basket. How many lemons?", LEMONS, "stop", ALL
    )
    assert lemons.kept and lemons.measures["max_repeats_10gram"] == 2
    said_thrice = check_response("How does a microwave oven heat food?", MICROWAVE, "stop", ALL)
    assert said_thrice.dropped_by == ["repetition"] and said_thrice.measures["max_repeats_10gram"] >= 3


PRINTER = (
    "Extract the steps from these instructions and number them.\n\nInstructions: First unplug the "
    "printer. Then open the front cover and remove the jammed paper gently. Close the cover, plug the "
    "printer back in, and print a test page."
)
REVIEW = (
    "From this customer review, extract (a) the product, (b) what the customer liked and (c) what "
    "they disliked.\n\nReview: I bought the Zephyr desk fan last month. It is really quiet and the "
    "three speeds are useful, but the stand wobbles and the cable is far too short."
)


def test_echo_is_a_verbatim_copy_not_an_extraction_in_the_prompts_words():
    # Real rows of a demo run: Qwen's numbered steps are the answer, in the prompt's own words.
    steps = (
        "1. First, unplug the printer.\n2. Then, open the front cover and remove the jammed paper "
        "gently.\n3. Close the cover, plug the printer back in, and print a test page."
    )
    assert check_response(PRINTER, steps, "stop", ALL).kept
    # Gemma's: the question's tail and the review copied back, then the question again.
    copied = REVIEW.split("extract ", 1)[1] + "\nAnswer: (a) The product, (b) what the customer liked and (c)"
    assert check_response(REVIEW, copied, "stop", ALL).dropped_by == ["echo"]


def test_gopher_duplicate_ngram_character_fraction():
    # Rae et al. 2021: characters of words inside a repeated n-gram, each word once, over all.
    assert dup_ngram_char_fraction(words("a bb ccc dddd eeeee a bb ccc dddd eeeee"), 5) == 1.0
    assert dup_ngram_char_fraction(words("one two three four five six"), 5) == 0.0
    ws = words("x y z w v x y z w v tail")  # the repeated 5-gram covers 10 of 11 words
    assert math.isclose(dup_ngram_char_fraction(ws, 5), 10 / 14)


def test_shape_bare_numbers_only_where_a_number_is_not_asked_for():
    assert check_response(APARTMENT, "The answer is 4.", "stop", ALL).dropped_by == ["shape"]
    assert check_response(SPIDER, "8", "stop", ALL).kept  # the prompt asks for a number
    assert check_response("Tom has 3 apples...", "The answer is 4.", "stop", ALL, has_reference=True).kept
    assert check_response(APARTMENT, "Use mirrors and light colours.", "stop", ALL).kept


def test_the_gate_keeps_junk_and_low_quality_from_winning_on_learnability():
    # Every teacher wrong (answers 0): the paper's labels prefer the most learnable wrong answer.
    q = np.array([[0.0, 0.0, 0.0], [0.5, 0.9, 0.2], [1.0, 0.0, np.nan]])
    lm = np.array([[-5.0, -0.1, -3.0], [-2.0, -0.2, -4.0], [-3.0, -0.5, -1.0]])
    paper = combine_labels(q, lm, alpha=0.4)
    assert np.nanargmax(paper[0]) == 1 and len(make_pairs(paper[:1])) == 3
    junk = np.array([[False] * 3, [False, True, False], [False] * 3])  # row 1: teacher 1 was cut
    floors = np.array([1.0, np.nan, 1.0])
    gq, gl = gate_scores(q, lm, junk=junk, floors=floors)
    gated = combine_labels(gq, gl, alpha=0.4)
    assert len(make_pairs(gated[:1])) == 0  # all below the floor: learnability cannot decide
    # The cut one: under the lowest kept quality by the kept ones' range, the lowest learnability.
    assert gq[1, 1] == pytest.approx(0.2 - (0.5 - 0.2)) and gl[1, 1] == -4.0
    assert np.nanargmax(gated[1]) == 0
    assert np.isnan(gq[2, 2]) and gl[2, 2] == -1.0  # missing stays missing (and gates nothing)
    assert gl[2, 1] == -3.0 and gl[2, 0] == -3.0  # below the floor: its prompt's lowest learnability
    assert np.nanargmax(combine_labels(gq, gl, alpha=0.4)[2]) == 0
    # A cut response whose raw scores are the best still loses to the worst kept one (no tie).
    tie_q, tie_l = gate_scores(
        np.array([[0.3, 0.9, 0.3]]), np.array([[-1.0, -0.1, -1.0]]), junk=np.array([[False, True, False]]),
        floors=np.array([np.nan]),
    )  # fmt: skip
    assert tie_q[0, 1] == pytest.approx(-0.7) and tie_l[0, 1] == -1.0
    assert len(make_pairs(combine_labels(tie_q, tie_l, alpha=0.4))) == 2
    all_junk, _ = gate_scores(q[1:2], lm[1:2], junk=np.ones((1, 3), dtype=bool), floors=np.array([np.nan]))
    assert np.all(all_junk == 0.2)  # every response dropped: a tie at the prompt's lowest (0.5, 0.9, 0.2)
    same_q, same_l = gate_scores(q, lm, junk=np.zeros_like(junk), floors=np.full(3, np.nan))
    assert np.array_equal(same_q, q, equal_nan=True) and np.array_equal(same_l, lm, equal_nan=True)


def test_switched_off_sections_stay_out_of_the_manifest_and_the_router_key(tmp_path):
    from persyn.config import load_config

    write_prompts(tmp_path / "prompts.jsonl", 2, 2)
    on = load_config(
        tiny_config(tmp_path, extra={"filters": {}, "router.quality_floor": {}, "generation": {}})
    )
    off = load_config(tiny_config(tmp_path, name="off.yaml"))  # the fixture turns all three off
    d_on, d_off = on.manifest_dict(), off.manifest_dict()
    assert "filters" in d_on and "quality_floor" in d_on["router"] and "regenerate_cut" in d_on["generation"]
    assert "filters" not in d_off and "quality_floor" not in d_off["router"]
    assert "regenerate_cut" not in d_off["generation"]
    assert "quality_floor" in on.router.key_dict() and "quality_floor" not in off.router.key_dict()


# ---------------------------------------------------------------------------- the pipeline


def _rows(run, where="", args=()):
    with db(run) as con:
        cols = "teacher, gen_key, prompt_id, finish_reason, completion_tokens, params, created_at"
        return con.execute(f"SELECT {cols} FROM responses {where}", args).fetchall()


@pytest.fixture
def cut_run(tmp_path):
    """Tiny random Llamas that stop only on " t": at 6 tokens most responses are cut, a few of
    those stop within the second try's 12, the rest are cut again."""
    write_prompts(tmp_path / "prompts.jsonl", 6, 6)
    extra = {
        "generation": {"max_new_tokens": 6, "stop": [" t"]},  # regenerate_cut at its default (on, 2x)
        "filters": {},
        "router.quality_floor": {},
        "output.formats": ["messages"],
    }
    return tmp_path, tiny_config(tmp_path, calibration=6, extra=extra)


def test_cut_responses_are_generated_again_once_resumably_then_dropped(cut_run, monkeypatch):
    from persyn.pipeline import Pipeline

    root, cfg = cut_run
    run = root / "run"

    class Crash(Exception):
        pass

    def crash(stage, n):  # batch 3 of calibrate is the first batch of t1's second tries (4 per batch)
        if (stage, n) == ("calibrate", 3):
            raise Crash

    with pytest.raises(Crash), Pipeline.from_config(cfg, on_commit=crash, progress=False) as pipe:
        pipe.calibrate()
    regen = {gk for gk, v in state(run, "gen_keys").items() if v.get("regenerates")}
    assert len(regen) == 1  # t1's second tries had begun
    kept = _rows(run, "WHERE gen_key = ?", tuple(regen))
    assert 1 <= len(kept) <= 4  # the batch committed before the crash

    assert cli(["calibrate", str(cfg)]).exit_code == 0  # resumes: the rest of the second tries
    regen = {gk for gk, v in state(run, "gen_keys").items() if v.get("regenerates")}
    assert set(kept) <= set(_rows(run))  # kept as they were, not written again
    first = [r for r in _rows(run) if r[1] not in regen]
    second = {(r[0], r[2]): r for r in _rows(run) if r[1] in regen}
    cut = {(r[0], r[2]) for r in first if r[3] == "length"}
    assert cut and set(second) == cut  # every cut first try, and only those, tried once more
    assert all(json.loads(r[5])["max_new_tokens"] == 12 for r in second.values())
    assert all(r[4] == 6 for r in first if r[3] == "length")

    res = cli(["run", str(cfg)])
    assert res.exit_code == 0, res.output
    spy = GenerateSpy(monkeypatch)
    assert cli(["generate", str(cfg)]).exit_code == 0
    assert spy.total_generated == 0  # the routed prompts' first and second tries are all in the store

    # No exported row was cut; each left-out row is counted, per teacher and filter.
    rows = [json.loads(x) for x in (run / "dataset" / "persyn.messages.jsonl").read_text().splitlines()]
    assert all(r["generation"]["finish_reason"] != "length" for r in rows)
    doc = json.loads((run / "export.json").read_text())["persyn"]
    checks = doc["row_checks"]
    assert sum(e["rows"] for e in checks.values()) == 12
    assert sum(e["rows"] - e["dropped"] for e in checks.values()) == len(rows) == doc["rows"]
    assert (
        sum(e["by_filter"].get("cut", 0) for e in checks.values()) == doc["left_out"].get("filter:cut", 0) > 0
    )
    assert all(e["regenerated"] == e["cut"] for e in checks.values())
    regenerated = [r for r in rows if r["generation"].get("regenerated")]
    assert all(r["generation"]["params"]["max_new_tokens"] == 12 for r in regenerated)
    card = (run / "dataset" / "README.md").read_text()
    assert "## Rows left out" in card and "**cut**, for example" in card
    assert "Rows left out" in (run / "report" / "index.html").read_text()

    # In calibration, a dropped response never beats a kept one in the router's labels.
    with Pipeline.from_config(cfg, progress=False) as pipe:
        ctx = pipe.ctx
        cal = ctx.calibration_ids()
        scores = ctx.result("score")
        junk = ctx.result("filter").junk(cal)
        labels = scores.labels(*scores.matrices(cal, gate=True))
        paper = scores.labels(*scores.matrices(cal))
    assert junk.any() and (~junk).any()
    for i in range(len(cal)):
        ok = ~junk[i] & ~np.isnan(labels[i])
        for j in np.flatnonzero(junk[i] & ~np.isnan(labels[i])):
            assert (labels[i, j] <= labels[i, ok] + 1e-12).all()
    assert not np.array_equal(labels, paper, equal_nan=True)
