"""Baselines with the router's interface: random, strongest, CAR, Mix, kNN, oracle (docs/method.md).

Fitted baselines learn from the calibration matrices (n_calib x n_teachers, NaN = missing):
quality `r_q`, learnability `r_l` (mean log-likelihood) and combined labels `r`.
Per-prompt randomness (random, Mix) is a hash of (seed, prompt): a prompt routes the same way
whatever batch or order it arrives in, so a resumed run routes exactly as a clean one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from persyn.router.base import Router
from persyn.router.encoders import EmbeddingCache, PromptEncoder, embed_prompts


def _uniform(seed: int, prompts: Sequence[str], n: int, salt: str) -> np.ndarray:
    """len(prompts) x n uniforms in [0, 1), a pure function of (salt, seed, prompt)."""
    raw = b"".join(hashlib.shake_128(f"{salt}:{seed}:{p}".encode()).digest(8 * n) for p in prompts)
    bits = np.frombuffer(raw, dtype=np.uint64).reshape(len(prompts), n) >> np.uint64(11)
    return bits.astype(np.float64) / float(1 << 53)  # 53 random bits -> exact doubles in [0, 1)


def _teacher_index(teachers: Sequence[str], name: str, role: str) -> int:
    if name not in teachers:
        raise ValueError(f"{role} teacher {name!r} is not one of {list(teachers)}")
    return list(teachers).index(name)


def _constant(prompts: Sequence[str], values: np.ndarray) -> np.ndarray:
    return np.tile(np.asarray(values, dtype=np.float64), (len(prompts), 1))


def _nanmean_columns(m: np.ndarray, what: str, teachers: Sequence[str]) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != len(teachers):
        raise ValueError(f"{what} must be n x {len(teachers)}, got shape {m.shape}")
    empty = np.isnan(m).all(axis=0)
    if empty.any():
        names = [t for t, e in zip(teachers, empty, strict=True) if e]
        raise ValueError(f"{what}: no calibration scores at all for {names}")
    return np.nanmean(m, axis=0)


class RandomRouter(Router):
    """Uniform random teacher per prompt (seeded)."""

    name = "random"

    def __init__(self, teachers: Sequence[str], seed: int = 0):
        self.teachers = list(teachers)
        self.seed = seed

    def scores(self, prompts, *, embeddings=None) -> np.ndarray:
        return _uniform(self.seed, prompts, len(self.teachers), "random")


class FixedRouter(Router):
    """One constant score per teacher: every prompt goes to the same teacher."""

    def __init__(self, teachers: Sequence[str], teacher_scores: np.ndarray, name: str):
        self.teachers = list(teachers)
        self.teacher_scores = np.asarray(teacher_scores, dtype=np.float64)
        self.name = name

    def scores(self, prompts, *, embeddings=None) -> np.ndarray:
        return _constant(prompts, self.teacher_scores)

    @property
    def choice(self) -> str:
        return self.teachers[int(np.argmax(self.teacher_scores))]


class StrongestRouter(FixedRouter):
    """The teacher with the best mean quality on the calibration set, for every prompt.

    Mean of raw quality scores over the prompts each teacher answered (with `auto` scoring this
    mixes scales; every teacher sees the same mix, so the ranking stays fair)."""

    def __init__(self, teachers: Sequence[str], quality: np.ndarray):
        super().__init__(teachers, _nanmean_columns(quality, "quality", teachers), "strongest")


def car_scores(quality: np.ndarray, learnability: np.ndarray, beta: float = 3.0) -> np.ndarray:
    """CAR = r / (1 + beta * L) per teacher.

    r is the teacher's mean quality after min-max scaling *all* calibration quality scores to [0, 1]
    (one affine map for every teacher: the ranking of raw means is kept, and raw judge log-odds or
    reward logits, which can be negative, stop flipping the formula's sign); L is the student's mean
    loss, -mean log-likelihood (>= 0).
    """
    q = np.asarray(quality, dtype=np.float64)
    lo, hi = np.nanmin(q), np.nanmax(q)
    scaled = (q - lo) / (hi - lo) if hi - lo > 1e-12 else np.ones_like(q)
    present = ~np.isnan(q) & ~np.isnan(np.asarray(learnability, dtype=np.float64))
    r = np.nanmean(np.where(present, scaled, np.nan), axis=0)
    loss = -np.nanmean(np.where(present, learnability, np.nan), axis=0)
    return r / (1.0 + beta * np.maximum(loss, 0.0))


class CARRouter(FixedRouter):
    """Compatibility-adjusted reward: the single teacher with the highest CAR writes everything."""

    def __init__(
        self, teachers: Sequence[str], quality: np.ndarray, learnability: np.ndarray, beta: float = 3.0
    ):
        if beta < 0:
            raise ValueError(f"CAR beta must be >= 0, got {beta}")
        _nanmean_columns(quality, "quality", teachers)
        _nanmean_columns(learnability, "learnability", teachers)
        super().__init__(teachers, car_scores(quality, learnability, beta), "car")
        self.beta = beta


class MixRouter(Router):
    """`share` of prompts to the strong teacher, the rest to the weak one, assigned at random
    (a seeded per-prompt draw, so the realised share is close to, not exactly, `share`)."""

    name = "mix"

    def __init__(self, teachers: Sequence[str], strong: str, weak: str, share: float = 0.2, seed: int = 0):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"Mix share must be in [0, 1], got {share}")
        self.teachers = list(teachers)
        self.strong = _teacher_index(teachers, strong, "Mix strong")
        self.weak = _teacher_index(teachers, weak, "Mix weak")
        self.share = share
        self.seed = seed

    def scores(self, prompts, *, embeddings=None) -> np.ndarray:
        u = _uniform(self.seed, prompts, 1, "mix")[:, 0]
        out = np.zeros((len(prompts), len(self.teachers)))
        out[np.arange(len(prompts)), np.where(u < self.share, self.strong, self.weak)] = 1.0
        return out


class KNNRouter(Router):
    """RouterBench-style kNN: a prompt's score for a teacher is the mean label of the k most
    similar calibration prompts (cosine similarity of embeddings) that have that teacher's label;
    a teacher none of the neighbours has falls back to its mean over the whole calibration set."""

    name = "knn"

    def __init__(
        self,
        teachers: Sequence[str],
        embeddings: np.ndarray,
        labels: np.ndarray,
        k: int = 10,
        encoder: PromptEncoder | None = None,
        cache: EmbeddingCache | None = None,
    ):
        labels = np.asarray(labels, dtype=np.float64)
        if labels.shape != (len(embeddings), len(teachers)):
            raise ValueError(f"labels shape {labels.shape} != ({len(embeddings)}, {len(teachers)})")
        keep = ~np.isnan(labels).all(axis=1)
        if not keep.any():
            raise ValueError("kNN needs at least one calibration prompt with labels")
        self.teachers = list(teachers)
        self.k = max(1, min(int(k), int(keep.sum())))
        self.ref = _unit(np.asarray(embeddings, dtype=np.float32)[keep])
        self.labels = labels[keep]
        known = ~np.isnan(self.labels)
        counts = known.sum(axis=0)
        self.fallback = np.where(counts > 0, np.nansum(self.labels, axis=0) / np.maximum(counts, 1), 0.0)
        self.encoder = encoder
        self.cache = cache

    def scores(self, prompts, *, embeddings=None, chunk: int = 2048) -> np.ndarray:
        self._check_embeddings(prompts, embeddings)
        if embeddings is None:
            if self.encoder is None:
                raise ValueError("kNN needs prompt embeddings (or an encoder to compute them)")
            embeddings = embed_prompts(self.encoder, prompts, self.cache)
        q = _unit(np.asarray(embeddings, dtype=np.float32))
        out = np.empty((len(q), len(self.teachers)))
        known = ~np.isnan(self.labels)
        filled = np.nan_to_num(self.labels)
        for s in range(0, len(q), chunk):  # bounded memory: chunk x n_calib similarities
            sim = q[s : s + chunk] @ self.ref.T
            nn_idx = np.argpartition(-sim, self.k - 1, axis=1)[:, : self.k]
            total = filled[nn_idx].sum(axis=1)
            count = known[nn_idx].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[s : s + chunk] = np.where(count > 0, total / np.maximum(count, 1), self.fallback)
        return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class OracleError(ValueError):
    """The oracle was asked about a prompt whose labels are not all known."""


class OracleRouter(Router):
    """Argmax of the true label: the upper bound. Knows only prompts whose every teacher's label
    is known, and refuses others with a clear error."""

    name = "oracle"

    def __init__(self, teachers: Sequence[str], prompts: Sequence[str], labels: np.ndarray):
        labels = np.asarray(labels, dtype=np.float64)
        if labels.shape != (len(prompts), len(teachers)):
            raise ValueError(f"labels shape {labels.shape} != ({len(prompts)}, {len(teachers)})")
        self.teachers = list(teachers)
        self._rows = {p: labels[i] for i, p in enumerate(prompts)}

    def scores(self, prompts, *, embeddings=None) -> np.ndarray:
        out = np.empty((len(prompts), len(self.teachers)))
        for i, p in enumerate(prompts):
            row = self._rows.get(p)
            if row is None:
                raise OracleError(f"oracle has no labels for prompt {i} ({p[:60]!r})")
            if np.isnan(row).any():
                missing = [t for t, v in zip(self.teachers, row, strict=True) if np.isnan(v)]
                raise OracleError(f"oracle needs every teacher's label; prompt {i} lacks {missing}")
            out[i] = row
        return out


# ----------------------------------------------------------------------------- strategy names


def persyn_alpha(name: str) -> float | None:
    """A in `persyn-alphaA` (PerSyn with another router alpha), else None; ValueError if A is not
    in [0, 1]. The name holds only letters, digits, '-' and '.': it names the dataset's files."""
    if not name.startswith(_PERSYN_AT):
        return None
    try:
        alpha = float(name[len(_PERSYN_AT) :])
    except ValueError:
        alpha = -1.0
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{name!r}: alpha must be a number from 0 to 1 (persyn-alpha0.2)")
    return alpha


def persyn_at(alpha: float) -> str:
    """The strategy name of PerSyn at `alpha` (`persyn-alpha0.2`)."""
    return f"{_PERSYN_AT}{float(alpha):g}"


_PERSYN_AT = "persyn-alpha"
