"""Scoring: quality (reward model, LM judge, verifiable answers, auto), learnability, labels, pairs."""

from persyn.scoring.answers import AnswerScorer, answer_matches, extract_final_answer, parse_number
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
    "DEFAULT_ALPHA",
    "AnswerScorer",
    "AutoScorer",
    "EngineScorer",
    "Learnability",
    "Pairs",
    "QualityScorer",
    "answer_matches",
    "build_quality_scorer",
    "combine_labels",
    "extract_final_answer",
    "learnability_key",
    "learnability_matrix",
    "make_pairs",
    "method_for",
    "normalise_within_prompt",
    "oracle_sets",
    "parse_number",
    "score_quality_matrix",
]
