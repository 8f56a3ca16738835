"""Route-then-Generate against Generate-then-Select on the same prompts with the zoo teachers, and
the run store at pipeline scale.

    .venv/bin/python benchmarks/pipeline.py                         # defaults: a few minutes on 2 cores
    .venv/bin/python benchmarks/pipeline.py --prompts 48 --calibration 12 --max-new-tokens 32
    .venv/bin/python benchmarks/pipeline.py --skip-store            # the RtG/GtS part only

Both arms run in this process, one after the other, each on a fresh run directory (nothing shared
but the model files), with the demo's teachers (Qwen2.5-Coder-0.5B, Gemma-3-270M, SmolLM2-135M),
student SmolLM2-135M, answers for math and the Qwen judge for instructions:
- RtG: calibrate (C prompts x every teacher), score, train the router, route, generate (each other
  prompt once): C x T + (N - C) generations;
- GtS: every teacher answers every prompt and every response is scored (quality + learnability),
  then the best combined label is kept per prompt: N x T generations.
Printed: generations and wall time of each and their ratios. Then `benchmarks/store.py`'s
measurement at 1M rows (write and point-lookup rates), unless --skip-store.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Python puts this script's folder first on sys.path, and benchmarks/http.py would then shadow the
# standard library's `http` (torch imports it). Take the folder off; load store.py by path instead.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]


def _store_benchmark():
    import importlib.util

    spec = importlib.util.spec_from_file_location("persyn_store_benchmark", HERE / "store.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _arm(root: Path, name: str, n: int, calibration: int, max_new_tokens: int, gts: bool) -> dict:
    from persyn import Pipeline
    from persyn.demo.project import write_demo

    cfg_path = write_demo(
        root / name, n_prompts=n, calibration=n if gts else calibration, max_new_tokens=max_new_tokens
    )
    t0 = time.perf_counter()
    with Pipeline.from_config(cfg_path, progress=False) as pipe:
        stages = {}

        def timed(stage):
            t = time.perf_counter()
            out = getattr(pipe, stage)()
            stages[stage] = time.perf_counter() - t
            return out

        timed("calibrate")
        sc = timed("score")
        if gts:
            # Select: the best combined label per prompt among every teacher's response.
            t = time.perf_counter()
            labels = pipe.ctx.result("score").labels(sc.quality, sc.learnability)
            import numpy as np

            chosen = np.argmax(np.where(np.isnan(labels), -np.inf, labels), axis=1)
            stages["select"] = time.perf_counter() - t
            allocation = {t: int((chosen == j).sum()) for j, t in enumerate(pipe.ctx.teachers)}
        else:
            timed("train_router")
            r = timed("route")
            timed("generate")
            allocation = r.counts
        counts = pipe.store.response_counts()
    seconds = time.perf_counter() - t0
    return {
        "generations": sum(c["ok"] + c["error"] for c in counts),
        "failed": sum(c["error"] for c in counts),
        "completion_tokens": sum(c["completion_tokens"] for c in counts),
        "seconds": seconds,
        "stages": stages,
        "allocation": allocation,
    }


def run_pipeline_benchmark(n: int, calibration: int, max_new_tokens: int, workdir: str | None = None) -> dict:
    root = Path(tempfile.mkdtemp(prefix="persyn-pipeline-bench-", dir=workdir))
    try:
        # Load every model once before timing, so that neither arm pays the one-off conversion.
        from persyn.zoo import resolve_model

        for m in ("zoo:qwen2.5-coder-0.5b-instruct", "zoo:gemma3-270m", "zoo:smollm2-135m-instruct"):
            resolve_model(m)
        rtg = _arm(root, "rtg", n, calibration, max_new_tokens, gts=False)
        gts = _arm(root, "gts", n, calibration, max_new_tokens, gts=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "prompts": n,
        "calibration": calibration,
        "teachers": 3,
        "max_new_tokens": max_new_tokens,
        "rtg": rtg,
        "gts": gts,
        "generation_ratio_gts_over_rtg": gts["generations"] / rtg["generations"],
        "time_ratio_gts_over_rtg": gts["seconds"] / rtg["seconds"],
    }


def report(fig: dict) -> str:
    r, g = fig["rtg"], fig["gts"]

    def stages(d):
        return ", ".join(f"{k} {v:.0f}s" for k, v in d["stages"].items())

    return "\n".join(
        [
            f"Route-then-Generate vs Generate-then-Select: {fig['prompts']} prompts, {fig['calibration']} "
            f"calibration, {fig['teachers']} zoo teachers, max_new_tokens {fig['max_new_tokens']}",
            f"  RtG: {r['generations']} generations, {r['seconds']:.0f}s ({stages(r)})",
            f"       allocation {r['allocation']}",
            f"  GtS: {g['generations']} generations, {g['seconds']:.0f}s ({stages(g)})",
            f"       best-label picks {g['allocation']}",
            f"  GtS / RtG: {fig['generation_ratio_gts_over_rtg']:.2f}x generations, "
            f"{fig['time_ratio_gts_over_rtg']:.2f}x wall time",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--calibration", type=int, default=12)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--store-rows", type=int, default=1_000_000)
    ap.add_argument("--skip-store", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)

    fig = {
        "pipeline": run_pipeline_benchmark(args.prompts, args.calibration, args.max_new_tokens, args.workdir)
    }
    print(report(fig["pipeline"]), flush=True)
    if not args.skip_store:
        store = _store_benchmark()
        fig["store"] = store.run_store_benchmark(
            n_rows=args.store_rows, workdir=args.workdir, log=lambda m: None
        )
        print(store.report(fig["store"]))
    if args.json:
        print(json.dumps(fig, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
