"""Tests of the one-to-one solvers: `exact` is optimal, `greedy` is the paper's rule.

Against the oracles of tests/solver_oracles.py (brute-force optima, the greedy rule as a
plain loop) and a naive bisection + matching (`_naive_exact`), on hypothesis instances
and near-critical random ones (`_bimodal`, `_bimodal_dense`); `exact`'s shortcuts
(greedy/Hall pass, remembered Hall violators) must not change its answer. Plans of all
three methods must be feasible and deterministic.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import solvers.greedy as greedy_mod
from solvers import OffloadProblem, SplitTable, evaluate_plan, no_offload_plan, solve
from solvers.costs import _Costs
from tests.solver_oracles import FAST, _alone, _brute_one_to_one, _greedy_reference, _pair, _table, problems

# ---------------------------------------------------------------- solvers: properties


@given(problems())
@FAST
def test_exact_is_optimal_and_plans_are_feasible(p: OffloadProblem) -> None:
    opt = _brute_one_to_one(p)
    ex = solve(p, "exact")
    assert ex.makespan == opt  # same arithmetic as the oracle: bit-equal
    assert ex.optimal and ex.lower_bound <= ex.makespan
    il = solve(p, "ilp")
    assert il.makespan == pytest.approx(opt, rel=1e-6)
    assert il.method == "ilp" and il.optimal and "fell back" not in il.note
    gr = solve(p, "greedy")
    assert gr.makespan >= opt
    assert gr.makespan <= no_offload_plan(p).makespan
    for plan in (ex, il, gr):
        again = evaluate_plan(p, plan.partner, plan.split)  # feasible, and scored the same
        assert again.finish.tolist() == plan.finish.tolist()
        assert np.all(plan.partner[plan.partner >= 0] != np.flatnonzero(plan.partner >= 0))


@given(problems(), st.sampled_from([1, 2, 64]))
@FAST
def test_greedy_is_the_papers_rule(p: OffloadProblem, first: int) -> None:
    partner, split = _greedy_reference(p)
    with mock.patch.object(greedy_mod, "_FIRST", first):  # small: its pruning path runs too
        gr = solve(p, "greedy")
    assert gr.partner.tolist() == partner
    assert gr.split.tolist() == split


@pytest.mark.parametrize("seed", range(3))
def test_greedy_is_the_papers_rule_at_scale(seed: int) -> None:
    p = _bimodal(seed, n=150)
    partner, split = _greedy_reference(p)
    gr = solve(p, "greedy")
    assert gr.partner.tolist() == partner and gr.split.tolist() == split


@given(st.integers(2, 7), st.integers(1, 3), st.integers(0, 30), st.integers(1, 40), st.integers(1, 3))
@FAST
def test_identical_agents_never_offload(n: int, m: int, b: int, c: int, serve: int) -> None:
    rho = np.linspace(0.1, 0.9, m)
    p = OffloadProblem.from_agent_links(
        np.full(n, float(b)),
        np.full(n, c / 10),
        np.full(n, 5e6),
        np.full(n, 0.01),
        SplitTable(np.arange(m), rho, 1 - rho, np.full(m, 1e6)),
        helpers_can_serve=serve,
    )
    for method in ("greedy", "exact", "ilp"):
        plan = solve(p, method)
        assert plan.num_offloaders == 0, method
        assert plan.makespan == no_offload_plan(p).makespan


def _naive_exact(p: OffloadProblem) -> float:
    """Bisection over every candidate value, matching the whole graph each time."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    n, m_count = p.num_agents, p.splits.num_splits
    a = _alone(p)
    c = np.array([[min(_pair(p, i, j, m) for m in range(m_count)) if i != j else np.inf for j in range(n)] for i in range(n)])
    vals = np.unique(np.concatenate([a, c[np.isfinite(c)]]))

    def ok(t: float) -> bool:
        slow = [i for i in range(n) if a[i] > t]
        if not slow:
            return True
        g = csr_matrix((c[slow] <= t).astype(np.int8))
        return bool(np.all(maximum_bipartite_matching(g, perm_type="column") >= 0))

    return float(min(v for v in vals if ok(v)))


