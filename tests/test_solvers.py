"""Tests of `solvers/`: the time model, validation, the three solvers and the ILP fallback.

The oracles here are written independently of the package, in plain Python: the time
model (`_pair`, `_finish`), the paper's greedy rule as a loop, and brute-force optima
over every plan of small instances.
"""

from __future__ import annotations

import itertools
import logging
import math
from unittest import mock

import numpy as np
import pulp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import solvers
import solvers.greedy as greedy_mod
import solvers.ilp as ilp_mod
from solvers import OffloadProblem, Plan, SplitTable, evaluate_plan, no_offload_plan, solve
from solvers.problem import _Costs

# ---------------------------------------------------------------- plain-Python oracles


_LISTS: dict[int, tuple] = {}


def _lists(p: OffloadProblem):
    key = id(p)
    if key not in _LISTS or _LISTS[key][0] is not p:
        _LISTS[key] = (p, (p.batches.tolist(), p.sec_per_batch.tolist(), p.overhead_s.tolist(),
                           p.bandwidth.tolist(), p.latency.tolist(), p.inbound_bandwidth.tolist(),
                           p.splits.rho_s.tolist(), p.splits.rho_f.tolist(), p.splits.bytes_per_batch.tolist()))
    return _LISTS[key][1]


def _alone(p: OffloadProblem) -> list[float]:
    b, c, o, *_ = _lists(p)
    return [b[i] * c[i] + o[i] for i in range(len(b))]


def _pair(p: OffloadProblem, i: int, j: int, m: int) -> float:
    """One-to-one pair time T_ij^m (ALGORITHM.md sec. 3), overheads included."""
    b, c, o, bw, lat, inb, rs, rf, d = _lists(p)
    a_j = b[j] * c[j] + o[j]
    slow = max((b[i] * rs[m]) * c[i] + o[i], (b[i] * d[m]) / bw[i][j] + (lat[i][j] + o[i]))
    helper = max(a_j + (b[i] * rf[m]) * c[j], (b[i] * d[m]) / inb[j] + o[j])
    return max(slow, helper)


def _finish(p: OffloadProblem, partner: list[int], split: list[int]) -> list[float]:
    """Every agent's finish under the time model, many-to-one included."""
    b, c, o, bw, lat, inb, rs, rf, d = _lists(p)
    n = len(b)
    fin = _alone(p)
    load = list(fin)
    link = [0.0] * n
    for i in range(n):
        j, m = partner[i], split[i]
        if j < 0:
            continue
        fin[i] = max((b[i] * rs[m]) * c[i] + o[i], (b[i] * d[m]) / bw[i][j] + (lat[i][j] + o[i]))
        load[j] += (b[i] * rf[m]) * c[j]
        link[j] += (b[i] * d[m]) / inb[j]
    for j in set(x for x in partner if x >= 0):
        fin[j] = max(load[j], link[j] + o[j])
    return fin


def _greedy_reference(p: OffloadProblem) -> tuple[list[int], list[int]]:
    """The paper's rule as a plain loop over every still-available j and every m."""
    n, m_count = p.num_agents, p.splits.num_splits
    a = _alone(p)
    partner, split = [-1] * n, [-1] * n
    avail = set(range(n))
    for i in sorted(range(n), key=lambda x: (-a[x], x)):
        if i not in avail:
            continue
        avail.discard(i)
        best, choice = a[i], None  # "nobody" costs T_i; strict < keeps the first minimum
        for j in sorted(avail):
            for m in range(m_count):
                t = _pair(p, i, j, m)
                if t < best:
                    best, choice = t, (j, m)
        if choice is not None:
            partner[i], split[i] = choice
            avail.discard(choice[0])
    return partner, split


def _partner_vectors(n: int, serve: int):
    """Every feasible partner vector: helpers train whole and serve <= `serve` agents."""
    for partner in itertools.product(range(-1, n), repeat=n):
        ok = True
        count = [0] * n
        for i, j in enumerate(partner):
            if j < 0:
                continue
            if j == i or partner[j] >= 0:
                ok = False
                break
            count[j] += 1
            if count[j] > serve:
                ok = False
                break
        if ok:
            yield list(partner)


