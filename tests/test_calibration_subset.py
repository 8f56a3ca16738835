"""The `diverse` calibration subset: scikit-learn's k-means, one distinct prompt nearest each
centroid, the same for the same seed. (An existing run directory keeps the subset it stored:
tests/test_old_run.py resumes a run made with the earlier hand-written k-means byte for byte.)"""

from __future__ import annotations

import numpy as np

from persyn.stages.calibrate import kmeans_representatives


def _clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:4] * 5.0
    x = np.concatenate([c + rng.normal(scale=0.1, size=(25, 8)) for c in centres])
    return x, np.repeat(np.arange(4), 25)


def test_one_prompt_per_cluster_distinct_and_seeded():
    x, cluster = _clusters()
    picked = kmeans_representatives(x, 4, seed=0)
    assert len(set(picked)) == 4 and sorted(cluster[picked]) == [0, 1, 2, 3]
    assert kmeans_representatives(x, 4, seed=0) == picked  # deterministic for a seed
    many = kmeans_representatives(x, 30, seed=1)
    assert len(many) == len(set(many)) == 30  # each prompt once, even when centroids share one


def test_asking_for_all_prompts_takes_them_all():
    x, _ = _clusters()
    assert kmeans_representatives(x[:5], 5, seed=0) == [0, 1, 2, 3, 4]
    assert kmeans_representatives(x[:5], 9, seed=0) == [0, 1, 2, 3, 4]
