"""The labelled judge set (`persyn/data/judge_triples.jsonl`) and how a judge is scored on it:
used by benchmarks/judge.py (which measures judges and records the figures the report shows, see
`persyn.scoring.reliability`) and by tests/test_judge_set.py; not part of the package's API.

The set holds hand-written (prompt, good, bad) triples over math, facts, code and instructions; the
bad answer is plausible, not gibberish. A judge is right on a triple when it scores the good answer
above the bad one, which is exactly what the router's labels need (compared within a prompt).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

TRIPLES_FILE = "judge_triples.jsonl"
DOMAINS = ("math", "facts", "code", "instructions")


@dataclass(frozen=True)
class Triple:
    id: str
    domain: str
    prompt: str
    good: str
    bad: str
    why: str


def load_triples() -> list[Triple]:
    text = resources.files("persyn").joinpath("data", TRIPLES_FILE).read_text(encoding="utf-8")
    return [Triple(**json.loads(line)) for line in text.splitlines() if line.strip()]


def pair_outcomes(good: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """1 where the good answer scored higher, 0 where lower, 0.5 on a tie (a coin flip's worth);
    a NaN score (e.g. over the judge's context) counts as a tie."""
    good, bad = np.asarray(good, dtype=float), np.asarray(bad, dtype=float)
    out = np.where(good > bad, 1.0, np.where(good < bad, 0.0, 0.5))
    return np.where(np.isnan(good) | np.isnan(bad), 0.5, out)


def bootstrap_interval(
    values: np.ndarray, *, seed: int = 0, n_resamples: int = 10_000
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of `values` (items resampled with replacement).

    Plain numpy: scipy.stats.bootstrap changed its seeding argument within our scipy range."""
    v = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_resamples, len(v)))
    lo, hi = np.percentile(v[idx].mean(axis=1), [2.5, 97.5])
    return float(lo), float(hi)
