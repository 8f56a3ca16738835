"""Capped routing: argmax without caps, exact optimum under count caps (brute force and the full LP
agree), a valid bound under a budget, clear infeasibility errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linprog

from persyn.assignment import RoutingInfeasibleError, TeacherCap, cost_per_prompt, route_prompts
from persyn.assignment import capped as routing


def names(T: int) -> list[str]:
    return [f"t{i}" for i in range(T)]


def brute_force(S, count_caps, cost=None, budget=None) -> float:
    n, T = S.shape
    best = -np.inf
    for combo in itertools.product(range(T), repeat=n):
        counts = np.bincount(combo, minlength=T)
        if (counts > count_caps).any():
            continue
        if budget is not None and cost @ counts > budget + 1e-9:
            continue
        best = max(best, S[np.arange(n), combo].sum())
    return best


def full_lp(S, count_caps) -> float:
    n, T = S.shape
    rows, cols = np.repeat(np.arange(n), T), np.tile(np.arange(T), n)
    A_eq = sp.csr_matrix((np.ones(n * T), (rows, np.arange(n * T))), shape=(n, n * T))
    A_ub = sp.csr_matrix((np.ones(n * T), (cols, np.arange(n * T))), shape=(T, n * T))
    res = linprog(-S.ravel(), A_ub=A_ub, b_ub=count_caps, A_eq=A_eq, b_eq=np.ones(n), method="highs")
    assert res.status == 0
    return -res.fun


def random_caps(rng, n, T):
    caps = rng.integers(0, n + 1, size=T)
    if caps.sum() < n:
        caps[rng.integers(T)] += n - caps.sum()
    return caps


def check_within(r, S, caps, cost=None, budget=None):
    counts = np.bincount(r.assignment, minlength=S.shape[1])
    assert len(r.assignment) == len(S)
    assert (counts <= caps).all()
    assert r.counts == {t: int(c) for t, c in zip(r.teachers, counts, strict=True)}
    assert r.total_score == pytest.approx(S[np.arange(len(S)), r.assignment].sum())
    if budget is not None:
        assert cost @ counts <= budget + 1e-9
        assert r.total_cost == pytest.approx(cost @ counts)


# ----------------------------------------------------------------------------- no caps


def test_argmax_without_caps_and_ties_go_to_the_earlier_teacher():
    S = np.array([[0.1, 0.9, 0.9], [2.0, 1.0, 0.0], [0.5, 0.5, 0.5], [-1.0, -2.0, 3.0]])
    r = route_prompts(S, ["a", "b", "c"])
    assert r.method == "argmax" and r.optimal
    assert r.assigned() == ["b", "a", "a", "c"]
    assert r.total_score == r.argmax_score == pytest.approx(0.9 + 2.0 + 0.5 + 3.0)
    assert r.caps == {"a": None, "b": None, "c": None}


def test_loose_caps_keep_the_argmax():
    rng = np.random.default_rng(0)
    S = rng.normal(size=(50, 3))
    r = route_prompts(S, names(3), {"t0": TeacherCap(max_share=1.0), "t1": TeacherCap(max_generations=50)})
    assert r.method == "argmax"
    assert (r.assignment == S.argmax(1)).all()


def test_empty_and_single_teacher():
    r = route_prompts(np.zeros((0, 2)), ["a", "b"])
    assert len(r.assignment) == 0 and r.counts == {"a": 0, "b": 0}
    r = route_prompts(np.ones((4, 1)), ["only"], {"only": TeacherCap(max_generations=4)})
    assert r.assigned() == ["only"] * 4


# ----------------------------------------------------------------------------- count caps: exact


def test_count_caps_match_brute_force():
    rng = np.random.default_rng(1)
    for trial in range(60):
        n, T = int(rng.integers(1, 8)), int(rng.integers(2, 4))
        S = rng.normal(size=(n, T))
        if trial % 2:
            S = np.round(S)  # many ties
        caps = random_caps(rng, n, T)
        r = route_prompts(
            S, names(T), {f"t{i}": TeacherCap(max_generations=int(c)) for i, c in enumerate(caps)}
        )
        check_within(r, S, caps)
        assert r.total_score == pytest.approx(brute_force(S, caps), abs=1e-9)
        assert r.optimal


def test_count_caps_match_the_full_lp():
    rng = np.random.default_rng(2)
    for trial in range(25):
        n, T = int(rng.integers(20, 300)), int(rng.integers(2, 7))
        S = rng.normal(size=(n, T)) + np.linspace(2, 0, T) * (trial % 3 == 0)
        if trial % 4 == 1:
            S = np.round(S, 1)
        caps = random_caps(rng, n, T)
        r = route_prompts(
            S, names(T), {f"t{i}": TeacherCap(max_generations=int(c)) for i, c in enumerate(caps)}
        )
        check_within(r, S, caps)
        assert r.total_score == pytest.approx(full_lp(S, caps), abs=1e-7)
        assert r.upper_bound == pytest.approx(r.total_score)


def test_a_strong_teacher_capped_at_a_share():
    rng = np.random.default_rng(3)
    S = rng.normal(size=(2000, 5))
    S[:, 0] += 2.0  # everybody's favourite
    r = route_prompts(S, names(5), {"t0": TeacherCap(max_share=0.1)})
    assert r.method == "capped" and r.optimal
    assert r.counts["t0"] == 200 and r.binding == ["t0"]
    assert r.cap_reasons["t0"] == "max_share 0.1"
    assert r.total_score == pytest.approx(full_lp(S, np.array([200, 2000, 2000, 2000, 2000])), abs=1e-7)
    # It keeps the prompts where t0's lead is largest.
    lead = S[:, 0] - S[:, 1:].max(1)
    assert set(np.flatnonzero(r.assignment == 0)) == set(np.argsort(-lead)[:200])
    assert "t0 200 (10.0%)" in r.summary() and "at cap: t0" in r.summary()


def test_certificate_cancels_cycles_from_any_feasible_start():
    """The exactness guarantee does not rest on the heuristic steps: from an arbitrary feasible
    assignment, cancelling negative cycles reaches the LP optimum."""
    rng = np.random.default_rng(4)
    for _ in range(10):
        n, T = 120, 4
        S = rng.normal(size=(n, T))
        caps = np.array([40, 35, 30, 30])
        a = np.repeat(np.arange(T), caps)[:n].copy()
        rng.shuffle(a)
        done, cancelled = routing._cancel_negative_cycles(S, a, caps, max_cycles=None)
        assert done and cancelled > 0
        assert (np.bincount(a, minlength=T) <= caps).all()
        assert S[np.arange(n), a].sum() == pytest.approx(full_lp(S, caps), abs=1e-7)


def test_cost_caps_become_count_caps():
    rng = np.random.default_rng(5)
    S = rng.normal(size=(100, 3))
    S[:, 2] += 3
    r = route_prompts(
        S,
        ["cheap", "mid", "big"],
        {"big": TeacherCap(max_cost=2.5)},
        cost_per_prompt={"cheap": 0.01, "mid": 0.02, "big": 0.1},
    )
    assert r.caps["big"] == 25 and r.counts["big"] == 25
    assert r.costs["big"] == pytest.approx(2.5) and r.optimal
    assert "max_cost 2.5 at 0.1 per prompt" in r.cap_reasons["big"]


def test_share_rounding_and_tightest_limit_wins():
    S = np.zeros((1000, 2))
    S[:, 0] = 1
    r = route_prompts(S, ["a", "b"], {"a": TeacherCap(max_share=0.1, max_generations=150)})
    assert r.caps["a"] == 100 and r.counts["a"] == 100  # 0.1 * 1000 is 100, not 99
    r = route_prompts(S, ["a", "b"], {"a": TeacherCap(max_share=0.5, max_generations=150)})
    assert r.caps["a"] == 150 and r.cap_reasons["a"] == "max_generations 150"


def test_deterministic():
    rng = np.random.default_rng(6)
    S = np.round(rng.normal(size=(500, 4)), 1)
    caps = {"t0": TeacherCap(max_share=0.2), "t1": TeacherCap(max_share=0.2)}
    a = route_prompts(S, names(4), caps).assignment
    b = route_prompts(S.copy(), names(4), caps).assignment
    assert (a == b).all()


# ----------------------------------------------------------------------------- budget: bounded


def test_budget_feasible_bounded_and_usually_optimal():
    rng = np.random.default_rng(7)
    optimal = total = 0
    for trial in range(80):
        n, T = int(rng.integers(2, 7)), int(rng.integers(2, 4))
        S = rng.normal(size=(n, T))
        if trial % 2:
            S = np.round(S)
        cost = rng.integers(1, 5, size=T).astype(float)
        caps = random_caps(rng, n, T)
        budget = float(rng.uniform(cost.min() * n, cost.max() * n))
        best = brute_force(S, caps, cost, budget)
        kw = dict(cost_per_prompt=dict(zip(names(T), cost, strict=True)), budget=budget)
        capd = {f"t{i}": TeacherCap(max_generations=int(c)) for i, c in enumerate(caps)}
        if best == -np.inf:
            with pytest.raises(RoutingInfeasibleError):
                route_prompts(S, names(T), capd, **kw)
            continue
        r = route_prompts(S, names(T), capd, **kw)
        check_within(r, S, caps, cost, budget)
        assert r.upper_bound >= best - 1e-9  # the bound is a proven bound
        assert r.total_score <= best + 1e-9
        if r.optimal:
            assert r.total_score == pytest.approx(best, abs=1e-9)
        total += 1
        optimal += abs(r.total_score - best) < 1e-9
    assert total > 40 and optimal / total >= 0.9


def test_budget_at_scale_is_within_budget_with_a_small_gap():
    rng = np.random.default_rng(8)
    n, T = 3000, 6
    S = rng.normal(size=(n, T)) + np.linspace(1.5, 0, T)
    cost = {f"t{i}": float(T - i) for i in range(T)}  # the strong teachers are dear
    r = route_prompts(S, names(T), cost_per_prompt=cost, budget=n * 2.5)
    assert r.method == "budget"
    assert r.total_cost <= n * 2.5 + 1e-6
    assert r.gap <= 1e-3 * abs(r.total_score)
    assert r.total_score < r.argmax_score


def test_budget_not_binding_is_exact():
    S = np.array([[1.0, 0.0], [0.0, 1.0]])
    r = route_prompts(S, ["a", "b"], cost_per_prompt={"a": 1.0, "b": 1.0}, budget=10.0)
    assert r.method == "argmax" and r.optimal and r.total_cost == 2.0


# ----------------------------------------------------------------------------- errors


def test_infeasible_caps_say_by_how_much():
    S = np.zeros((100, 3))
    caps = {
        "t0": TeacherCap(max_share=0.2),
        "t1": TeacherCap(max_generations=30),
        "t2": TeacherCap(max_share=0.1),
    }
    with pytest.raises(RoutingInfeasibleError) as ei:
        route_prompts(S, names(3), caps)
    assert ei.value.shortfall == 40
    assert "at most 60 of the 100 prompts (short by 40)" in str(ei.value)
    assert "t1 30 (max_generations 30)" in str(ei.value)


def test_infeasible_budget_says_by_how_much():
    S = np.zeros((10, 2))
    with pytest.raises(RoutingInfeasibleError) as ei:
        route_prompts(
            S,
            ["a", "b"],
            {"a": TeacherCap(max_generations=4)},
            cost_per_prompt={"a": 1.0, "b": 3.0},
            budget=20.0,
        )
    assert ei.value.shortfall == pytest.approx(2.0)  # cheapest: 4 x 1 + 6 x 3 = 22
    assert "costs 22 (short by 2)" in str(ei.value)


def test_bad_input():
    with pytest.raises(ValueError, match="must be finite"):
        route_prompts(np.array([[np.nan, 1.0]]), ["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        route_prompts(np.zeros((3, 2)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="unknown teacher"):
        route_prompts(np.zeros((3, 2)), ["a", "b"], {"c": TeacherCap(max_share=0.5)})
    with pytest.raises(ValueError, match="max_cost needs cost_per_prompt for teacher"):
        route_prompts(np.zeros((3, 2)), ["a", "b"], {"a": TeacherCap(max_cost=1.0)})
    with pytest.raises(ValueError, match="a budget needs cost_per_prompt"):
        route_prompts(np.zeros((3, 2)), ["a", "b"], cost_per_prompt={"a": 1.0}, budget=5.0)
    with pytest.raises(ValueError, match="max_share"):
        TeacherCap(max_share=1.5)


def test_cost_per_prompt_helper():
    assert cost_per_prompt(500, 250, input_per_1k=0.002, output_per_1k=0.004) == pytest.approx(0.002)
