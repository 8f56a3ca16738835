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
have exactly tied scores (benchmarks/routing.py; figures in docs/store.md). The solvers: `capped`
(count caps, exact) and `budget` (an overall budget, bounded); this module checks the limits and
picks one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from persyn.assignment.budget import _cost_tol, _solve_budget
from persyn.assignment.capped import _solve_capped
from persyn.util.errors import PersynError

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
    names = list(teachers)
    S = _checked_scores(scores, names)
    caps = dict(caps or {})
    costs_map = dict(cost_per_prompt or {})
    for label, mapping in (("caps", caps), ("cost_per_prompt", costs_map)):
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise ValueError(f"{label} name unknown teacher(s) {unknown}; teachers are {names}")
    n, T = S.shape
    cost = _cost_vector(names, caps, costs_map, budget)

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


def _checked_scores(scores: np.ndarray, names: list[str]) -> np.ndarray:
    S = np.asarray(scores, dtype=np.float64)
    if S.ndim != 2 or S.shape[1] != len(names):
        raise ValueError(f"scores must be n_prompts x {len(names)} teachers, got shape {S.shape}")
    if len(set(names)) != len(names):
        raise ValueError(f"teacher names repeat: {names}")
    if not np.isfinite(S).all():
        bad = np.argwhere(~np.isfinite(S))[0]
        raise ValueError(
            f"scores must be finite; prompt {bad[0]} teacher {names[bad[1]]!r} is {S[tuple(bad)]}"
        )
    return S


def _cost_vector(
    names: list[str], caps: Mapping[str, TeacherCap], costs_map: Mapping[str, float], budget: float | None
) -> np.ndarray | None:
    """Cost per prompt in teacher order (None when no limit needs it and none was given)."""
    needs_cost = budget is not None or any(c.max_cost is not None for c in caps.values())
    if not (needs_cost or costs_map):
        return None
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
    return cost


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