def _brute_one_to_one(p: OffloadProblem) -> float:
    n, m_count = p.num_agents, p.splits.num_splits
    a = _alone(p)
    best = math.inf
    for partner in _partner_vectors(n, 1):
        helpers = {j for j in partner if j >= 0}
        t = max([a[i] for i in range(n) if partner[i] < 0 and i not in helpers], default=-math.inf)
        for i, j in enumerate(partner):
            if j >= 0:
                t = max(t, min(_pair(p, i, j, m) for m in range(m_count)))
        best = min(best, t)
    return best


def _brute_many_to_one(p: OffloadProblem) -> float:
    n, m_count = p.num_agents, p.splits.num_splits
    best = math.inf
    for partner in _partner_vectors(n, p.helpers_can_serve):
        offl = [i for i in range(n) if partner[i] >= 0]
        for ms in itertools.product(range(m_count), repeat=len(offl)):
            split = [-1] * n
            for i, m in zip(offl, ms):
                split[i] = m
            best = min(best, max(_finish(p, partner, split)))
    return best


# ---------------------------------------------------------------- instances


def _table(m: int = 2) -> SplitTable:
    rho_s = np.linspace(0.2, 0.8, m)
    return SplitTable(np.arange(1, m + 1), rho_s, 1.0 - rho_s + 0.05, np.linspace(4e6, 1e6, m))


@st.composite
def problems(draw, max_n: int = 7, max_m: int = 3, serve: int = 1) -> OffloadProblem:
    """Small instances with coarse values, so ties (the hard cases) are common."""
    n = draw(st.integers(2, max_n))
    m = draw(st.integers(1, max_m))
    ints = lambda lo, hi, size: np.array(draw(st.lists(st.integers(lo, hi), min_size=size, max_size=size)), float)
    batches = ints(0, 30, n)
    sec = ints(1, 40, n) / 10
    bw = ints(1, 10, n * n).reshape(n, n) * 1e6
    lat = ints(0, 3, n * n).reshape(n, n) / 10
    ovh = ints(0, 2, n) / 2 if draw(st.booleans()) else None
    inb = ints(1, 20, n) * 1e6 if draw(st.booleans()) else None
    rho_s = ints(0, 10, m) / 10
    rho_f = ints(0, 10, m) / 10
    d = ints(0, 8, m) * 1e6
    return OffloadProblem(batches, sec, bw, lat, SplitTable(np.arange(m), rho_s, rho_f, d),
                          overhead_s=ovh, inbound_bandwidth=inb, helpers_can_serve=serve)


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- the time model


def test_three_agents_by_hand() -> None:
    # Agent 0 is slow (20 batches x 1 s), 1 and 2 are fast (10 x 0.1 s); one split with
    # rho_s 0.25, rho_f 0.75, 2 MB per batch; links 4 MB/s, 0.5 s latency; overhead 1 s.
    splits = SplitTable(np.array([3]), np.array([0.25]), np.array([0.75]), np.array([2e6]))
    p = OffloadProblem(
        batches=np.array([20.0, 10.0, 10.0]),
        sec_per_batch=np.array([1.0, 0.1, 0.1]),
        bandwidth=np.full((3, 3), 4e6),
        latency=np.full((3, 3), 0.5),
        splits=splits,
        overhead_s=np.array([1.0, 1.0, 1.0]),
        inbound_bandwidth=np.array([8e6, 8e6, 8e6]),
    )
    plan = evaluate_plan(p, np.array([1, -1, -1]), np.array([0, -1, -1]))
    # slow side: max(20*0.25*1, 20*2e6/4e6 + 0.5) + 1 = max(5, 10.5) + 1 = 11.5
    # helper 1:  max(10*0.1 + 20*0.75*0.1, 20*2e6/8e6) + 1 = max(2.5, 5) + 1 = 6
    # agent 2 alone: 10*0.1 + 1 = 2
    assert plan.finish.tolist() == pytest.approx([11.5, 6.0, 2.0])
    assert plan.makespan == pytest.approx(11.5)
    assert plan.helpers_of() == {1: [0]}
    assert no_offload_plan(p).makespan == pytest.approx(21.0)
    # The optimum here: offloading beats 21 s, and both helpers are equal (lower index wins).
    for method in ("greedy", "exact", "ilp"):
        got = solve(p, method=method)
        assert got.makespan == pytest.approx(11.5), method
        assert got.partner.tolist() == [1, -1, -1], method


