"""Route every prompt to one teacher: argmax of the router's scores, or the best assignment under caps.

    r = route_prompts(scores, ["qwen", "gemma", "big"],
                      caps={"big": TeacherCap(max_share=0.1)},
                      cost_per_prompt={"qwen": 0.01, "gemma": 0.01, "big": 0.3}, budget=2000.0)
    r.assigned()     # one teacher name per prompt
    r.summary()      # counts, costs, how close to the unconstrained optimum, optimality

`scores` is the router's n_prompts x n_teachers matrix (higher = better). The result maximises the
total score of the chosen teachers subject to:
- per teacher: `max_share` (of all prompts), `max_generations` (a count), `max_cost` (needs that
  teacher's `cost_per_prompt`); with a constant cost per prompt, a cost cap is the count cap
  floor(max_cost / cost_per_prompt), so all three become one count cap per teacher;
- overall: `budget` on the total cost (needs every teacher's `cost_per_prompt`).

Optimality, honestly:
- No binding cap: plain argmax (ties go to the earlier teacher). Exact.
- Count caps (shares, counts, per-teacher costs): exact. It is a transportation problem (a
  min-cost flow; its LP is totally unimodular). The full LP is too slow at 100K x 20 (HiGHS on 2
  cores: 87 s interior point, 216 s simplex), so: (1) approximate dual prices, one per teacher,
  from an entropy-smoothed dual minimised with L-BFGS-B; (2) every prompt whose best teacher under
  those prices wins by a clear margin keeps it, and the near-ties are solved as a small LP (HiGHS
  interior point with crossover: a vertex, hence integral); (3) a certificate: an assignment is
  optimal iff the residual graph over teachers has no negative cycle (Bellman-Ford on T+1 nodes);
  each cycle found is cancelled (a strict improvement), and if many are found the near-tie set is
  widened, up to the full LP. The result is optimal to float tolerance whatever the quality of
  steps 1-2, which only make step 3 short. `RoutingResult.optimal` is True.
- An overall budget couples the teachers with one more constraint, and the problem is then no
  longer totally unimodular. The same smoothed dual (with one more price for the budget) and a
  small LP with a budget row give a near-optimal assignment; the few prompts the LP splits between
  teachers are rounded to the cheaper side, any overspend is repaired by moving prompts to cheaper
  teachers, and leftover budget is spent on the best single upgrades. The result is always within
  the caps and the budget; `upper_bound` is a proven bound from LP duality (any non-negative prices
  give one) and `gap = upper_bound - total_score`. `optimal` is True only when the gap is ~0.

Determinism: the same inputs give the same assignment (no randomness; HiGHS is deterministic).
Measured on 2 cores, 100K prompts x 20 teachers: 1.5-3 s typically, 14 s when thousands of prompts
have exactly tied scores (benchmarks/routing.py; figures in docs/store.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from persyn.errors import PersynError

__all__ = [
    "RoutingInfeasibleError",
    "RoutingResult",
    "TeacherCap",
    "cost_per_prompt",
    "route_prompts",
]


class RoutingInfeasibleError(PersynError, ValueError):
    """The caps or the budget cannot cover every prompt. `shortfall`: by how much (prompts, or
    cost units for a budget)."""

    def __init__(self, message: str, shortfall: float):
        super().__init__(message)
        self.shortfall = shortfall


@dataclass(frozen=True)
class TeacherCap:
    """Limits on one teacher (any combination; None = no limit). Same fields as the config's
    `routing.caps.<teacher>`."""

    max_share: float | None = None  # fraction of all prompts, in (0, 1]
    max_generations: int | None = None
    max_cost: float | None = None  # needs the teacher's cost_per_prompt

    def __post_init__(self) -> None:
        if self.max_share is not None and not 0.0 <= self.max_share <= 1.0:
            raise ValueError(f"max_share must be in [0, 1], got {self.max_share}")
        if self.max_generations is not None and self.max_generations < 0:
            raise ValueError(f"max_generations must be >= 0, got {self.max_generations}")
        if self.max_cost is not None and self.max_cost < 0:
            raise ValueError(f"max_cost must be >= 0, got {self.max_cost}")


def cost_per_prompt(
    prompt_tokens: float, completion_tokens: float, input_per_1k: float, output_per_1k: float
) -> float:
    """Expected cost of one generation: expected tokens x price per 1K tokens (the config's
    `cost_per_1k_tokens: {input, output}`); token means can come from the calibration responses."""
    return prompt_tokens / 1000.0 * input_per_1k + completion_tokens / 1000.0 * output_per_1k


@dataclass
class RoutingResult:
    teachers: list[str]
    #: Teacher index per prompt (int64, length n).
    assignment: np.ndarray
    counts: dict[str, int]
    #: Effective count cap per teacher (None: unlimited) and which limit set it.
    caps: dict[str, int | None]
    cap_reasons: dict[str, str]
    total_score: float
    #: Total score of the plain argmax (what the caps cost: argmax_score - total_score).
    argmax_score: float
    #: A proven upper bound on the best total any assignment within the limits can reach.
    upper_bound: float
    optimal: bool
    method: str  # "argmax" | "capped" | "budget"
    costs: dict[str, float] | None = None
    total_cost: float | None = None
    budget: float | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        return max(0.0, self.upper_bound - self.total_score)

    @property
    def binding(self) -> list[str]:
        """Teachers filled up to their cap."""
        return [t for t in self.teachers if self.caps[t] is not None and self.counts[t] >= self.caps[t]]

    def assigned(self) -> list[str]:
        """The teacher name of each prompt."""
        return [self.teachers[i] for i in self.assignment]

    def summary(self) -> str:
        n = len(self.assignment)
        parts = [f"{t} {self.counts[t]} ({self.counts[t] / max(n, 1):.1%})" for t in self.teachers]
        lines = [f"routed {n} prompts ({self.method}): " + ", ".join(parts)]
        if self.method != "argmax":
            lines.append(
                f"total score {self.total_score:.4g} vs {self.argmax_score:.4g} unconstrained"
                + (", optimal" if self.optimal else f", within {self.gap:.3g} of the optimum (bound)")
            )
        if self.binding:
            lines.append("at cap: " + ", ".join(f"{t} ({self.cap_reasons[t]})" for t in self.binding))
        if self.total_cost is not None:
            lines.append(
                f"cost {self.total_cost:.4g}"
                + (f" of budget {self.budget:.4g}" if self.budget is not None else "")
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (no per-prompt arrays) for the report and the store's route meta."""
        return {
            "method": self.method,
            "teachers": self.teachers,
            "counts": self.counts,
            "caps": self.caps,
            "cap_reasons": self.cap_reasons,
            "total_score": self.total_score,
            "argmax_score": self.argmax_score,
            "upper_bound": self.upper_bound,
            "gap": self.gap,
            "optimal": self.optimal,
            "costs": self.costs,
            "total_cost": self.total_cost,
            "budget": self.budget,
            "seconds": self.seconds,
            "info": self.info,
        }


