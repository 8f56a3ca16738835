"""The answer checker against tables of tricky cases: what must match, and near misses that must not."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from persyn.scoring.answers import (
    CHECKERS,
    AnswerChecker,
    AnswerScorer,
    answer_matches,
    answers_key,
    check_answer,
    extract_final_answer,
    final_answer,
    parse_number,
    reference_value,
)

# (response, reference, expected, why): the first table, from before math-verify; every verdict kept.
CASES = [
    ("1,000", "1000", True, "thousands separator"),
    ("1000.0", "1000", True, "trailing decimal zero"),
    ("So we get \\boxed{1000}.", "1000", True, "boxed"),
    ("The answer is 1000.", "1000", True, "answer phrase, sentence stop dropped"),
    ("The population is 1,234,567 people.", "1234567", True, "several thousands groups"),
    ("It weighs 2.50 kg", "2.5", True, "trailing zero, unit word"),
    ("It weighs 2.5 kg", "2.05", False, "a different decimal"),
    ("Numbers: 1,2,3", "3", True, "a list, not a thousands separator: the last line's last number"),
    ("The temperature drops to -5 degrees.", "-5", True, "a negative number"),
    ("The temperature drops to -5 degrees.", "5", False, "sign flip"),
    ("Using the unicode minus: \u221212", "-12", True, "unicode minus"),
    ("3-5 = -2", "-2", True, '"3-5" is a subtraction; the value after "=" is the answer'),
    ("x = \\frac{3}{4}", "0.75", True, "LaTeX fraction equals its decimal"),
    ("The probability is 3/4.", "3/4", True, "plain fraction"),
    ("$\\boxed{\\dfrac{1}{2}}$", "0.5", True, "\\dfrac in a box in math mode"),
    ("The answer is 2/3", "0.67", False, "no rounding tolerance"),
    ("She ran 42 km in total.", "42", True, "a unit word"),
    ("Answer: 15 minutes", "15", True, "a unit word after an answer phrase"),
    ("She has 3 apples and buys 5 more, so she has 8 apples.", "8", True, "a sentence's last number"),
    ("She has 3 apples and buys 5 more, so she has 8 apples.", "5", False, "an earlier number"),
    (
        "The answer is 8, because 3 + 5 = 8 and not 9.",
        "8",
        True,
        "the justification after the answer is ignored",
    ),
    ("First I thought \\boxed{7} but actually \\boxed{9}", "9", True, "the last box wins"),
    ("\\boxed{x = 12}", "12", True, "a named value"),
    ("\\boxed{\\text{12 apples}}", "12", True, "text in a box"),
    ("Unfinished \\boxed{12", "12", True, "an unclosed box (the model stopped): its content"),
    ("Natalia sold 48 / 2 = 24 clips in May.\n#### 72", "72", True, "GSM8K ####"),
    ("Total is 24.\n#### 1,072", "1072", True, "GSM8K #### with a thousands separator"),
    ("The discount is 25%.", "25", True, "p% matches p"),
    ("The discount is 25%.", "0.25", True, "p% matches p/100"),
    ("The discount is 25 percent.", "25", True, "the word percent"),
    ("The discount is 25%.", "0.025", False, "25% is not 0.025"),
    ("It costs $1,250.00 in total.", "1250", True, "currency and thousands"),
    ("The price is \u20ac3.50", "3.5", True, "euro sign"),
    ("They lost -$40 overall", "-40", True, "a sign before the currency"),
    ("\\boxed{\\$18}", "18", True, "an escaped dollar in a box"),
    ("I am not sure how to solve this.", "12", False, "no answer"),
    ("", "12", False, "empty response"),
    (
        "The answer is 72.",
        "Natalia sold 48/2 = 24 clips in May.\n#### 72",
        True,
        "a GSM8K solution as reference",
    ),
    ("The answer is 1000", "\\boxed{1,000}", True, "a boxed reference"),
    ("It is 1e3", "1000", True, "scientific notation"),
    ("The answer is (B).", "B", True, "a multiple-choice letter in brackets"),
    ("The answer is (C).", "B", False, "another letter"),
    ("Answer: Paris", "paris", True, "text, any case"),
    ("The capital is Lyon.\nLyon", "Paris", False, "another word"),
]

# MATH-style answers (math-verify) and the final-answer rule. At least half are near misses.
MATH_CASES = [
    # equal, though written differently
    ("\\boxed{\\frac{1}{2}}", "0.5", True, "a fraction equals its decimal"),
    ("\\boxed{x^2+1}", "x^2+1", True, "the same expression"),
    ("The answer is $1+x^2$.", "x^2+1", True, "addition commutes"),
    ("\\boxed{(x+1)^2}", "x^2+2x+1", True, "expanded and factored forms are equal"),
    ("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", True, "a simplified root"),
    ("\\boxed{\\frac{\\pi}{2}}", "\\pi/2", True, "two notations of pi/2"),
    ("\\boxed{(1,2)}", "(1,2)", True, "the same interval"),
    ("\\boxed{[2,5]}", "[2,5]", True, "the same closed interval"),
    ("\\boxed{\\{3,1,2\\}}", "\\{1,2,3\\}", True, "a set has no order"),
    ("\\boxed{x=3}", "3", True, "x = 3 states 3"),
    ("\\boxed{\\dfrac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}2", True, "LaTeX shorthand for the same value"),
    ("\\boxed{5\\text{ cm}}", "5", True, "a unit in \\text{} is dropped"),
    ("So the answer is \\boxed{1{,}000}.", "1000", True, "a LaTeX thousands separator"),
    ("\\boxed{25\\%}", "0.25", True, "25% is 0.25"),
    ("\\boxed{2\\pi}", "2\\pi", True, "pi, symbolically"),
    ("\\boxed{e^{2}}", "e^2", True, "braces around an exponent"),
    ("The answer is 12 apples, since 3 times 4 is 12.", "12", True, "the answer's clause only"),
    ("#### 1,234", "1234", True, "GSM8K with a thousands separator"),
    ("We get 2 + 3 = 5.\nThe answer is: 5", "5", True, "an answer phrase with a colon"),
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", True, "a rationalised denominator"),
    ("\\boxed{-\\frac{1}{2}}", "-0.5", True, "a negative fraction"),
    ("\\boxed{y = 2x + 1}", "y=2x+1", True, "the same equation"),
    ("The final answer is $\\boxed{(3, -4)}$.", "(3,-4)", True, "a box in math mode"),
    ("Final answer: 0.75", "\\frac{3}{4}", True, "a decimal equals a LaTeX fraction"),
    ("\\boxed{90^\\circ}", "90", True, "the degree sign is dropped"),
    ("The answer is (C).", "C", True, "a multiple-choice letter"),
    ("Answer: New York City", "new york city", True, "words, any case"),
    ("\\boxed{\\text{Paris}}", "Paris", True, "a word in a box"),
    ("Let me think.\nTotal: 3 + 4 = 7", "7", True, "the last line, after its last ="),
    ("\\boxed{(-\\infty, 3)}", "(-\\infty,3)", True, "an unbounded interval"),
    # near misses: every one must be False
    ("The answer is \\boxed{x^2-1}", "x^2+1", False, "issue 11: a sign flip inside an expression"),
    ("\\boxed{(-1,2)}", "(1,2)", False, "issue 11: a sign flip in a pair"),
    ("\\boxed{2\\sqrt{2}}", "2", False, "issue 11: 2*sqrt(2) is not 2"),
    ("\\boxed{\\pi/2}", "2", False, "issue 11: pi/2 is not 2"),
    ("\\boxed{(2,1)}", "(1,2)", False, "swapped tuple entries"),
    ("\\boxed{(4,3)}", "(3,4)", False, "swapped endpoints"),
    ("\\boxed{[1,2)}", "[1,2]", False, "half-open is not closed"),
    ("\\boxed{(1,2)}", "[1,2]", False, "open is not closed"),
    ("\\boxed{(-\\infty, 3]}", "(-\\infty,3)", False, "closed at 3 is not open at 3"),
    ("\\boxed{x}", "2x", False, "a missing factor of 2"),
    ("\\boxed{2}", "2x", False, "a missing variable"),
    ("\\boxed{\\sqrt{3}}", "3\\sqrt{3}", False, "a missing coefficient"),
    ("\\boxed{3\\sqrt{3}}", "3\\sqrt{2}", False, "the wrong radicand"),
    ("\\boxed{\\sqrt{2}}", "2", False, "a root is not its radicand"),
    ("\\boxed{2\\pi}", "\\pi", False, "an extra factor"),
    ("\\boxed{6.28}", "2\\pi", False, "a decimal approximation of 2 pi is not 2 pi"),
    ("\\boxed{0.33}", "\\frac{1}{3}", False, "a rounded decimal is not the fraction"),
    ("\\boxed{\\frac{1}{3}}", "0.333", False, "the fraction is not its rounding"),
    ("\\boxed{\\frac{4}{3}}", "\\frac{3}{4}", False, "an inverted fraction"),
    ("\\boxed{\\frac{1}{2}}", "2", False, "the reciprocal"),
    ("\\boxed{5\\%}", "0.5", False, "5% is 0.05 (or 5), not 0.5"),
    ("The growth was 50%.", "5", False, "50% is neither 5 nor 0.05"),
    ("\\boxed{2\\text{ m}}", "200", False, "units are not converted (2 m is not 200 cm)"),
    ("\\boxed{90^\\circ}", "\\frac{\\pi}{2}", False, "degrees are not converted to radians"),
    ("The total is 1.000 kg.", "1000", False, "a dot is a decimal point, not a thousands separator"),
    ("\\boxed{1,5}", "15", False, "1,5 is two numbers (or a decimal comma), not fifteen"),
    ("#### 10,00", "1000", False, "a malformed group is not a thousands separator"),
    ("\\boxed{5, 7}", "7", False, "two answers in one box"),
    ("I first got 12.\nThe answer is 7", "12", False, "an earlier number does not count"),
    ("The answer is 7, not 12.", "12", False, "only the stated answer counts"),
    (
        "She bought 12 apples and ate 5.\nShe has 7 left.",
        "12",
        False,
        "a number on an earlier line does not count",
    ),
    ("The result is 8.\nHope this helps!", "8", False, "the last line states no answer"),
    ("\\boxed{-5}", "5", False, "a sign flip"),
    ("\\boxed{x = -4}", "x = \\pm 4", False, "one root of two"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2,3\\}", False, "a missing element"),
    ("\\boxed{y = 2x - 1}", "y=2x+1", False, "a sign flip in an equation"),
    ("\\boxed{1000}", "100", False, "off by a factor of ten"),
    ("Answer: Lyon", "Paris", False, "another word"),
    ("The answer is 2 - 1", "-1", False, "2 - 1 is a difference, not the number -1"),
    ("\\boxed{2x}", "2", False, "a variable glued to the number"),
]


@pytest.mark.parametrize(("response", "reference", "expected", "why"), CASES + MATH_CASES)
def test_answer_table(response, reference, expected, why):
    verdict = check_answer(response, reference)
    assert verdict.correct is expected, f"{why}: {verdict.reason}"
    assert verdict.reason and not verdict.timed_out


def test_the_tables_are_big_enough_and_mostly_near_misses():
    assert len(MATH_CASES) >= 60
    assert sum(not expected for *_, expected, _ in MATH_CASES) >= len(MATH_CASES) / 2
    assert len({(r, ref) for r, ref, *_ in CASES + MATH_CASES}) == len(CASES + MATH_CASES)


def test_batch_verdicts_equal_one_by_one():
    table = CASES + MATH_CASES
    many = AnswerChecker().check_many([r for r, *_ in table], [ref for _, ref, *_ in table])
    assert [v.correct for v in many] == [expected for _, _, expected, _ in table]


def test_auto_picks_the_method_from_the_reference():
    assert check_answer("#### 72", "72").method == "numeric"
    assert check_answer("\\boxed{\\frac{3}{4}}", "0.75").method == "numeric"  # a plain fraction
    assert check_answer("\\boxed{\\sqrt{2}}", "2").method == "math"  # plain reference, not a plain answer
    assert check_answer("\\boxed{x+1}", "x+1").method == "math"
    assert check_answer("(B)", "B").method == "exact"


def test_forced_checkers():
    # numeric: plain numbers only; more maths is a 0 with its reason, never "any number in it"
    v = check_answer("\\boxed{\\pi/2}", "2", "numeric")
    assert not v.correct and "not a plain number" in v.reason
    assert check_answer("\\boxed{1{,}000}", "1000", "numeric").correct
    v = check_answer("\\boxed{x^2}", "x^2", "numeric")
    assert not v.correct and "reference" in v.reason
    # exact: text, with every symbol but the outer brackets and punctuation kept
    assert not check_answer("The answer is x^2-1", "x^2+1", "exact").correct
    assert not check_answer("\\boxed{(-1,2)}", "(1,2)", "exact").correct
    assert check_answer("The answer is (B).", "B", "exact").correct
    assert check_answer("\\boxed{x^2+1}", "x^2+1", "exact").correct
    assert not check_answer("\\boxed{0.5}", "\\frac{1}{2}", "exact").correct
    # math: math-verify for everything, plain numbers included
    assert check_answer("\\boxed{1{,}000}", "1000", "math").correct
    assert check_answer("\\boxed{0.5}", "\\frac{1}{2}", "math").method == "math"
    with pytest.raises(ValueError, match="unknown answer checker"):
        AnswerChecker("fuzzy")  # type: ignore[arg-type]


def test_final_answer_is_only_the_final_answer():
    assert final_answer("Work: 3 + 4.\n\\boxed{7} and more text").text == "7"
    assert final_answer("x\n#### 42\n").source == "hashes"
    assert final_answer("The answer is 8, because 3 + 5 = 8.").text == "8"
    assert final_answer("The answer is as follows:\nWe get 5") == final_answer("We get 5")
    assert final_answer("Many numbers 1 2 3\nlast line 9").text == "last line 9"
    assert final_answer("   \n ") is None


def test_numeric_reference_types():
    assert answer_matches("The answer is 1000", 1000)
    assert answer_matches("The answer is 0.5", 0.5)
    assert not answer_matches("The answer is 0.5", 5)


def test_parse_number_and_extract():
    assert parse_number("$1,000.00") == 1000.0
    assert parse_number("\\frac{3}{4}") == 0.75
    assert parse_number("-5 km") == -5.0
    assert parse_number("no digits here") is None
    assert parse_number("2 then 3", last=False) == 2.0
    assert extract_final_answer("blah \\boxed{a{b}c} tail") == "a{b}c"
    assert extract_final_answer("Work...\n#### 42") == "42"
    assert extract_final_answer("The final answer is: 7 apples") == "7 apples"
    assert extract_final_answer("just text") is None
    assert reference_value("B") is None
    assert reference_value("1,000") == 1000.0
    assert reference_value("\\pi/2") is None  # not a plain number: math-verify decides
    assert reference_value("(1, 2)") is None


def test_answer_scorer_is_binary_and_needs_references():
    scorer = AnswerScorer()
    assert scorer.score(["q1", "q2", "q3"], ["#### 4", "the answer is 5", "no idea"], ["4", "4", "4"]) == [
        1.0,
        0.0,
        0.0,
    ]
    with pytest.raises(ValueError, match="no reference"):
        scorer.score(["q"], ["4"], [None])
    with pytest.raises(ValueError, match="one reference"):
        scorer.score(["q"], ["4"])
    # The key names the checker (and what decides its verdicts): a new checker re-scores answers.
    assert scorer.key == answers_key("auto")
    keys = {answers_key(c) for c in CHECKERS}
    assert len(keys) == len(CHECKERS) and all(k.startswith("answers:") for k in keys)
    assert "math-verify" in answers_key("math") and "math-verify" not in answers_key("numeric")


# A number with ten billion digits: math-verify would compute it for minutes, and Python's big-integer
# arithmetic never returns to the interpreter, so only killing the worker stops it.
HOSTILE = "\\boxed{10^{10^{10}}}"


def test_a_hostile_expression_times_out_and_scores_zero():
    checker = AnswerChecker("auto", timeout_s=1.0)
    t0 = time.perf_counter()
    verdicts = checker.check_many([HOSTILE, "\\boxed{x+1}"], ["1", "x+1"])
    assert time.perf_counter() - t0 < 30
    assert verdicts[0].timed_out and not verdicts[0].correct and verdicts[0].value == 0.0
    assert verdicts[0].reason.startswith("timeout")
    assert verdicts[1].correct  # the pool replaced the killed worker


def test_checks_work_from_threads():
    # math-verify's own time limit is signal.alarm, which raises outside the main thread.
    checker = AnswerChecker("auto", timeout_s=1.0)
    pairs = [("\\boxed{x^2-1}", "x^2+1"), ("\\boxed{1+x^2}", "x^2+1"), (HOSTILE, "1")]
    with ThreadPoolExecutor(3) as ex:
        got = list(ex.map(lambda p: checker.check(*p), pairs))
    assert [v.correct for v in got] == [False, True, False]
    assert got[2].timed_out
    assert threading.current_thread() is threading.main_thread()


def _check_in_daemon(pair: tuple[str, str]) -> tuple[bool, bool]:
    v = check_answer(*pair, timeout_s=1.0)
    return v.correct, v.timed_out


@pytest.mark.slow
def test_checks_work_in_a_daemonic_worker():
    # multiprocessing.Pool workers may not start multiprocessing children; the checker's helper is a
    # plain subprocess, so the hostile item is still killed on time there.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        got = pool.map(_check_in_daemon, [("\\boxed{1+x^2}", "x^2+1"), (HOSTILE, "1")])
    assert got == [(True, False), (False, True)]


# A user's script as most are written: top-level code, no `if __name__ == "__main__":` guard. With
# spawned (or forkserver) multiprocessing workers it failed with "Unexpected error within the Pool",
# as every worker re-ran it. It records each run of its top level in a file: exactly one run.
GUARDLESS_SCRIPT = """\
import os, sys
from persyn.scoring.answers import answer_matches, check_answer
with open(sys.argv[1], "a") as f:
    f.write(f"{os.getpid()}\\n")
print(answer_matches("\\\\boxed{1+x^2}", "x^2+1"), answer_matches("\\\\boxed{x^2-1}", "x^2+1"))
print(check_answer(sys.argv[2], "1", timeout_s=1.0).timed_out)
"""


def test_checks_work_from_a_script_without_a_main_guard(tmp_path):
    script, runs = tmp_path / "check.py", tmp_path / "runs.txt"
    script.write_text(GUARDLESS_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, str(script), str(runs), HOSTILE],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "True"]
    assert len(runs.read_text().split()) == 1  # the script's top level ran once, in its own process
