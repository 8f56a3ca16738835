"""Routing under an overall budget (bounded, not always exact): the smoothed dual with one more
price, a small LP with a budget row, rounding, repair and upgrades. See `persyn.assignment`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from persyn.assignment.capped import _first_per_row, _free_set, _lp, _smoothed_prices


def _cost_tol(cost: np.ndarray, n: int) -> float:
    return 1e-9 * max(1.0, float(cost.max(initial=0.0)) * max(n, 1))


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