# ----------------------------------------------------------------------------- entry point


def route_prompts(
    scores: np.ndarray,
    teachers: Sequence[str],
    caps: Mapping[str, TeacherCap] | None = None,
    *,
    cost_per_prompt: Mapping[str, float] | None = None,
    budget: float | None = None,
) -> RoutingResult:
    """Assign each prompt to exactly one teacher, maximising the total score within the limits
    (see the module doc for what is exact and what is bounded).

    Raises `RoutingInfeasibleError` when the caps or the budget cannot cover every prompt (the
    message says by how much), `ValueError` for malformed input (non-finite scores, unknown
    teacher names, a cost limit without a cost).
    """
    t0 = time.perf_counter()
    S = np.asarray(scores, dtype=np.float64)
    names = list(teachers)
    if S.ndim != 2 or S.shape[1] != len(names):
        raise ValueError(f"scores must be n_prompts x {len(names)} teachers, got shape {S.shape}")
    if len(set(names)) != len(names):
        raise ValueError(f"teacher names repeat: {names}")
    if not np.isfinite(S).all():
        bad = np.argwhere(~np.isfinite(S))[0]
        raise ValueError(
            f"scores must be finite; prompt {bad[0]} teacher {names[bad[1]]!r} is {S[tuple(bad)]}"
        )
    caps = dict(caps or {})
    costs_map = dict(cost_per_prompt or {})
    for label, mapping in (("caps", caps), ("cost_per_prompt", costs_map)):
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise ValueError(f"{label} name unknown teacher(s) {unknown}; teachers are {names}")
    n, T = S.shape

    cost = None
    needs_cost = budget is not None or any(c.max_cost is not None for c in caps.values())
    if needs_cost or costs_map:
        missing = (
            [t for t in names if t not in costs_map]
            if budget is not None
            else [t for t, c in caps.items() if c.max_cost is not None and t not in costs_map]
        )
        if missing:
            why = "a budget" if budget is not None else "max_cost"
            raise ValueError(f"{why} needs cost_per_prompt for teacher(s) {missing}")
        cost = np.array([float(costs_map.get(t, 0.0)) for t in names])
        if (cost < 0).any() or not np.isfinite(cost).all():
            raise ValueError(
                f"cost_per_prompt must be finite and >= 0, got {dict(zip(names, cost, strict=True))}"
            )

    cap, reasons = _count_caps(names, caps, cost, n)
    _check_feasible(names, cap, reasons, n)
    if budget is not None:
        assert cost is not None
        _check_budget(names, cap, cost, float(budget), n)

    a0 = np.argmax(S, axis=1) if n else np.zeros(0, dtype=np.int64)
    argmax_score = float(S[np.arange(n), a0].sum())
    eff_cap = np.where(cap < 0, n, cap)
    counts0 = np.bincount(a0, minlength=T)
    info: dict[str, Any] = {}
    within_budget = budget is None or float(cost @ counts0) <= budget + _cost_tol(cost, n)
    if (counts0 <= eff_cap).all() and within_budget:
        a, bound, method, optimal = a0, argmax_score, "argmax", True
    else:
        a, info = (a0, {}) if (counts0 <= eff_cap).all() else _solve_capped(S, eff_cap)
        method, optimal = "capped", True
        bound = float(S[np.arange(n), a].sum())
        if budget is not None and float(cost @ np.bincount(a, minlength=T)) > budget + _cost_tol(cost, n):
            a, bound, binfo = _solve_budget(S, eff_cap, cost, float(budget))
            info.update(binfo)
            method = "budget"
            total = float(S[np.arange(n), a].sum())
            optimal = bound - total <= 1e-9 * max(1.0, abs(total))

    a = a.astype(np.int64)
    counts_arr = np.bincount(a, minlength=T)
    total = float(S[np.arange(n), a].sum())
    result = RoutingResult(
        teachers=names,
        assignment=a,
        counts={t: int(c) for t, c in zip(names, counts_arr, strict=True)},
        caps={t: (None if c < 0 else int(c)) for t, c in zip(names, cap, strict=True)},
        cap_reasons=reasons,
        total_score=total,
        argmax_score=argmax_score,
        upper_bound=max(bound, total),
        optimal=optimal,
        method=method,
        costs=None
        if cost is None
        else {t: float(c * k) for t, c, k in zip(names, cost, counts_arr, strict=True)},
        total_cost=None if cost is None else float(cost @ counts_arr),
        budget=budget,
        info=info,
    )
    result.seconds = time.perf_counter() - t0
    return result


