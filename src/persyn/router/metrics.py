"""Router metrics on held-out calibration prompts.

For a score matrix S (n x T, higher = better) and the true combined labels R (n x T):
- chosen teacher = argmax S (ties to the earlier teacher);
- oracle set = every teacher whose label equals the row's best (up to TIE_TOL). Ties are common
  with 0/1 answers; any teacher of the oracle set counts as a hit;
- Hit@1: chosen teacher is in the oracle set; Hit@k: any of the top-k by S is. Computed over
  *ranked* prompts only: prompts whose teachers all tie (every choice would hit) are left out;
- regret: mean of (best label - chosen teacher's label), in label units;
- mean_label / mean_score / mean_learnability: mean label, raw quality and raw learnability of the
  chosen teachers;
- oracle_gain_recovered: (router - best single) / (oracle - best single) on mean label, where the
  best single teacher is the one with the best mean label on these same prompts (in hindsight);
  None when the oracle has no gain over it (|denominator| < 1e-9);
- allocation: how many prompts go to each teacher.
Every metric uses the prompts where all teachers' labels are known (`n`); others are counted in
`n_skipped` (the oracle is undefined there).

`compare(..., intervals=True)` adds `ci95`: {metric: [low, high]}, a 95% percentile bootstrap over
prompts (the same resamples for every router, so their intervals are comparable) for Hit@k, regret,
mean label and oracle gain recovered (whose best single teacher is chosen again in each resample).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from persyn.scoring.labels import TIE_TOL, oracle_sets

GAIN_EPS = 1e-9
N_BOOT = 1000
INTERVAL_METRICS = ("hit@1", "hit@3", "regret", "mean_label", "oracle_gain_recovered")


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if x.size else None


def evaluate_scores(
    scores: np.ndarray,
    labels: np.ndarray,
    teachers: Sequence[str],
    *,
    quality: np.ndarray | None = None,
    learnability: np.ndarray | None = None,
    ks: Sequence[int] = (1, 3),
) -> dict:
    """All metrics for one router's score matrix; see the module docstring."""
    s = np.asarray(scores, dtype=np.float64)
    r = np.asarray(labels, dtype=np.float64)
    if s.shape != r.shape or s.ndim != 2 or s.shape[1] != len(teachers):
        raise ValueError(f"scores {s.shape} and labels {r.shape} must both be n x {len(teachers)}")
    complete = ~np.isnan(r).any(axis=1)
    s, r = s[complete], r[complete]
    n, t = r.shape
    out: dict = {"n": int(n), "n_skipped": int((~complete).sum())}
    chosen = np.argmax(s, axis=1) if n else np.zeros(0, dtype=np.int64)
    rows = np.arange(n)
    oracle = oracle_sets(r, TIE_TOL)
    ranked = ~oracle.all(axis=1)
    out["n_ranked"] = int(ranked.sum())
    order = np.argsort(-s, axis=1, kind="stable")
    for k in ks:
        top = order[:, : min(k, t)]
        hit = np.take_along_axis(oracle, top, axis=1).any(axis=1)
        out[f"hit@{k}"] = _mean(hit[ranked].astype(np.float64))
    best = r.max(axis=1) if n else np.zeros(0)
    got = r[rows, chosen]
    out["regret"] = _mean(best - got)
    out["mean_label"] = _mean(got)
    for name, m in (("mean_score", quality), ("mean_learnability", learnability)):
        if m is not None:
            v = np.asarray(m, dtype=np.float64)[complete][rows, chosen]
            out[name] = _mean(v[~np.isnan(v)])
    if n:
        col_means = r.mean(axis=0)
        best_single = int(np.argmax(col_means))
        denom = float(best.mean() - col_means[best_single])
        out["best_single"] = teachers[best_single]
        out["oracle_gain_recovered"] = (
            float((got.mean() - col_means[best_single]) / denom) if abs(denom) > GAIN_EPS else None
        )
    else:
        out["best_single"] = None
        out["oracle_gain_recovered"] = None
    counts = np.bincount(chosen, minlength=t) if n else np.zeros(t, dtype=np.int64)
    out["allocation"] = {name: int(c) for name, c in zip(teachers, counts, strict=True)}
    return out


def _resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """n_boot x n: how often each prompt is drawn in each bootstrap resample."""
    if not n:
        return np.zeros((n_boot, 0))
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def bootstrap_intervals(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    ks: Sequence[int] = (1, 3),
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float] | None]:
    """Percentile bootstrap intervals over prompts for `INTERVAL_METRICS` (None where a metric is
    undefined in too many resamples, e.g. no ranked prompt)."""
    s = np.asarray(scores, dtype=np.float64)
    r = np.asarray(labels, dtype=np.float64)
    complete = ~np.isnan(r).any(axis=1)
    s, r = s[complete], r[complete]
    n, t = r.shape
    w = _resample_counts(n, n_boot, seed)  # every metric below is a weighted mean over prompts
    chosen = np.argmax(s, axis=1) if n else np.zeros(0, dtype=np.int64)
    oracle = oracle_sets(r, TIE_TOL)
    ranked = (~oracle.all(axis=1)).astype(np.float64)
    order = np.argsort(-s, axis=1, kind="stable")
    got = r[np.arange(n), chosen]
    best = r.max(axis=1) if n else np.zeros(0)
    draws: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ks:
            hit = np.take_along_axis(oracle, order[:, : min(k, t)], axis=1).any(axis=1)
            draws[f"hit@{k}"] = (w @ (hit * ranked)) / (w @ ranked)
        draws["regret"] = w @ (best - got) / n
        draws["mean_label"] = w @ got / n
        single = (w @ r / n).max(axis=1)  # the best single teacher of each resample, in hindsight
        denom = w @ best / n - single
        gain = (draws["mean_label"] - single) / denom
        draws["oracle_gain_recovered"] = np.where(np.abs(denom) > GAIN_EPS, gain, np.nan)
    tail = 100 * (1 - level) / 2
    out: dict[str, list[float] | None] = {}
    for name, v in draws.items():
        v = v[np.isfinite(v)]
        ok = n and v.size >= 0.9 * n_boot
        out[name] = [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))] if ok else None
    return out


def compare(
    score_matrices: Mapping[str, np.ndarray],
    labels: np.ndarray,
    teachers: Sequence[str],
    *,
    quality: np.ndarray | None = None,
    learnability: np.ndarray | None = None,
    intervals: bool = False,
    seed: int = 0,
) -> dict[str, dict]:
    """`evaluate_scores` for several routers on the same prompts: {name: metrics}, each with its
    `ci95` intervals when asked (the same bootstrap resamples for every router)."""
    out = {}
    for name, s in score_matrices.items():
        out[name] = evaluate_scores(s, labels, teachers, quality=quality, learnability=learnability)
        if intervals:
            out[name]["ci95"] = bootstrap_intervals(s, labels, seed=seed)
    return out


def json_safe(obj):
    """NaN/inf -> None, numpy scalars -> Python, recursively (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
