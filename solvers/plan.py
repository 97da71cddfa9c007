"""A plan as data, and the time model that scores any plan (the yardstick).

Owns `Plan`, `evaluate_plan` (the one yardstick every solver is checked by) and
`no_offload_plan`. The time model is docs/method.md §3.4:

- alone:      a_i = B_i c_i + ovh_i
- offloader:  max(B_i rho_s[m] c_i, B_i D[m] / nu_ij + l_ij) + ovh_i
- helper:     max(B_j c_j + sum_i B_i rho_f[m_i] c_j, sum_i B_i D[m_i] / inbound_j) + ovh_j

An offloader's finish is when its side (prefix+aux compute, sending) is done; its
suffix is done at its helper's finish. For a one-to-one pair the larger of the two is
the pair time T_ij^m = max(slow compute, transfer, helper) (overheads included). The
shared-inbound term applies one-to-one too; by default (inbound = the fastest link into
j) it never binds there.

Every solver computes costs with the *same* floating-point expressions as
`evaluate_plan` (same operands, same association; see `_Costs` in solvers/costs.py), so
a solver's predicted makespan and the yardstick's agree bit for bit and comparisons such
as "beats T_i" are decided identically everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: solvers.problem is the layer below
    from .problem import OffloadProblem

__all__ = ["Plan", "evaluate_plan", "no_offload_plan"]


@dataclass(frozen=True, eq=False)
class Plan:
    """Who offloads which split to whom, and each agent's predicted finish."""

    partner: np.ndarray  # (N,) int: helper j of an offloader i; -1 for helpers and solo agents
    split: np.ndarray  # (N,) int: SplitTable row for offloaders; -1 otherwise
    finish: np.ndarray  # (N,) predicted finish (s) under the time model, overhead included
    makespan: float  # max(finish)
    method: str  # "greedy" | "exact" | "ilp" | "none" | "custom"
    optimal: bool  # proven optimal for the problem's class (one-to-one or many-to-one)
    note: str = ""
    solve_time_s: float = 0.0
    lower_bound: float = field(default=float("nan"))  # a proven lower bound on the optimum, when known

    def helpers_of(self) -> dict[int, list[int]]:
        """helper -> its offloaders (ascending)."""
        out: dict[int, list[int]] = {}
        for i in np.flatnonzero(self.partner >= 0):
            out.setdefault(int(self.partner[i]), []).append(int(i))
        return out

    @property
    def num_offloaders(self) -> int:
        return int(np.count_nonzero(self.partner >= 0))


def evaluate_plan(
    problem: OffloadProblem,
    partner: np.ndarray,
    split: np.ndarray,
    *,
    method: str = "custom",
    optimal: bool = False,
    note: str = "",
    solve_time_s: float = 0.0,
    lower_bound: float = float("nan"),
) -> Plan:
    """Score a plan under the time model; raise ValueError if it is infeasible."""
    partner, split = _checked_plan(problem, partner, split)
    finish = _finish_times(problem, partner, split)
    return Plan(
        partner=partner,
        split=split,
        finish=finish,
        makespan=float(finish.max()),
        method=method,
        optimal=optimal,
        note=note,
        solve_time_s=solve_time_s,
        lower_bound=lower_bound,
    )


def _checked_plan(problem: OffloadProblem, partner: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(partner, split) as int64 arrays; ValueError (one sentence, with the fix) if infeasible."""
    n = problem.num_agents
    partner = np.asarray(partner)
    split = np.asarray(split)
    if partner.shape != (n,) or split.shape != (n,):
        raise ValueError(f"partner and split must each have {n} entries; pass one per agent (-1 for none).")
    if not (np.issubdtype(partner.dtype, np.integer) and np.issubdtype(split.dtype, np.integer)):
        raise ValueError("partner and split must be integer arrays; pass agent indices and split rows (-1 for none).")
    partner = partner.astype(np.int64)
    split = split.astype(np.int64)
    off = np.flatnonzero(partner >= 0)
    if np.any(partner < -1) or np.any(partner >= n):
        raise ValueError(f"partner entries must be -1 or an agent index in [0, {n}); fix the plan's partner array.")
    if np.any(split < -1) or np.any(split >= problem.splits.num_splits):
        raise ValueError(f"split entries must be -1 or a row in [0, {problem.splits.num_splits}); fix the plan's split array.")
    if np.any((partner >= 0) != (split >= 0)):
        raise ValueError("an agent has a partner without a split (or a split without a partner); give offloaders both and others -1.")
    helpers = partner[off]
    if np.any(helpers == off):
        raise ValueError("an agent is paired with itself; give it -1 (train alone) or another agent.")
    if np.any(partner[helpers] >= 0):
        raise ValueError("a helper is itself offloading; a helper must train its own model whole (partner -1).")
    counts = np.bincount(helpers, minlength=n)
    if np.any(counts > problem.helpers_can_serve):
        raise ValueError(
            f"a helper serves {int(counts.max())} offloaders but helpers_can_serve is {problem.helpers_can_serve}; "
            "raise helpers_can_serve or pair fewer agents with it."
        )
    return partner, split


def _finish_times(problem: OffloadProblem, partner: np.ndarray, split: np.ndarray) -> np.ndarray:
    """(N,) every agent's finish under the time model, for a plan `_checked_plan` accepted."""
    n = problem.num_agents
    off = np.flatnonzero(partner >= 0)
    helpers = partner[off]
    counts = np.bincount(helpers, minlength=n)
    b, c, o = problem.batches, problem.sec_per_batch, problem.overhead_s
    sp = problem.splits
    finish = b * c + o  # alone
    alone = finish.copy()
    m = split[off]
    # Offloader: prefix+aux compute and sending overlap (local loss, no backward wait).
    slow_cmp = (b[off] * sp.rho_s[m]) * c[off] + o[off]
    xfer = (b[off] * sp.bytes_per_batch[m]) / problem.bandwidth[off, helpers] + (problem.latency[off, helpers] + o[off])
    finish[off] = np.maximum(slow_cmp, xfer)
    # Helper: own epoch (+ overhead) then every offloaded suffix; all inbound smashed data
    # shares one link. np.add.at is unbuffered and goes in index order: deterministic.
    load = alone
    np.add.at(load, helpers, (b[off] * sp.rho_f[m]) * c[helpers])
    inbound = np.zeros(n)
    np.add.at(inbound, helpers, (b[off] * sp.bytes_per_batch[m]) / problem.inbound_bandwidth[helpers])
    hs = np.flatnonzero(counts > 0)
    finish[hs] = np.maximum(load[hs], inbound[hs] + o[hs])
    return finish


def no_offload_plan(problem: OffloadProblem) -> Plan:
    """Everyone trains alone (the straggler-bound baseline)."""
    n = problem.num_agents
    none = np.full(n, -1, dtype=np.int64)
    return evaluate_plan(problem, none, none.copy(), method="none")
