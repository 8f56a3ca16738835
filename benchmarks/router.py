"""Router speed and memory: training on 2,500 prompts x 8 teachers, routing 10,000 prompts.

Prints, measured side by side in one run:
- training: embedding the calibration prompts (MiniLM, once) and training the BT head;
- routing throughput with embedding included (prompts/s), against bare MiniLM encoding of the same
  prompts (the floor: routing can only add the head on top). The two are timed in alternating
  chunks so that a busy machine slows both alike and the ratio stays meaningful;
- routing throughput with embeddings already cached (the head alone);
- peak resident memory after each phase.

    .venv/bin/python benchmarks/router.py            # the full sizes (a few minutes on 2 cores)
    .venv/bin/python benchmarks/router.py --quick    # 1,000 prompts to route, 500 to train on
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from persyn.router.encoders import MemoryEmbeddingCache, embed_prompts, load_encoder
from persyn.router.model import TrainConfig, train_router
from persyn.scoring.labels import combine_labels, make_pairs

# The synthetic calibration data lives with the tests that also use it (not in the package).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from synthetic_router import distinct_prompts, make_synthetic  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-route", type=int, default=10_000)
    ap.add_argument("--n-train", type=int, default=2_500)
    ap.add_argument("--teachers", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=1_000, help="prompts per alternating timing chunk")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.n_route, args.n_train, args.chunk = 1_000, 500, 250

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    t = time.perf_counter()
    encoder = load_encoder("zoo:minilm-l6-v2")
    print(f"load MiniLM: {time.perf_counter() - t:.1f}s, peak RSS {peak_rss_mb():.0f} MB")

    # --- training: 2,500 prompts x 8 teachers
    data = make_synthetic(n_prompts=args.n_train, n_teachers=args.teachers, n_topics=8, seed=0)
    labels = combine_labels(data.quality, data.learnability, alpha=0.4)
    n_pairs = len(make_pairs(labels))
    router, report = train_router(
        data.prompts, labels, data.teachers, encoder=encoder, config=TrainConfig(seed=0)
    )
    print(
        f"train on {args.n_train} prompts x {args.teachers} teachers ({n_pairs} pairs): "
        f"embed {report.embed_seconds:.1f}s + head {report.train_seconds:.1f}s "
        f"({report.epochs} epochs, {report.steps} steps, best epoch {report.best_epoch}, "
        f"val pair accuracy {report.val_pair_accuracy:.3f}); peak RSS {peak_rss_mb():.0f} MB"
    )

    # --- routing 10,000 new prompts, embedding included, against bare MiniLM encoding
    prompts = distinct_prompts(args.n_route, seed=1)
    router.cache = MemoryEmbeddingCache()  # empty: every prompt is encoded once while routing
    t_route = t_encode = 0.0
    routes: list[str] = []
    for k, s in enumerate(range(0, len(prompts), args.chunk)):
        chunk = prompts[s : s + args.chunk]
        # Alternate which goes first, so neither side always runs on a warmer machine.
        for side in ("encode", "route") if k % 2 == 0 else ("route", "encode"):
            t = time.perf_counter()
            if side == "encode":
                encoder.embed(chunk)
                t_encode += time.perf_counter() - t
            else:
                routes += router.route(chunk)
                t_route += time.perf_counter() - t
    n = len(prompts)
    print(
        f"route {n} prompts (embedding included): {n / t_route:.0f} prompts/s ({t_route:.1f}s); "
        f"bare MiniLM encoding: {n / t_encode:.0f} prompts/s ({t_encode:.1f}s); "
        f"ratio routing/encoding {t_encode / t_route:.2f}; peak RSS {peak_rss_mb():.0f} MB"
    )

    # --- the head alone, embeddings cached
    t = time.perf_counter()
    again = router.route(prompts)
    t_cached = time.perf_counter() - t
    assert again == routes, "routing is not deterministic"
    emb = embed_prompts(encoder, prompts, router.cache)
    t = time.perf_counter()
    router.scores(prompts, embeddings=emb)
    t_head = time.perf_counter() - t
    counts = np.unique(routes, return_counts=True)
    print(
        f"route {n} prompts from the embedding cache: {n / t_cached:.0f} prompts/s; "
        f"head only (embeddings in hand): {n / t_head:.0f} prompts/s; peak RSS {peak_rss_mb():.0f} MB"
    )
    print("allocation:", dict(zip(counts[0].tolist(), counts[1].tolist(), strict=True)))


if __name__ == "__main__":
    main()
