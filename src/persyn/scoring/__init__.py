"""Scoring: quality (reward model, LM judge, verifiable answers, auto), learnability, labels, pairs."""

from persyn.scoring.answers import (
    CHECKERS,
    AnswerChecker,
    AnswerScorer,
    Verdict,
    answer_matches,
    answers_key,
    check_answer,
    extract_final_answer,
    final_answer,
    parse_number,
)
from persyn.scoring.labels import (
    DEFAULT_ALPHA,
    Pairs,
    combine_labels,
    make_pairs,
    normalise_within_prompt,
    oracle_sets,
)
from persyn.scoring.learnability import Learnability, learnability_key, learnability_matrix
from persyn.scoring.quality import (
    AutoScorer,
    EngineScorer,
    QualityScorer,
    build_quality_scorer,
    method_for,
    score_quality_matrix,
)

__all__ = [
    "CHECKERS",
    "DEFAULT_ALPHA",
    "AnswerChecker",
    "AnswerScorer",
    "AutoScorer",
    "EngineScorer",
    "Learnability",
    "Pairs",
    "QualityScorer",
    "Verdict",
    "answer_matches",
    "answers_key",
    "build_quality_scorer",
    "check_answer",
    "combine_labels",
    "extract_final_answer",
    "final_answer",
    "learnability_key",
    "learnability_matrix",
    "make_pairs",
    "method_for",
    "normalise_within_prompt",
    "oracle_sets",
    "parse_number",
    "score_quality_matrix",
]
