"""Combined labels (docs/method.md, Eq. 2) and Bradley-Terry pairs.

Both scores are normalised *within each prompt*, across the teachers that answered it, then mixed:
`r = (1 - alpha) * r_q + alpha * r_l`. Matrices are n_prompts x n_teachers with NaN where a score is
missing (a teacher failed on a prompt): such a teacher is absent from that prompt's normalisation
and pairs; it never counts as 0. A prompt whose teachers all tie yields no pairs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from persyn.defaults import ALPHA

Normalisation = Literal["zscore", "minmax"]
NORMALISATIONS: tuple[str, ...] = ("zscore", "minmax")
DEFAULT_ALPHA = ALPHA  # persyn.defaults holds it; kept under this name for the API
#: alpha of labels made from quality alone (a score file without learnability).
QUALITY_ONLY = 0.0
# Two combined labels closer than this are a tie (no pair): float noise must not invent a winner.
TIE_TOL = 1e-9


def _check_matrix(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D n_prompts x n_teachers matrix, got shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError(f"{name} holds infinite values; mark missing scores as NaN")
    return arr


def normalise_within_prompt(
    values: np.ndarray, method: Normalisation = "zscore", present: np.ndarray | None = None
) -> np.ndarray:
    """Normalise each row over its present entries; absent entries come back NaN.

    zscore: (x - mean) / std; minmax: (x - min) / (max - min). A row with zero spread (all its
    present teachers tie, or only one is present) becomes 0, not NaN: it carries no preference.
    """
    if method not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {method!r}; expected one of {NORMALISATIONS}")
    x = _check_matrix("scores", values)
    mask = ~np.isnan(x) if present is None else (np.asarray(present, dtype=bool) & ~np.isnan(x))
    xm = np.where(mask, x, np.nan)
    count = mask.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "zscore":
            centre = np.nansum(xm, axis=1, keepdims=True) / np.maximum(count, 1)
            spread = np.sqrt(np.nansum((xm - centre) ** 2, axis=1, keepdims=True) / np.maximum(count, 1))
        else:
            filled_lo = np.where(mask, x, np.inf).min(axis=1, keepdims=True)
            filled_hi = np.where(mask, x, -np.inf).max(axis=1, keepdims=True)
            centre, spread = filled_lo, filled_hi - filled_lo
        flat = ~(spread > 1e-12)  # also catches rows with nothing present (spread NaN / -inf)
        out = np.where(flat, 0.0, (xm - centre) / np.where(flat, 1.0, spread))
    return np.where(mask, out, np.nan)


def combine_labels(
    quality: np.ndarray | None,
    learnability: np.ndarray | None,
    alpha: float = DEFAULT_ALPHA,
    normalisation: Normalisation = "zscore",
) -> np.ndarray:
    """`r = (1 - alpha) * norm(r_q) + alpha * norm(r_l)`, NaN where the teacher is absent.

    A teacher is present on a prompt when every component with a non-zero weight is known there,
    and both components are normalised over that same set of teachers. alpha=0 needs no
    learnability (a quality-only router), alpha=1 no quality.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    parts: list[tuple[float, np.ndarray]] = []
    if alpha < 1.0:
        if quality is None:
            raise ValueError(f"alpha={alpha} needs quality scores")
        parts.append((1.0 - alpha, _check_matrix("quality", quality)))
    if alpha > 0.0:
        if learnability is None:
            raise ValueError(f"alpha={alpha} needs learnability scores (or use alpha=0)")
        parts.append((alpha, _check_matrix("learnability", learnability)))
    shape = parts[0][1].shape
    for _, m in parts:
        if m.shape != shape:
            raise ValueError(f"quality and learnability shapes differ: {shape} vs {m.shape}")
    present = np.ones(shape, dtype=bool)
    for _, m in parts:
        present &= ~np.isnan(m)
    total = np.zeros(shape)
    for w, m in parts:
        total += w * np.nan_to_num(normalise_within_prompt(m, normalisation, present))
    return np.where(present, total, np.nan)


#: Version of the gate's rule (`gate_scores`), part of a gated router's train key: a new rule gives
#: new labels, so a resumed run trains its router again. 2: junk ranks below every kept response
#: (1 let it tie with the lowest).
GATE_VERSION = 2