# ----------------------------------------------------------------------------- limits


def _count_caps(
    names: list[str], caps: Mapping[str, TeacherCap], cost: np.ndarray | None, n: int
) -> tuple[np.ndarray, dict[str, str]]:
    """One count cap per teacher (-1 = none) and a readable reason for each."""
    cap = np.full(len(names), -1, dtype=np.int64)
    reasons = {t: "no cap" for t in names}
    for j, t in enumerate(names):
        c = caps.get(t)
        if c is None:
            continue
        options: list[tuple[int, str]] = []
        if c.max_share is not None:
            # The epsilon keeps 0.1 * 1000 from flooring to 99.
            options.append((math.floor(c.max_share * n + 1e-9), f"max_share {c.max_share:g}"))
        if c.max_generations is not None:
            options.append((int(c.max_generations), f"max_generations {c.max_generations}"))
        if c.max_cost is not None:
            assert cost is not None
            if cost[j] > 0:
                k = math.floor(c.max_cost / cost[j] * (1 + 1e-12) + 1e-9)
                options.append((k, f"max_cost {c.max_cost:g} at {cost[j]:g} per prompt"))
        if options:
            k, why = min(options)
            cap[j] = max(k, 0)
            reasons[t] = why
    return cap, reasons


def _check_feasible(names: list[str], cap: np.ndarray, reasons: dict[str, str], n: int) -> None:
    if (cap < 0).any():
        return
    room = int(cap.sum())
    if room < n:
        detail = ", ".join(f"{t} {int(c)} ({reasons[t]})" for t, c in zip(names, cap, strict=True))
        raise RoutingInfeasibleError(
            f"the caps allow at most {room} of the {n} prompts (short by {n - room}); raise or drop a cap. "
            f"Caps: {detail}",
            n - room,
        )


