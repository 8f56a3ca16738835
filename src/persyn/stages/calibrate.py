"""Stage calibrate (the method's step 1, docs/method.md): choose the calibration subset; every
teacher answers it.

Selection (deterministic for a config and seed):
- `random`: the `size` prompts with the smallest SHA-256 of (seed, prompt id). A prompt's
  membership never depends on file order or on the other prompts.
- `diverse`: scikit-learn's k-means (k = size) over the router encoder's prompt embeddings
  (cached in the store and reused by routing), on a seeded pool of `pool_factor x size` prompts;
  the prompt nearest each centroid is taken (each prompt once).
The subset is stored as subset "calibration"; its key (selection settings + working set) is kept
in the store state, so a resumed run reuses it and a changed setting re-selects it (responses of
prompts that stay selected are reused: they are keyed by content).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from persyn.stages.context import RunContext, TeacherWork
from persyn.store.keys import content_key, digest


@dataclass
class CalibrationResult(TeacherWork):
    prompt_ids: list[str]
    selection: str

    @property
    def failed(self) -> int:
        return sum(c.failed + (c.failed_before if not c.new else 0) for c in self.teachers.values())


def hash_order(ids: list[str], seed: int, salt: str) -> list[str]:
    """`ids` sorted by SHA-256 of (salt, seed, id): a seeded order independent of input order."""
    return sorted(ids, key=lambda i: digest(f"{salt}:{seed}:{i}", None))


def select_calibration(ctx: RunContext) -> list[str]:
    cfg = ctx.config
    cal = cfg.calibration
    ids = ctx.working_ids()
    size = min(cal.size, len(ids))
    parts: list = ["calibration", cal.selection, size, cfg.seed, digest(ids, spaced=True)]
    if cal.selection == "diverse":
        parts += [cal.pool_factor, cfg.router.encoder, cfg.router.pooling, cfg.router.max_length]
    key = content_key(*parts)
    state = ctx.store.get_state("calibration")
    current = ctx.store.get_subset("calibration")
    if state and state.get("key") == key and current is not None:
        return current
    if size == len(ids):
        chosen = list(ids)
    elif cal.selection == "random":
        chosen = hash_order(ids, cfg.seed, "calibration")[:size]
    else:
        chosen = _diverse(ctx, ids, size)
    pos = {pid: i for i, pid in enumerate(ids)}
    chosen.sort(key=pos.__getitem__)  # file order: easier to read, and independent of the method
    ctx.store.set_subset("calibration", chosen, replace=True)
    ctx.store.set_state("calibration", {"key": key, "selection": cal.selection, "size": len(chosen)})
    ctx.store.log_event(
        "calibrate", "info", f"selected {len(chosen)} of {len(ids)} prompts ({cal.selection})", n=len(chosen)
    )
    return chosen


def _diverse(ctx: RunContext, ids: list[str], size: int) -> list[str]:
    from persyn.stages.embeddings import embed_ids

    cfg = ctx.config
    pool = hash_order(ids, cfg.seed, "calibration-pool")[: min(len(ids), size * cfg.calibration.pool_factor)]
    emb = embed_ids(ctx, pool, stage="calibrate")
    picked = kmeans_representatives(emb, size, seed=cfg.seed)
    return [pool[i] for i in picked]


def kmeans_representatives(x: np.ndarray, k: int, *, seed: int) -> list[int]:
    """Indices of k distinct rows of `x`, one nearest each centroid of scikit-learn's seeded
    k-means (k-means++ start, one initialisation) over the rows scaled to unit length.

    A run directory keeps the subset it stored (its calibration key does not name the algorithm),
    so runs made with persyn's earlier hand-written k-means resume with their own subset."""
    from sklearn.cluster import KMeans

    n = len(x)
    if k >= n:
        return list(range(n))
    x = np.asarray(x, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    centres = KMeans(n_clusters=k, init="k-means++", n_init=1, random_state=seed).fit(x).cluster_centers_
    sq = (x * x).sum(axis=1)
    dist = sq[:, None] - 2 * x @ centres.T + (centres * centres).sum(axis=1)[None, :]
    # Each centroid takes its nearest prompt not taken yet (centroids in order of how close their
    # best prompt is, so a shared nearest prompt goes to the centroid it fits best).
    chosen: list[int] = []
    taken = np.zeros(n, dtype=bool)
    for j in np.argsort(dist.min(axis=0), kind="stable"):
        col = np.where(taken, np.inf, dist[:, j])
        i = int(col.argmin())
        taken[i] = True
        chosen.append(i)
    return chosen


def run(ctx: RunContext) -> CalibrationResult:
    ids = select_calibration(ctx)
    result = CalibrationResult(ids, ctx.config.calibration.selection)
    ctx.ui.say(f"[bold]calibrate[/]: {len(ids)} prompts x {len(ctx.teachers)} teachers")
    for teacher in ctx.teachers:
        result.teachers[teacher] = ctx.generate_responses("calibrate", teacher, ids)
    return result