def gate_scores(
    quality: np.ndarray, learnability: np.ndarray, *, junk: np.ndarray, floors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Quality that gates learnability (beyond the paper; docs/method.md), before `combine_labels`:

    - a junk response (left out by the row filters: cut, empty, a loop...) ranks below every kept
      response of its prompt: its quality is one step under the lowest kept quality (the step is
      the kept qualities' range, or 1 where they tie), its learnability the prompt's lowest. It
      can never win that prompt, and never tie with a kept response (a tie gives the router no
      pair, so with the worst kept response it would learn nothing from the drop). Where every
      response of a prompt is junk, they take the prompt's lowest quality: a tie;
    - a response whose quality is below its prompt's floor (`floors`, one per prompt; NaN: no
      floor) takes the lowest learnability of its prompt: it cannot be preferred for being
      learnable. A response at or above the floor then always beats one below it.

    Missing entries (NaN) stay missing. With no junk and no floor, the scores come back unchanged.
    """
    q = _check_matrix("quality", quality).copy()
    lm = _check_matrix("learnability", learnability).copy()
    junk = np.asarray(junk, dtype=bool)
    floors = np.asarray(floors, dtype=np.float64).reshape(-1, 1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: their min is NaN, unused
        q_min = np.nanmin(q, axis=1, keepdims=True)
        l_min = np.nanmin(lm, axis=1, keepdims=True)
        kept = np.where(junk, np.nan, q)
        kept_min = np.nanmin(kept, axis=1, keepdims=True)
        kept_range = np.nanmax(kept, axis=1, keepdims=True) - kept_min
        under_kept = kept_min - np.where(kept_range > 0, kept_range, 1.0)
        q = np.where(junk & ~np.isnan(q), np.where(np.isnan(under_kept), q_min, under_kept), q)
        below = junk | (~np.isnan(floors) & (q < floors))
        lm = np.where(below & ~np.isnan(lm), l_min, lm)
    return q, lm


@dataclass(frozen=True)
class Pairs:
    """Bradley-Terry training pairs, one per (prompt, teacher a < teacher b) with different labels.

    `b_wins[k]` is 1.0 when teacher `b[k]` beats teacher `a[k]` on prompt `prompt[k]`, else 0.0.
    """

    prompt: np.ndarray  # int64
    a: np.ndarray  # int64
    b: np.ndarray  # int64
    b_wins: np.ndarray  # float32

    def __len__(self) -> int:
        return int(self.prompt.shape[0])

    def subset(self, keep_prompts: np.ndarray) -> Pairs:
        """The pairs of the prompts where `keep_prompts` (bool, n_prompts) is True."""
        sel = np.asarray(keep_prompts, dtype=bool)[self.prompt]
        return Pairs(self.prompt[sel], self.a[sel], self.b[sel], self.b_wins[sel])


def make_pairs(labels: np.ndarray, tie_tol: float = TIE_TOL) -> Pairs:
    """All informative pairs of a label matrix, vectorised over prompts and teacher pairs.

    Ties (|r_b - r_a| <= tie_tol) are dropped, as are pairs with a missing teacher.
    """
    r = _check_matrix("labels", labels)
    n, t = r.shape
    ia, ib = np.triu_indices(t, k=1)
    diff = r[:, ib] - r[:, ia]  # n x n_teacher_pairs
    keep = ~np.isnan(diff) & (np.abs(diff) > tie_tol)
    rows, cols = np.nonzero(keep)
    return Pairs(
        prompt=rows.astype(np.int64),
        a=ia[cols].astype(np.int64),
        b=ib[cols].astype(np.int64),
        b_wins=(diff[rows, cols] > 0).astype(np.float32),
    )


def oracle_sets(labels: np.ndarray, tie_tol: float = TIE_TOL) -> np.ndarray:
    """Bool matrix: teacher j is an oracle choice for prompt i (its label is the row's best, up to
    ties). Rows with a missing label are all False: the oracle is undefined there."""
    r = _check_matrix("labels", labels)
    complete = ~np.isnan(r).any(axis=1, keepdims=True)
    best = np.nanmax(np.where(complete, r, 0.0), axis=1, keepdims=True)
    return complete & (np.where(complete, r, -np.inf) >= best - tie_tol)


def quality_labels(quality: np.ndarray, normalisation: Normalisation = "zscore") -> np.ndarray:
    """Labels from quality alone (alpha = `QUALITY_ONLY`): what a score file without learnability
    gives (`persyn router train|eval`)."""
    return combine_labels(quality, None, alpha=QUALITY_ONLY, normalisation=normalisation)