def _bimodal(seed: int, n: int = 40) -> OffloadProblem:
    """Half slow, half fast, random dense links: the matching is near-critical."""
    rng = np.random.default_rng(seed)
    slow = rng.random(n) < 0.5
    c = np.where(slow, 0.2 * np.exp(rng.normal(0, 0.2, n)), 0.025 * np.exp(rng.normal(0, 0.5, n)))
    return OffloadProblem(
        rng.integers(10, 30, n).astype(float),
        c,
        rng.uniform(1e6, 1e8, (n, n)),
        rng.uniform(0, 0.2, (n, n)),
        _table(3),
        overhead_s=rng.uniform(0, 0.1, n),
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("flow_only", [False, True])
def test_exact_on_near_critical_matchings(seed: int, flow_only: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import solvers.exact as exact_mod

    if flow_only:  # skip the greedy/Hall pass: every check goes through the max flow
        monkeypatch.setattr(
            exact_mod._Matcher,
            "_match_core",
            lambda self, core, sel, deg, assign: self._flow(core, sel & np.isin(self.row_of, core), assign),
        )
    p = _bimodal(seed)
    ex = solve(p, "exact")
    assert ex.makespan == _naive_exact(p)
    assert ex.lower_bound <= ex.makespan


def _bimodal_dense(seed: int, n: int = 300) -> OffloadProblem:
    """benchmarks/solver_bench.py's `bimodal` stress instance: half the agents 8x slower, every
    link drawn on its own, seven cuts of a ResNet-56 (32x32 activations, batch 32)."""
    rng = np.random.default_rng(seed)
    batches = np.ceil(np.maximum(32, np.round(600 * np.exp(rng.normal(0.0, 0.3, n)))) / 32)
    slow = rng.random(n) < 0.5
    sec = 0.025 * np.where(slow, 8 * np.exp(rng.normal(0, 0.2, n)), np.exp(rng.normal(0, 0.5, n)))
    cum = np.cumsum([0.02] + [0.16] * 6)
    chw = np.array([16, 64, 64, 32, 32, 16, 16]) * 1024.0
    splits = SplitTable(np.arange(1, 8), cum + 0.01, 1.0 - cum, 32 * chw * 4 + 256)
    bw = rng.uniform(1e6, 1e8, (n, n))
    return OffloadProblem(batches, sec, bw, rng.uniform(0, 0.2, (n, n)), splits, overhead_s=4.72e6 / bw.mean(axis=1))


def test_remembered_hall_violators_only_refuse_infeasible_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe refused by a Hall violator from an earlier max flow is infeasible for a
    matcher that remembers nothing, the plan is the one found without the shortcut,
    and the shortcut is taken on these near-critical instances."""
    import solvers.exact as exact_mod

    refused: list[float] = []
    original_violated, original_match = exact_mod._Matcher._violated, exact_mod._Matcher.match
    probe: dict = {}

    def match(self, t, assign=False):
        probe["t"] = t
        return original_match(self, t, assign)

    def violated(self, sel, need):
        hit = original_violated(self, sel, need)
        if hit:
            fresh = exact_mod._Matcher(self.e, probe["a"], self.n)
            assert fresh.match(probe["t"]) is None, f"a violator refused the feasible threshold {probe['t']}"
            refused.append(probe["t"])
        return hit

    for seed in range(3):
        p = _bimodal_dense(seed)
        monkeypatch.setattr(exact_mod._Matcher, "_violated", lambda self, sel, need: False)
        without = solve(p, "exact")
        monkeypatch.setattr(exact_mod._Matcher, "_violated", violated)
        monkeypatch.setattr(exact_mod._Matcher, "match", match)
        probe["a"] = _Costs(p).a
        with_shortcut = solve(p, "exact")
        monkeypatch.setattr(exact_mod._Matcher, "match", original_match)
        assert with_shortcut.makespan == without.makespan
        assert with_shortcut.partner.tolist() == without.partner.tolist()
    assert refused, "no probe was settled by a remembered violator"


def test_solvers_are_deterministic() -> None:
    rng = np.random.default_rng(3)
    n = 60
    p = OffloadProblem.from_agent_links(
        rng.integers(5, 30, n).astype(float), np.exp(rng.normal(0, 1, n)) / 10, rng.uniform(1e7, 1e8, n), rng.uniform(0, 0.02, n), _table(3)
    )
    for method in ("greedy", "exact", "ilp"):
        x, y = solve(p, method), solve(p, method)
        assert x.partner.tolist() == y.partner.tolist() and x.split.tolist() == y.split.tolist()
        assert x.makespan == y.makespan
