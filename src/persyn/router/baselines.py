"""Baselines with the router's interface: random, strongest, CAR, Mix, family-strong, kNN, oracle
(docs/method.md).

`build_baselines` is the one place that fits them from calibration matrices: the report's
measurement (stage train-router), the strategies' datasets (stage strategies, `persyn compare`) and
`persyn router eval` all call it, so the "weak teacher for Mix" and the Family-Strong pick are made
once, and a new baseline added there reaches all three.

Fitted baselines learn from the calibration matrices (n_calib x n_teachers, NaN = missing):
quality `r_q`, learnability `r_l` (mean log-likelihood) and combined labels `r`.
Per-prompt randomness (random, Mix) is a hash of (seed, prompt): a prompt routes the same way
whatever batch or order it arrives in, so a resumed run routes exactly as a clean one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from persyn.defaults import CAR_BETA, KNN_K, MIX_SHARE
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


def car_scores(quality: np.ndarray, learnability: np.ndarray, beta: float = CAR_BETA) -> np.ndarray:
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
        self, teachers: Sequence[str], quality: np.ndarray, learnability: np.ndarray, beta: float = CAR_BETA
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

    def __init__(
        self, teachers: Sequence[str], strong: str, weak: str, share: float = MIX_SHARE, seed: int = 0
    ):
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
        k: int = KNN_K,
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


@dataclass
class Calibration:
    """What the baselines are fitted on: the calibration matrices (n_calib x n_teachers, NaN =
    missing; None = not available), the prompts' embeddings, the settings, and the baselines
    fitted before this one (Mix reads strongest and CAR)."""

    teachers: list[str]
    quality: np.ndarray | None
    learnability: np.ndarray | None
    labels: np.ndarray | None
    embeddings: np.ndarray | None
    seed: int = 0
    car_beta: float = CAR_BETA
    mix_share: float = MIX_SHARE
    mix_weak: str | None = None
    knn_k: int = KNN_K
    family: Collection[str] = ()
    fitted: dict[str, Router] = field(default_factory=dict)

    def need(self, what: str) -> np.ndarray:
        """The matrix `what` ("quality", "learnability", "labels", "embeddings"), or Skip."""
        value = getattr(self, what)
        if value is None:
            raise Skip(f"no {what}" + (" scores" if what in ("quality", "learnability") else ""))
        return value


class Skip(Exception):
    """A baseline these inputs do not allow; the message says why (it becomes a note)."""


class NotApplicable(Exception):
    """A baseline that does not apply to this pool (Family-Strong without a family): no note."""


@dataclass
class Baselines:
    """What `build_baselines` fitted: name -> router (in `BASELINES` order), and a note per
    baseline it could not fit (why)."""

    routers: dict[str, Router] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def mix_pair(self) -> tuple[str, str] | None:
        """Mix's (strong, weak) teachers, when Mix was fitted."""
        mix = self.routers.get("mix")
        if not isinstance(mix, MixRouter):
            return None
        return mix.teachers[mix.strong], mix.teachers[mix.weak]

    def skipped(self, name: str) -> str:
        """The note that says why `name` was not fitted (for an error message)."""
        return next(
            (n for n in self.notes if n.startswith(f"baseline {name} ")), f"baseline {name} not fitted"
        )


def mix_weak_teacher(teachers: Sequence[str], strong: str, rank: np.ndarray) -> str | None:
    """The weak teacher for Mix: the best of `rank` (CAR where it could be computed, else mean
    quality) other than the strong one; None with a single teacher."""
    order = np.argsort(-np.asarray(rank, dtype=np.float64), kind="stable")
    return next((teachers[i] for i in order if teachers[i] != strong), None)


def _random(c: Calibration) -> Router:
    return RandomRouter(c.teachers, seed=c.seed)


def _strongest(c: Calibration) -> Router:
    return StrongestRouter(c.teachers, c.need("quality"))


def _car(c: Calibration) -> Router:
    return CARRouter(c.teachers, c.need("quality"), c.need("learnability"), beta=c.car_beta)


def _mix(c: Calibration) -> Router:
    """`mix_share` to the strongest, the rest to `mix_weak`: by default the best CAR teacher other
    than the strongest (best mean quality when CAR could not be fitted)."""
    strong = c.fitted.get("strongest")
    if not isinstance(strong, StrongestRouter):
        raise Skip("it needs the strongest teacher")
    car = c.fitted.get("car")
    rank = car.teacher_scores if isinstance(car, CARRouter) else strong.teacher_scores
    weak = c.mix_weak or mix_weak_teacher(c.teachers, strong.choice, rank)
    if weak is None or weak == strong.choice:
        raise Skip(f"it needs two teachers, but the weak one is the strong one, {weak}")
    return MixRouter(c.teachers, strong.choice, weak, share=c.mix_share, seed=c.seed)


def _family_strong(c: Calibration) -> Router:
    """The strongest teacher among those of the student's family (`family`)."""
    strong = c.fitted.get("strongest")
    fam = set(c.family)
    if not fam & set(c.teachers):
        raise NotApplicable
    if not isinstance(strong, StrongestRouter):
        raise Skip("it needs the strongest teacher")
    means = np.where([t in fam for t in c.teachers], strong.teacher_scores, -np.inf)
    return FixedRouter(c.teachers, means, "family-strong")


def _knn(c: Calibration) -> Router:
    if c.labels is None or c.embeddings is None:
        raise NotApplicable  # no labels or embeddings given: not asked for
    return KNNRouter(c.teachers, c.embeddings, c.labels, k=c.knn_k)


#: Every baseline, name -> how to fit it from the calibration, in the report's order (a fitter may
#: read the ones before it). Adding a baseline is a `Router` subclass and one entry here: the
#: report's measurement, the strategies and `persyn router eval` all build from this table.
BASELINES: dict[str, Callable[[Calibration], Router]] = {
    "random": _random,
    "strongest": _strongest,
    "car": _car,
    "mix": _mix,
    "family-strong": _family_strong,
    "knn": _knn,
}


def build_baselines(
    teachers: Sequence[str],
    quality: np.ndarray | None,
    learnability: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    *,
    seed: int = 0,
    car_beta: float = CAR_BETA,
    mix_share: float = MIX_SHARE,
    mix_weak: str | None = None,
    knn_k: int = KNN_K,
    family: Collection[str] = (),
) -> Baselines:
    """Every baseline of `BASELINES` these calibration matrices allow (n_calib x n_teachers, NaN =
    missing): random always; strongest and family-strong need `quality`; CAR `learnability` too;
    kNN the combined `labels` and the prompts' `embeddings`. One that cannot be fitted (a teacher
    without any score, ...) is left out with a note. The oracle is not fitted here: it is the true
    labels of the prompts being evaluated."""
    c = Calibration(
        list(teachers), quality, learnability, labels, embeddings,
        seed=seed, car_beta=car_beta, mix_share=mix_share, mix_weak=mix_weak, knn_k=knn_k, family=family,
    )  # fmt: skip
    out = Baselines()
    for name, fit in BASELINES.items():
        try:
            out.routers[name] = c.fitted[name] = fit(c)
        except NotApplicable:
            continue
        except (Skip, ValueError) as exc:
            out.notes.append(f"baseline {name} skipped: {exc}")
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
