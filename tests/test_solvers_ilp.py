"""Tests of the PuLP integer program (`solvers/ilp.py`): many-to-one optima and the fallback.

Many-to-one plans are checked against a brute-force optimum (tests/solver_oracles.py);
the CBC path must agree with `exact` one-to-one; a crashed, infeasible or timed-out
solver must fall back to `exact` and say why; a helper cap must be reported.
"""

from __future__ import annotations

import logging

import numpy as np
import pulp
import pytest
from hypothesis import HealthCheck, given, settings

import solvers.ilp as ilp_mod
from solvers import OffloadProblem, evaluate_plan, solve
from tests.solver_oracles import _brute_many_to_one, _table, problems

# ---------------------------------------------------------------- ILP: optima


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


def test_cbc_path_when_highs_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ilp_mod, "highs_available", lambda: False)
    rng = np.random.default_rng(5)
    n = 12
    p = OffloadProblem.from_agent_links(
        rng.integers(5, 30, n).astype(float), np.exp(rng.normal(0, 1, n)) / 10, rng.uniform(1e7, 1e8, n), rng.uniform(0, 0.02, n), _table(3)
    )
    il = solve(p, "ilp")
    assert il.method == "ilp" and il.optimal
    assert il.makespan == pytest.approx(solve(p, "exact").makespan, rel=1e-6)


# ---------------------------------------------------------------- ILP fallback


def _hard_enough() -> OffloadProblem:
    """Many candidates, so the ILP really reaches the solver."""
    rng = np.random.default_rng(11)
    n = 30
    return OffloadProblem.from_agent_links(
        rng.integers(5, 30, n).astype(float),
        np.exp(rng.normal(0, 1, n)) / 10,
        rng.uniform(1e7, 1e8, n),
        rng.uniform(0, 0.02, n),
        _table(3),
        helpers_can_serve=2,
    )


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
def test_ilp_falls_back_and_says_why(mode: str, words: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
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
