"""Bootstrap intervals: a metric's mean over items, and the difference of two models on the same items.

    bootstrap_mean([1, 0, 1, 1], confidence=0.95, resamples=2000, seed=0)   # Interval(mean, low, high, n)
    paired_difference(scores_a, scores_b)          # mean(a - b) per item, resampled by item

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

__all__ = ["Interval", "bootstrap_mean", "paired_difference"]

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


def bootstrap_mean(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval:
    """The mean of `values` and its percentile-bootstrap interval (seeded: deterministic)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    rng = np.random.default_rng(seed)
    per = max(1, _CHUNK // n)
    means = np.concatenate(
        [
            x[rng.integers(0, n, size=(min(per, resamples - s), n))].mean(axis=1)
            for s in range(0, resamples, per)
        ]
    )
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