def test_from_agent_links() -> None:
    p = OffloadProblem.from_agent_links(
        np.array([10.0, 10.0]), np.array([1.0, 0.5]), np.array([10e6, 50e6]), np.array([0.01, 0.02]), _table())
    assert p.bandwidth[0, 1] == p.bandwidth[1, 0] == 10e6
    assert p.latency[0, 1] == pytest.approx(0.03)
    assert p.inbound_bandwidth.tolist() == [10e6, 50e6]
    assert p.overhead_s.tolist() == [0.0, 0.0]


@given(problems(max_n=6, serve=2), st.randoms(use_true_random=False))
@FAST
def test_evaluate_matches_plain_python(p: OffloadProblem, rnd) -> None:
    n, m = p.num_agents, p.splits.num_splits
    vectors = list(_partner_vectors(n, p.helpers_can_serve)) if n <= 4 else [[-1] * n]
    partner = rnd.choice(vectors)
    split = [rnd.randrange(m) if j >= 0 else -1 for j in partner]
    plan = evaluate_plan(p, np.array(partner), np.array(split))
    assert plan.finish.tolist() == _finish(p, partner, split)
    assert plan.makespan == max(plan.finish)


# ---------------------------------------------------------------- validation


def _ok(**kw):
    base = dict(batches=np.ones(2), sec_per_batch=np.ones(2), bandwidth=np.ones((2, 2)),
                latency=np.zeros((2, 2)), splits=_table())
    base.update(kw)
    return OffloadProblem(**base)


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(batches=np.array([1.0, -1.0])), "batches must be >= 0"),
        (dict(batches=np.array([1.0, np.nan])), "NaN"),
        (dict(batches=np.ones(0), sec_per_batch=np.ones(0)), "empty"),
        (dict(sec_per_batch=np.array([1.0, 0.0])), "sec_per_batch must be > 0"),
        (dict(sec_per_batch=np.ones(3)), "exactly 2"),
        (dict(bandwidth=np.ones((2, 3))), "(2, 2) matrix"),
        (dict(bandwidth=np.array([[0.0, 0.0], [1.0, 0.0]])), "bandwidth must be finite and > 0"),
        (dict(latency=np.array([[0.0, -1.0], [0.0, 0.0]])), "latency must be finite and >= 0"),
        (dict(overhead_s=np.array([-1.0, 0.0])), "overhead_s"),
        (dict(inbound_bandwidth=np.array([0.0, 1.0])), "inbound_bandwidth"),
        (dict(helpers_can_serve=0), "helpers_can_serve"),
        (dict(splits="nope"), "SplitTable"),
    ],
)
def test_problem_validation(kw: dict, words: str) -> None:
    with pytest.raises(ValueError) as err:
        _ok(**kw)
    msg = str(err.value)
    assert words in msg
    assert "\n" not in msg and msg.endswith(".") and msg.count(". ") == 0  # one sentence


def test_diagonal_is_ignored() -> None:
    bw = np.array([[0.0, 1.0], [1.0, np.inf]])
    _ok(bandwidth=bw, latency=np.array([[np.nan, 0.0], [0.0, -5.0]]))


