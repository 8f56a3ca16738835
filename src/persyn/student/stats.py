"""Intervals and tests: a metric's mean over items, a proportion, and two models on the same items.

    bootstrap_mean([1, 0, 1, 1], confidence=0.95, resamples=2000, seed=0)   # Interval(mean, low, high, n)
    paired_difference(scores_a, scores_b)          # mean(a - b) per item, resampled by item
    proportion_interval([1, 0, 0])                 # Wilson score interval of a share of 0/1 outcomes
    paired_test(scores_a, scores_b)                # exact McNemar for 0/1 outcomes, else paired bootstrap

A seeded percentile bootstrap in numpy rather than `scipy.stats.bootstrap`: the same seed gives the
same interval on every scipy version (its seeding argument changed name in 1.15), and the percentile
method stays defined on 0/1 data where every resample agrees (BCa, scipy's default, returns NaN there).
Items are resampled with replacement; NaN values (an item a metric could not score) are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "Interval",
    "PairedTest",
    "bootstrap_mean",
    "holm",
    "is_binary",
    "metric_interval",
    "paired_difference",
    "paired_test",
    "proportion_interval",
]

_CHUNK = 1 << 22  # resample indices drawn in blocks of about this many (bounds memory at large n)


@dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap interval over `n` items (NaNs when n is 0)."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        """For a difference: is it real at this confidence (the interval lies on one side of 0)?"""
        return self.n > 0 and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        if self.n == 0:
            return "-"
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _resampled_means(x: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The means of `resamples` seeded resamples of `x` (with replacement), drawn in row blocks so
    memory stays bounded at large n (numpy fills the blocks in the order one draw would)."""
    rng = np.random.default_rng(seed)
    n = len(x)
    per = max(1, _CHUNK // n)
    return np.concatenate(
        [
            x[rng.integers(0, n, size=(min(per, resamples - s), n))].mean(axis=1)
            for s in range(0, resamples, per)
        ]
    )


def bootstrap_mean(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval:
    """The mean of `values` and its percentile-bootstrap interval (seeded: deterministic)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    means = _resampled_means(x, resamples, seed)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    mean = float(x.mean())
    # The percentile interval of a mean always holds the mean up to rounding; make it exact.
    return Interval(mean, min(float(low), mean), max(float(high), mean), n, confidence)


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """mean(a - b) over the items both models scored, with a bootstrap over items: the pairing
    removes the items' own difficulty from the noise, so a real difference shows at far smaller n
    than two separate intervals would need."""
    if len(a) != len(b):
        raise ValueError(f"paired scores must cover the same items: {len(a)} != {len(b)}")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return bootstrap_mean(d, confidence=confidence, resamples=resamples, seed=seed)


# ----------------------------------------------------------------------------- proportions, tests


def is_binary(values: Sequence[float]) -> bool:
    """Whether every (non-NaN) value is 0 or 1: a proportion, for Wilson intervals and McNemar."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    return bool(x.size) and bool(np.isin(x, (0.0, 1.0)).all())


def proportion_interval(values: Sequence[float], *, confidence: float = 0.95) -> Interval:
    """The share of 1s among 0/1 `values` with its Wilson score interval (scipy): never zero-width,
    so 0 of 30 reads [0, 0.114], not [0, 0] as a bootstrap would."""
    from scipy.stats import binomtest

    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    k = int(x.sum())
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(k / n, float(ci.low), float(ci.high), n, confidence)


def metric_interval(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval:
    """Wilson for 0/1 values (accuracy, all constraints met), else the bootstrap of the mean."""
    if is_binary(values):
        return proportion_interval(values, confidence=confidence)
    return bootstrap_mean(values, confidence=confidence, resamples=resamples, seed=seed)


@dataclass(frozen=True)
class PairedTest:
    """Model a against model b on the same items: the mean difference with its interval, the
    two-sided p-value and the test that gave it (exact McNemar for 0/1 outcomes, else a paired
    bootstrap)."""

    difference: Interval
    p_value: float
    test: str
    a_better: int = 0  # items where a scored higher (the discordant pairs, for McNemar)
    b_better: int = 0

    def to_dict(self) -> dict:
        return {**asdict(self), "difference": self.difference.to_dict()}


def paired_test(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedTest:
    """Is a different from b on the same items? Items where either is NaN are left out.

    0/1 outcomes: the exact McNemar test (a binomial test on the discordant pairs: items one
    model got right and the other wrong). Otherwise: the paired bootstrap of the mean difference,
    p = twice the share of resampled means on the far side of 0 (at least 1/resamples)."""
    from scipy.stats import binomtest

    if len(a) != len(b):
        raise ValueError(f"paired scores must cover the same items: {len(a)} != {len(b)}")
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    diff = paired_difference(x, y, confidence=confidence, resamples=resamples, seed=seed)
    a_better, b_better = int((x > y).sum()), int((y > x).sum())
    if not len(x):
        return PairedTest(diff, math.nan, "none", 0, 0)
    if is_binary(x) and is_binary(y):
        discordant = a_better + b_better
        p = 1.0 if discordant == 0 else float(binomtest(a_better, discordant, 0.5).pvalue)
        return PairedTest(diff, p, "exact McNemar", a_better, b_better)
    d = x - y
    if not d.any():
        return PairedTest(diff, 1.0, "paired bootstrap", 0, 0)
    means = _resampled_means(d, resamples, seed)  # the same resamples as the interval's
    side = min((means <= 0).mean(), (means >= 0).mean())
    p = float(min(1.0, max(2 * side, 1 / resamples)))
    return PairedTest(diff, p, "paired bootstrap", a_better, b_better)


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (for the exploratory comparisons beside the primary one)."""
    items = sorted(p_values.items(), key=lambda kv: kv[1])
    m, out, running = len(items), {}, 0.0
    for i, (name, p) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        out[name] = running
    return out
