"""Evaluation of a (trained or untrained) student through the engine protocol."""

from __future__ import annotations


def check_answer(response: str, reference: str) -> bool:
    """Is `response`'s final answer the reference? The one place eval calls the answer checker
    (today `persyn.scoring.answers.answer_matches`), so switching checkers is a one-line change."""
    from persyn.scoring.answers import answer_matches

    return answer_matches(response, reference)
