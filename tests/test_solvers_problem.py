"""Tests of `solvers/` data and yardstick: the time model, input and plan validation.

`evaluate_plan` is checked against the plain-Python time model of tests/solver_oracles.py
and a hand-computed example; `OffloadProblem`, `SplitTable` and plans must reject bad
input with one-sentence messages.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import solvers
from solvers import OffloadProblem, Plan, SplitTable, evaluate_plan, no_offload_plan, solve
from tests.solver_oracles import FAST, _finish, _partner_vectors, _table, problems

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
        np.array([10.0, 10.0]), np.array([1.0, 0.5]), np.array([10e6, 50e6]), np.array([0.01, 0.02]), _table()
    )
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


def test_one_agent_and_plan_helpers() -> None:
    p = OffloadProblem(np.array([3.0]), np.array([1.0]), np.ones((1, 1)), np.zeros((1, 1)), _table())
    for method in ("greedy", "exact", "ilp"):
        plan = solve(p, method)
        assert plan.makespan == 3.0 and plan.num_offloaders == 0
    assert isinstance(plan, Plan) and plan.helpers_of() == {}
    assert solvers.lower_bound(p) == 3.0


# ---------------------------------------------------------------- validation


def _ok(**kw):
    base = dict(batches=np.ones(2), sec_per_batch=np.ones(2), bandwidth=np.ones((2, 2)), latency=np.zeros((2, 2)), splits=_table())
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