@pytest.mark.parametrize(
    "args, words",
    [
        ((np.arange(1), [0.5], [0.5, 0.5], [1.0]), "2 entries"),
        ((np.arange(0), [], [], []), "no split"),
        ((np.arange(1), [50.0], [0.5], [1.0]), "not percentages"),
        ((np.arange(1), [0.5], [-0.1], [1.0]), "rho_f"),
        ((np.arange(1), [0.5], [0.5], [-1.0]), "bytes_per_batch"),
        ((np.array([0.5]), [0.5], [0.5], [1.0]), "split_ids"),
    ],
)
def test_split_table_validation(args: tuple, words: str) -> None:
    with pytest.raises(ValueError) as err:
        SplitTable(*(np.asarray(x) for x in args))
    assert words in str(err.value)
    assert str(err.value).count(". ") == 0


def test_plan_validation() -> None:
    p = _ok(batches=np.ones(3), sec_per_batch=np.ones(3), bandwidth=np.ones((3, 3)), latency=np.zeros((3, 3)))
    bad = [
        ([0, -1, -1], [0, -1, -1], "itself"),
        ([1, 2, -1], [0, 0, -1], "helper is itself offloading"),
        ([2, 2, -1], [0, 0, -1], "helpers_can_serve"),
        ([1, -1, -1], [-1, -1, -1], "without a split"),
        ([1, -1, -1], [5, -1, -1], "split entries"),
        ([7, -1, -1], [0, -1, -1], "partner entries"),
        ([1, -1], [0, -1], "3 entries"),
    ]
    for partner, split, words in bad:
        with pytest.raises(ValueError, match=words):
            evaluate_plan(p, np.array(partner), np.array(split))
    with pytest.raises(ValueError, match="integer"):
        evaluate_plan(p, np.array([1.0, -1, -1]), np.array([0, -1, -1]))
    with pytest.raises(ValueError, match="unknown solver method"):
        solve(p, method="magic")


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


@given(problems(max_n=5, max_m=2, serve=2))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_many_to_one_ilp_beats_one_to_one(p: OffloadProblem) -> None:
    il = solve(p, "ilp")
    one = solve(p, "exact")
    assert il.method == "ilp" and il.optimal and "fell back" not in il.note
    assert il.makespan <= one.makespan * (1 + 1e-9)
    assert il.makespan == pytest.approx(_brute_many_to_one(p), rel=1e-6)
    evaluate_plan(p, il.partner, il.split)
    assert max(len(v) for v in il.helpers_of().values()) <= 2 if il.num_offloaders else True


@given(st.integers(2, 7), st.integers(1, 3), st.integers(0, 30), st.integers(1, 40), st.integers(1, 3))
@FAST
def test_identical_agents_never_offload(n: int, m: int, b: int, c: int, serve: int) -> None:
    rho = np.linspace(0.1, 0.9, m)
    p = OffloadProblem.from_agent_links(
        np.full(n, float(b)), np.full(n, c / 10), np.full(n, 5e6), np.full(n, 0.01),
        SplitTable(np.arange(m), rho, 1 - rho, np.full(m, 1e6)), helpers_can_serve=serve)
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
    c = np.array([[min(_pair(p, i, j, m) for m in range(m_count)) if i != j else np.inf for j in range(n)]
                  for i in range(n)])
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
    return OffloadProblem(rng.integers(10, 30, n).astype(float), c, rng.uniform(1e6, 1e8, (n, n)),
                          rng.uniform(0, 0.2, (n, n)), _table(3), overhead_s=rng.uniform(0, 0.1, n))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("flow_only", [False, True])
def test_exact_on_near_critical_matchings(seed: int, flow_only: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import solvers.exact as exact_mod

    if flow_only:  # skip the greedy/Hall pass: every check goes through the max flow
        monkeypatch.setattr(exact_mod._Matcher, "_match_core",
                            lambda self, core, sel, deg, assign: self._flow(core, sel & np.isin(self.row_of, core), assign))
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
    return OffloadProblem(batches, sec, bw, rng.uniform(0, 0.2, (n, n)), splits,
                          overhead_s=4.72e6 / bw.mean(axis=1))


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
        rng.integers(5, 30, n).astype(float), np.exp(rng.normal(0, 1, n)) / 10, rng.uniform(1e7, 1e8, n),
        rng.uniform(0, 0.02, n), _table(3))
    for method in ("greedy", "exact", "ilp"):
        x, y = solve(p, method), solve(p, method)
        assert x.partner.tolist() == y.partner.tolist() and x.split.tolist() == y.split.tolist()
        assert x.makespan == y.makespan