def _min_cost(cap: np.ndarray, cost: np.ndarray, n: int) -> float:
    """Cheapest cost of covering n prompts within the caps: fill the cheapest teachers first."""
    left, total = n, 0.0
    for j in np.argsort(cost, kind="stable"):
        take = left if cap[j] < 0 else min(left, int(cap[j]))
        total += take * cost[j]
        left -= take
        if left == 0:
            break
    return total


def _check_budget(names: list[str], cap: np.ndarray, cost: np.ndarray, budget: float, n: int) -> None:
    need = _min_cost(cap, cost, n)
    if need > budget + _cost_tol(cost, n):
        raise RoutingInfeasibleError(
            f"the budget {budget:g} cannot cover the {n} prompts: the cheapest assignment within the caps "
            f"costs {need:g} (short by {need - budget:g}). Costs per prompt: "
            + ", ".join(f"{t} {c:g}" for t, c in zip(names, cost, strict=True)),
            need - budget,
        )


def _cost_tol(cost: np.ndarray, n: int) -> float:
    return 1e-9 * max(1.0, float(cost.max(initial=0.0)) * max(n, 1))


# ----------------------------------------------------------------------------- count caps (exact)


def _smoothed_prices(
    S: np.ndarray,
    cap: np.ndarray,
    cost: np.ndarray | None = None,
    budget: float | None = None,
    p0: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Approximate optimal dual prices (one per teacher, plus one for the budget) by minimising the
    entropy-smoothed LP dual  tau * sum_i logsumexp((s_i - p - lam*c) / tau) + cap.p + lam*B  over
    p, lam >= 0, for a decreasing tau. Returns (p, lam) in the units of S."""
    from scipy.optimize import minimize

    n, T = S.shape
    scale = float(S.std()) or 1.0
    Sn = (S - S.mean()) / scale
    use_budget = budget is not None and cost is not None and cost.max(initial=0.0) > 0
    cs = float(cost.max()) if use_budget else 1.0
    cn = cost / cs if use_budget else None
    bn = budget / cs if use_budget else 0.0
    dim = T + (1 if use_budget else 0)
    x = np.zeros(dim) if p0 is None else np.asarray(p0, dtype=np.float64) / scale
    capf = cap.astype(np.float64)

    for tau in (1e-1, 1e-2, 2e-3):

        def f(x: np.ndarray, tau: float = tau) -> tuple[float, np.ndarray]:
            shift = x[:T] if not use_budget else x[:T] + x[T] * cn
            Z = Sn - shift  # in place from here on: this runs ~100 times on an n x T matrix
            Z *= 1.0 / tau
            m = Z.max(axis=1)
            Z -= m[:, None]
            np.exp(Z, out=Z)
            s = Z.sum(axis=1)
            val = tau * float((m + np.log(s)).sum()) + float(capf @ x[:T])
            colsum = (1.0 / s) @ Z  # sum over prompts of the softmax
            g = np.empty(dim)
            g[:T] = capf - colsum
            if use_budget:
                val += x[T] * bn
                g[T] = bn - float(colsum @ cn)
            return val, g

        # Loose tolerances: the prices only seed the exact steps that follow.
        res = minimize(
            f,
            x,
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, None)] * dim,
            options={"maxiter": 60, "gtol": 1e-6 * n},
        )
        x = res.x
    p = x[:T] * scale
    lam = float(x[T]) * scale / cs if use_budget else 0.0
    return p, lam


def _lp(
    S: np.ndarray,
    res_cap: np.ndarray,
    cost: np.ndarray | None = None,
    res_budget: float | None = None,
    mask: np.ndarray | None = None,
    method: str = "highs-ds",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, float]] | None:
    """Solve the assignment LP for the prompts of S (rows) within `res_cap` (and `res_budget` if
    given) with HiGHS dual simplex (a vertex: integral when there is no budget row). Returns the
    non-zero entries as (prompt index, teacher index, value), and the duals (cap prices >= 0,
    budget price); None if infeasible."""
    import scipy.sparse as sp
    from scipy.optimize import linprog

    m, T = S.shape
    if m == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0), (np.zeros(T), 0.0)
    if mask is None:
        rows = np.repeat(np.arange(m), T)
        tcol = np.tile(np.arange(T), m)
    else:
        rows, tcol = np.nonzero(mask)
    k = len(rows)
    A_eq = sp.csr_matrix((np.ones(k), (rows, np.arange(k))), shape=(m, k))
    ub_rows, ub_vals, ub_cols = [tcol], [np.ones(k)], [np.arange(k)]
    b_ub = [res_cap.astype(np.float64)]
    if res_budget is not None:
        ub_rows.append(np.full(k, T))
        ub_vals.append(cost[tcol])
        ub_cols.append(np.arange(k))
        b_ub.append(np.array([res_budget]))
    n_ub = T + (1 if res_budget is not None else 0)
    A_ub = sp.csr_matrix(
        (np.concatenate(ub_vals), (np.concatenate(ub_rows), np.concatenate(ub_cols))), shape=(n_ub, k)
    )
    res = linprog(
        -S[rows, tcol],
        A_ub=A_ub,
        b_ub=np.concatenate(b_ub),
        A_eq=A_eq,
        b_eq=np.ones(m),
        bounds=(0, None),
        method=method,
    )
    if res.status != 0:
        return None
    x = res.x
    nz = x > 1e-9
    duals = -np.asarray(res.ineqlin.marginals)
    return rows[nz], tcol[nz], x[nz], (duals[:T], float(duals[T]) if res_budget is not None else 0.0)


def _free_set(V: np.ndarray, a: np.ndarray, cap: np.ndarray, delta: float) -> np.ndarray:
    """Prompts to re-solve exactly: near-ties under prices (margin <= delta), plus, for any teacher
    whose clear winners exceed its cap, its narrowest wins until the rest fits."""
    n, T = V.shape
    if T == 1:
        return np.zeros(n, dtype=bool)
    part = np.partition(V, T - 2, axis=1)
    margin = part[:, T - 1] - part[:, T - 2]
    free = margin <= delta
    fixed_counts = np.bincount(a[~free], minlength=T)
    for t in np.flatnonzero(fixed_counts > cap):
        idx = np.flatnonzero((a == t) & ~free)
        over = fixed_counts[t] - cap[t]
        # stable order: lowest margin first, then prompt index
        free[idx[np.lexsort((idx, margin[idx]))[:over]]] = True
    return free


def _solve_capped(S: np.ndarray, cap: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Exact maximum-score assignment under count caps (`cap[t] >= 0` for all t; sum >= n)."""
    n, T = S.shape
    scale = float(S.std()) or 1.0
    info: dict[str, Any] = {}
    t0 = time.perf_counter()
    p, _ = _smoothed_prices(S, cap)
    info["prices_s"] = round(time.perf_counter() - t0, 3)
    V = S - p
    a = np.argmax(V, axis=1)
    # Widen the exactly-solved set only if the certificate keeps finding improvements; the last
    # round (delta = inf) is the full LP and then cancels cycles without limit, so it always ends.
    for delta in (2e-3 * scale, 2e-2 * scale, 2e-1 * scale, math.inf):
        t1 = time.perf_counter()
        free = _free_set(V, a, cap, delta)
        cand = _assign_free(S, V, a, cap, free, delta)
        if cand is None:
            continue
        info.update(free_prompts=int(free.sum()), lp_s=round(time.perf_counter() - t1, 3))
        t2 = time.perf_counter()
        done, cancelled = _cancel_negative_cycles(S, cand, cap, max_cycles=None if math.isinf(delta) else 20)
        info.update(cycles_cancelled=cancelled, certify_s=round(time.perf_counter() - t2, 3))
        if done:
            return cand, info
        a = cand
    raise AssertionError("unreachable: the full LP plus cycle cancelling always ends optimal")


def _candidate_mask(V: np.ndarray, delta: float) -> np.ndarray | None:
    """Teachers worth offering a prompt in the small LP: its two best under the prices and any
    within 2*delta of the best (None: all). Leaving a column out can cost optimality only until
    the certificate, which sees every column, finds and cancels the cycle that uses it."""
    m, T = V.shape
    if math.isinf(delta) or T <= 2:
        return None
    top2 = np.argpartition(-V, 1, axis=1)[:, :2]
    mask = V >= V.max(axis=1, keepdims=True) - 2 * delta
    mask[np.arange(m)[:, None], top2] = True
    return mask


def _assign_free(
    S: np.ndarray, V: np.ndarray, a: np.ndarray, cap: np.ndarray, free: np.ndarray, delta: float
) -> np.ndarray | None:
    """`a` with the free prompts re-assigned by the LP (None if the LP is infeasible)."""
    n, T = S.shape
    out = a.copy()
    idx = np.flatnonzero(free)
    if len(idx) == 0:
        return out if (np.bincount(out, minlength=T) <= cap).all() else None
    res_cap = cap - np.bincount(a[~free], minlength=T)
    if (res_cap < 0).any():
        return None
    # Small sets get every column; a big one (many exact ties) first tries the likely ones.
    mask = _candidate_mask(V[idx], delta) if len(idx) * T > 200_000 else None
    for cols in [mask, None] if mask is not None else [None]:
        # Interior point + crossover is much faster than simplex on these (measured: 1.4 s vs
        # 36 s on 5K tied prompts x 20); both end on a vertex, which is integral here.
        sol = _lp(S[idx], res_cap, mask=cols, method="highs-ipm")
        if sol is not None and not np.allclose(sol[2], 1.0, atol=1e-7):
            sol = _lp(S[idx], res_cap, mask=cols, method="highs-ds")
        if sol is None:
            continue
        r, t, x, _ = sol
        # per prompt, its largest share (all shares are 1 at a vertex)
        rr, tt = _first_per_row(r, t, np.lexsort((-x, r)))
        out[idx[rr]] = tt
        if (np.bincount(out, minlength=T) <= cap).all():
            return out
        out = a.copy()
    return None


def _first_per_row(r: np.ndarray, t: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For LP entries (row r, teacher t) sorted by `order` (rows grouped), the first entry of each row."""
    r, t = r[order], t[order]
    first = np.ones(len(r), dtype=bool)
    first[1:] = r[1:] != r[:-1]
    return r[first], t[first]


def _cancel_negative_cycles(
    S: np.ndarray, a: np.ndarray, cap: np.ndarray, max_cycles: int | None
) -> tuple[bool, int]:
    """Optimality certificate for count caps, improving `a` in place: while the residual graph
    over teachers has a negative cycle, move one prompt along each of its edges. Returns
    (optimal, cycles cancelled); stops early (not optimal) after `max_cycles`."""
    n, T = S.shape
    tol = 1e-9 * max(1.0, float(np.abs(S).max(initial=0.0)))
    cancelled = 0
    while max_cycles is None or cancelled < max_cycles:
        W, arg = _move_costs(S, a)
        counts = np.bincount(a, minlength=T)
        # Node T is the sink: t -> sink if t has room (it can take one more), sink -> t if t has any.
        N = T + 1
        G = np.full((N, N), np.inf)
        G[:T, :T] = W
        np.fill_diagonal(G, np.inf)
        G[:T, T] = np.where(counts < cap, 0.0, np.inf)
        G[T, :T] = np.where(counts > 0, 0.0, np.inf)
        cycle = _negative_cycle(G, tol)
        if cycle is None:
            return True, cancelled
        for u, v in zip(cycle, cycle[1:] + cycle[:1], strict=True):
            if u < T and v < T:
                a[arg[u, v]] = v
        cancelled += 1
    return False, cancelled


def _move_costs(S: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W[u, v]: the least score lost by moving one prompt from teacher u to v; arg[u, v]: which."""
    n, T = S.shape
    loss = S[np.arange(n), a][:, None] - S
    W = np.full((T, T), np.inf)
    arg = np.zeros((T, T), dtype=np.int64)
    order = np.argsort(a, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(a, minlength=T))]
    for u in range(T):
        members = order[bounds[u] : bounds[u + 1]]
        if len(members):
            sub = loss[members]
            j = np.argmin(sub, axis=0)  # first minimum: the earliest prompt, deterministically
            W[u] = sub[j, np.arange(T)]
            arg[u] = members[j]
    return W, arg


def _negative_cycle(G: np.ndarray, tol: float) -> list[int] | None:
    """A cycle of total weight < -tol in the dense graph G (inf = no edge), or None.

    Bellman-Ford from a virtual source joined to every node, relaxing all edges at once, and
    looking for a cycle among the predecessor pointers after each round: with strict (> tol)
    improvements, any such cycle is negative (the last-updated node on it makes one edge strictly
    tight), and one appears whenever a negative cycle exists, because relaxation never stops."""
    N = len(G)
    dist = np.zeros(N)
    pred = np.full(N, -1)
    for _ in range(4 * N + 4):
        cand = dist[:, None] + G
        src = np.argmin(cand, axis=0)
        best = cand[src, np.arange(N)]
        upd = best < dist - tol
        if not upd.any():
            return None
        dist = np.where(upd, best, dist)
        pred = np.where(upd, src, pred)
        cycle = _pred_cycle(pred)
        if cycle is not None:
            weight = sum(G[u, v] for u, v in zip(cycle, cycle[1:] + cycle[:1], strict=True))
            if weight < -tol:
                return cycle
    raise AssertionError("Bellman-Ford kept relaxing without exposing a negative cycle")


def _pred_cycle(pred: np.ndarray) -> list[int] | None:
    """A cycle of the predecessor graph, listed along its edges (u -> v means pred[v] == u)."""
    N = len(pred)
    state = np.zeros(N, dtype=np.int8)  # 0 unseen, 1 on the current walk, 2 done
    for start in range(N):
        walk = []
        v = start
        while v >= 0 and state[v] == 0:
            state[v] = 1
            walk.append(v)
            v = int(pred[v])
        if v >= 0 and state[v] == 1:  # closed a loop on this walk
            loop = walk[walk.index(v) :]
            loop.reverse()  # the walk follows pred backwards
            return loop
        for w in walk:
            state[w] = 2
    return None


# ----------------------------------------------------------------------------- budget (bounded)


def _dual_bound(
    S: np.ndarray, cap: np.ndarray, cost: np.ndarray, budget: float, p: np.ndarray, lam: float
) -> float:
    """LP-duality upper bound: for any p >= 0, lam >= 0,
    sum_i max_t (s_it - p_t - lam c_t) + cap.p + lam B  >=  the best total within caps and budget."""
    p = np.maximum(p, 0.0)
    lam = max(lam, 0.0)
    return float((S - p - lam * cost).max(axis=1).sum() + cap @ p + lam * budget)


def _solve_budget(
    S: np.ndarray, cap: np.ndarray, cost: np.ndarray, budget: float
) -> tuple[np.ndarray, float, dict[str, Any]]:
    n, T = S.shape
    scale = float(S.std()) or 1.0
    info: dict[str, Any] = {}
    p, lam = _smoothed_prices(S, cap, cost, budget)
    V = S - p - lam * cost
    a = np.argmax(V, axis=1)
    bound = _dual_bound(S, cap, cost, budget, p, lam)
    tol = _cost_tol(cost, n)
    for delta in (2e-3 * scale, 2e-2 * scale, 2e-1 * scale, math.inf):
        free = _free_set(V, a, cap, delta)
        idx = np.flatnonzero(free)
        res_cap = cap - np.bincount(a[~free], minlength=T)
        res_budget = budget - float(cost @ np.bincount(a[~free], minlength=T))
        if (res_cap < 0).any() or res_budget < -tol:
            continue
        sol = _lp(S[idx], res_cap, cost, res_budget + tol, method="highs-ipm")
        if sol is None:
            continue
        r, t, x, (q, mu) = sol
        info.update(free_prompts=len(idx), split_prompts=int(len(r) - len(np.unique(r))))
        # Prices from the small LP are also valid global duals; keep the better bound.
        bound = min(bound, _dual_bound(S, cap, cost, budget, q, mu))
        out = a.copy()
        # Split prompts go to their cheapest share (never raises the LP's cost).
        rr, tt = _first_per_row(r, t, np.lexsort((t, cost[t], r)))
        out[idx[rr]] = tt
        out = _repair(S, out, cap, cost, budget, tol)
        out, upgrades = _upgrade(S, out, cap, cost, budget, tol)
        info["upgrades"] = upgrades
        return out, bound, info
    raise AssertionError("unreachable: the full LP is feasible when the budget check passed")


def _repair(
    S: np.ndarray, a: np.ndarray, cap: np.ndarray, cost: np.ndarray, budget: float, tol: float
) -> np.ndarray:
    """Move prompts to cheaper teachers with room (least score lost per cost saved) until the caps
    and the budget hold. Terminates: while over budget some cheaper teacher has room, else the
    counts would be the cheapest possible ones, which fit the budget."""
    n, T = S.shape
    a = a.copy()
    rows = np.arange(n)
    while True:
        counts = np.bincount(a, minlength=T)
        over_cap = counts > cap
        spend = float(cost @ counts)
        if not over_cap.any() and spend <= budget + tol:
            return a
        room = counts < cap
        saving = cost[a][:, None] - cost[None, :]
        loss = S[rows, a][:, None] - S
        ok = room[None, :] & (over_cap[a][:, None] | (saving > 0))
        if over_cap.any():
            ok &= over_cap[a][:, None]
            key = np.where(ok, loss, np.inf)
        else:
            key = np.where(ok & (saving > 0), loss / np.where(saving > 0, saving, 1.0), np.inf)
        i, t = np.unravel_index(np.argmin(key), key.shape)
        if not np.isfinite(key[i, t]):
            raise AssertionError("no repair move found")
        a[i] = t


def _upgrade(
    S: np.ndarray,
    a: np.ndarray,
    cap: np.ndarray,
    cost: np.ndarray,
    budget: float,
    tol: float,
    max_moves: int = 1000,
) -> tuple[np.ndarray, int]:
    """Spend leftover budget: repeatedly make the single move with the largest score gain that
    fits the caps and the budget."""
    n, T = S.shape
    rows = np.arange(n)
    moves = 0
    while moves < max_moves:
        counts = np.bincount(a, minlength=T)
        slack = budget - float(cost @ counts) + tol
        gain = S - S[rows, a][:, None]
        extra = cost[None, :] - cost[a][:, None]
        ok = (counts < cap)[None, :] & (extra <= slack) & (gain > 1e-12 * max(1.0, float(np.abs(S).max())))
        if not ok.any():
            break
        i, t = np.unravel_index(np.argmax(np.where(ok, gain, -np.inf)), gain.shape)
        a[i] = t
        moves += 1
    return a, moves
