"""The verifiable-answer matcher against a table of tricky cases."""

from __future__ import annotations

import pytest

from persyn.scoring.answers import (
    AnswerScorer,
    answer_matches,
    extract_final_answer,
    parse_number,
    reference_value,
)

# (response, reference, expected match)
CASES = [
    # the four spellings of 1000 the issue names
    ("1,000", "1000", True),
    ("1000.0", "1000", True),
    ("So we get \\boxed{1000}.", "1000", True),
    ("The answer is 1000.", "1000", True),
    # commas and decimals
    ("The population is 1,234,567 people.", "1234567", True),
    ("It weighs 2.50 kg", "2.5", True),
    ("It weighs 2.5 kg", "2.05", False),
    ("Numbers: 1,2,3", "3", True),  # a list, not a thousands separator
    # negatives
    ("The temperature drops to -5 degrees.", "-5", True),
    ("The temperature drops to -5 degrees.", "5", False),
    ("Using the unicode minus: \u221212", "-12", True),
    ("3-5 = -2", "-2", True),  # "3-5" is a subtraction, the result is negative
    # fractions
    ("x = \\frac{3}{4}", "0.75", True),
    ("The probability is 3/4.", "3/4", True),
    ("$\\boxed{\\dfrac{1}{2}}$", "0.5", True),
    ("The answer is 2/3", "0.67", False),  # no rounding tolerance
    # units
    ("She ran 42 km in total.", "42", True),
    ("Answer: 15 minutes", "15", True),
    # several numbers: the final answer wins
    ("She has 3 apples and buys 5 more, so she has 8 apples.", "8", True),
    ("She has 3 apples and buys 5 more, so she has 8 apples.", "5", False),
    ("The answer is 8, because 3 + 5 = 8 and not 9.", "8", True),  # explicit answer beats last number
    ("First I thought \\boxed{7} but actually \\boxed{9}", "9", True),  # last boxed wins
    # boxed, with nesting and text
    ("\\boxed{x = 12}", "12", True),
    ("\\boxed{\\text{12 apples}}", "12", True),
    ("Unfinished \\boxed{12", "12", True),  # unbalanced box: fall back to the last number
    # GSM8K style
    ("Natalia sold 48 / 2 = 24 clips in May.\n#### 72", "72", True),
    ("Total is 24.\n#### 1,072", "1072", True),
    # percentages: p% matches p and p/100
    ("The discount is 25%.", "25", True),
    ("The discount is 25%.", "0.25", True),
    ("The discount is 25 percent.", "25", True),
    ("The discount is 25%.", "0.025", False),
    # currency
    ("It costs $1,250.00 in total.", "1250", True),
    ("The price is \u20ac3.50", "3.5", True),
    ("They lost -$40 overall", "-40", True),
    ("\\boxed{\\$18}", "18", True),
    # no parseable answer scores 0
    ("I am not sure how to solve this.", "12", False),
    ("", "12", False),
    # references in other shapes
    ("The answer is 72.", "Natalia sold 48/2 = 24 clips in May.\n#### 72", True),
    ("The answer is 1000", "\\boxed{1,000}", True),
    ("It is 1e3", "1000", True),
    # non-numeric references compare as normalised text
    ("The answer is (B).", "B", True),
    ("The answer is (C).", "B", False),
    ("Answer: Paris", "paris", True),
    ("The capital is Lyon.\nLyon", "Paris", False),
]


@pytest.mark.parametrize(("response", "reference", "expected"), CASES)
def test_answer_table(response, reference, expected):
    assert answer_matches(response, reference) is expected


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
    assert scorer.key == "answers:v1"