def test_cbc_path_when_highs_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ilp_mod, "highs_available", lambda: False)
    rng = np.random.default_rng(5)
    n = 12
    p = OffloadProblem.from_agent_links(
        rng.integers(5, 30, n).astype(float), np.exp(rng.normal(0, 1, n)) / 10, rng.uniform(1e7, 1e8, n),
        rng.uniform(0, 0.02, n), _table(3))
    il = solve(p, "ilp")
    assert il.method == "ilp" and il.optimal
    assert il.makespan == pytest.approx(solve(p, "exact").makespan, rel=1e-6)


# ---------------------------------------------------------------- ILP fallback


def _hard_enough() -> OffloadProblem:
    """Many candidates, so the ILP really reaches the solver."""
    rng = np.random.default_rng(11)
    n = 30
    return OffloadProblem.from_agent_links(
        rng.integers(5, 30, n).astype(float), np.exp(rng.normal(0, 1, n)) / 10, rng.uniform(1e7, 1e8, n),
        rng.uniform(0, 0.02, n), _table(3), helpers_can_serve=2)


class _Broken(pulp.LpSolver):
    def __init__(self, mode: str) -> None:
        super().__init__(msg=False)
        self.mode = mode

    def available(self) -> bool:
        return True

    def actualSolve(self, lp: pulp.LpProblem, **kw) -> int:
        if self.mode == "crash":
            raise pulp.PulpSolverError("solver binary died")
        if self.mode == "infeasible":
            lp.assignStatus(pulp.LpStatusInfeasible, pulp.constants.LpSolutionInfeasible)
            return lp.status
        # "timeout": stopped with no incumbent
        lp.assignStatus(pulp.LpStatusNotSolved, pulp.constants.LpSolutionNoSolutionFound)
        return lp.status


@pytest.mark.parametrize("mode, words", [("crash", "solver error"), ("infeasible", "Infeasible"), ("timeout", "no solution")])
def test_ilp_falls_back_and_says_why(mode: str, words: str, monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    p = _hard_enough()
    monkeypatch.setattr(ilp_mod, "_make_solver", lambda t, msg: _Broken(mode))
    with caplog.at_level(logging.WARNING, logger="solvers.ilp"):
        plan = solve(p, "ilp")
    assert plan.method == "exact"
    assert words in plan.note and "fell back to exact" in plan.note
    assert any("fell back" in r.message for r in caplog.records)
    assert plan.makespan == solve(p, "exact").makespan


def test_ilp_tiny_time_limit_never_raises() -> None:
    p = _hard_enough()
    plan = solve(p, "ilp", time_limit_s=1e-6)
    evaluate_plan(p, plan.partner, plan.split)
    assert plan.makespan <= solve(p, "exact").makespan * (1 + 1e-9)
    if "fell back" in plan.note:
        assert "time limit" in plan.note or "no solution" in plan.note


def test_ilp_candidate_cap_is_reported() -> None:
    p = _hard_enough()
    capped = ilp_mod.ilp(p, max_candidates=1)
    full = solve(p, "ilp")
    assert full.optimal and capped.makespan >= full.makespan * (1 - 1e-9)
    if "capped" in capped.note:  # the cap bit: optimal only if the plan meets the bound
        assert capped.optimal == (capped.makespan <= capped.lower_bound)


def test_one_agent_and_plan_helpers() -> None:
    p = OffloadProblem(np.array([3.0]), np.array([1.0]), np.ones((1, 1)), np.zeros((1, 1)), _table())
    for method in ("greedy", "exact", "ilp"):
        plan = solve(p, method)
        assert plan.makespan == 3.0 and plan.num_offloaders == 0
    assert isinstance(plan, Plan) and plan.helpers_of() == {}
    assert solvers.lower_bound(p) == 3.0
