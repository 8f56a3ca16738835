"""Capped routing speed at 100K prompts x 20 teachers, against baselines measured in the same run.

    .venv/bin/python benchmarks/routing.py                  # about a minute on 2 cores
    .venv/bin/python benchmarks/routing.py --prompts 20000

Importable: `run_routing_benchmark(...)` returns the figures. Baselines: plain argmax (what routing
costs without caps) and, on a 10K-prompt slice, the textbook exact method: the whole
transportation LP in HiGHS (what `route_prompts` replaces because it is too slow at full size).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from persyn.assignment import TeacherCap, route_prompts


def _full_lp(S: np.ndarray, caps: np.ndarray) -> float:
    import scipy.sparse as sp
    from scipy.optimize import linprog

    n, T = S.shape
    rows, cols = np.repeat(np.arange(n), T), np.tile(np.arange(T), n)
    A_eq = sp.csr_matrix((np.ones(n * T), (rows, np.arange(n * T))), shape=(n, n * T))
    A_ub = sp.csr_matrix((np.ones(n * T), (cols, np.arange(n * T))), shape=(T, n * T))
    # The fastest HiGHS setting measured for this LP (interior point; simplex took 4-11 s at 10K).
    res = linprog(
        -S.ravel(), A_ub=A_ub, b_ub=caps, A_eq=A_eq, b_eq=np.ones(n), bounds=(0, 1), method="highs-ipm"
    )
    return -res.fun


def _scenarios(n: int, T: int, rng: np.random.Generator):
    names = [f"t{i}" for i in range(T)]
    base = rng.normal(size=(n, T)) + np.linspace(1, 0, T)  # a gradient of teacher strength
    share = {t: TeacherCap(max_share=1.1 / T) for t in names}
    skew = base.copy()
    skew[:, 0] += 3  # one teacher everybody wants
    yield "shares 1.1/T", base, names, share, {}
    yield "one favourite, shares 1.1/T", skew, names, share, {}
    yield "ties (scores rounded to 0.1)", np.round(base, 1), names, share, {}
    cost = {t: float(T - i) for i, t in enumerate(names)}  # the strong teachers are dear
    yield (
        "budget 1/3 of all-strongest",
        base,
        names,
        {t: TeacherCap(max_share=0.3) for t in names},
        {"cost_per_prompt": cost, "budget": n * T / 3.0},
    )


def run_routing_benchmark(n: int = 100_000, T: int = 20, lp_slice: int = 10_000, log=print) -> dict:
    rng = np.random.default_rng(0)
    fig: dict = {"prompts": n, "teachers": T, "scenarios": {}}
    for label, S, names, caps, kw in _scenarios(n, T, rng):
        t0 = time.perf_counter()
        np.argmax(S, axis=1)
        t_argmax = time.perf_counter() - t0
        r = route_prompts(S, names, caps, **kw)
        fig["scenarios"][label] = {
            "seconds": r.seconds,
            "argmax_seconds": t_argmax,
            "method": r.method,
            "optimal": r.optimal,
            "relative_gap": r.gap / abs(r.total_score),
            "score_kept_vs_argmax": r.total_score / r.argmax_score,
        }
        log(f"  {label}: {r.seconds:.2f} s ({r.method}, {'optimal' if r.optimal else f'gap {r.gap:.3g}'})")
    # The exact textbook method on a slice, for scale.
    S = rng.normal(size=(lp_slice, T)) + np.linspace(1, 0, T)
    names = [f"t{i}" for i in range(T)]
    cap = int(lp_slice * 1.1 / T)
    t0 = time.perf_counter()
    best = _full_lp(S, np.full(T, cap))
    t_lp = time.perf_counter() - t0
    r = route_prompts(S, names, {t: TeacherCap(max_generations=cap) for t in names})
    assert abs(r.total_score - best) < 1e-6 * abs(best), (r.total_score, best)
    fig["slice"] = {
        "prompts": lp_slice,
        "full_lp_seconds": t_lp,
        "route_seconds": r.seconds,
        "speedup": t_lp / r.seconds,
        "same_optimum": True,
    }
    return fig


def report(fig: dict) -> str:
    lines = [f"capped routing, {fig['prompts']:,} prompts x {fig['teachers']} teachers"]
    for label, f in fig["scenarios"].items():
        how = "optimal" if f["optimal"] else f"relative gap {f['relative_gap']:.1e}"
        lines.append(
            f"  {label:32s} {f['seconds']:6.2f} s  ({f['method']}, {how}; argmax alone "
            f"{f['argmax_seconds'] * 1000:.0f} ms; {f['score_kept_vs_argmax']:.1%} of the argmax score)"
        )
    s = fig["slice"]
    lines.append(
        f"  {s['prompts']:,}-prompt slice: full HiGHS LP {s['full_lp_seconds']:.2f} s, route_prompts "
        f"{s['route_seconds']:.2f} s (x{s['speedup']:.1f}), same optimum"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=100_000)
    ap.add_argument("--teachers", type=int, default=20)
    args = ap.parse_args(argv)
    print(report(run_routing_benchmark(args.prompts, args.teachers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
