"""Learnability (docs/method.md, Eq. 1): the student's mean per-token log-likelihood of a response.

`r_l = (1/|y|) sum_t log p_student(y_t | y_<t, x)`, prompt in the student's own chat format and only
response tokens counted; the student Engine's `loglik` verb computes exactly that. Learnability
depends on the student only, so its store key is the student's fingerprint: a second student
re-scores learnability and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from persyn.engines.base import Engine, loglik_or_missing


def learnability_key(student_fingerprint: str) -> str:
    """The store key of learnability scores: the student's engine fingerprint."""
    return f"loglik:{student_fingerprint}"


class Learnability:
    """`score(prompts, responses)` -> the student's mean log-likelihood of each response."""

    kind = "learnability"

    def __init__(self, student: Engine):
        self.student = student
        self.key = learnability_key(student.fingerprint)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """NaN (missing) for an empty response, whose mean over zero tokens is undefined, and for
        one that overflows the student's context; a number for everything else."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return loglik_or_missing(self.student, prompts, responses, self.key)


def learnability_matrix(
    student: Engine, prompts: Sequence[str], responses: Mapping[str, Sequence[str | None]]
) -> np.ndarray:
    """n_prompts x n_teachers learnability (teachers in the order of `responses`), NaN where a
    teacher has no response. All responses go to the engine in one call (it batches)."""
    teachers = list(responses)
    n = len(prompts)
    present = np.array([[responses[t][i] is not None for t in teachers] for i in range(n)], dtype=bool)
    out = np.full((n, len(teachers)), np.nan)
    rows, cols = np.nonzero(present.reshape(n, len(teachers)))
    if rows.size:
        vals = Learnability(student).score(
            [prompts[i] for i in rows],
            [responses[teachers[j]][i] for i, j in zip(rows, cols, strict=True)],  # type: ignore[misc]
        )
        out[rows, cols] = vals
    return out
