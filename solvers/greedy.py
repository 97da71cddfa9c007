"""The paper's decentralized greedy pairing (docs/method.md §4.2), one-to-one.

Agents are taken slowest first (by alone finish a_i = B_i c_i + ovh_i, ties by lower
index). Each agent not yet taken looks at every still-available agent j and every
split m, picks the smallest pair time T_ij^m (ties: lower j, then lower m), and pairs
only if that beats a_i; then both leave the pool. The function is deterministic, so
every agent running it on the same announced state reaches the same plan.

Vectorised per offloader over (j, m). Exact shortcuts (the plan is the one the plain
rule gives; tests compare it with a loop over every j and m) keep 10k agents at a few
seconds: an agent that cannot beat a_i with any split is skipped; only j whose cheap
lower bound (helper term with the smallest rho_f, transfer with the smallest D) is
below a_i are kept; of those, the lowest bounds are costed first and the rest only if
their bound can still reach the best pair found.
"""

from __future__ import annotations

import time

import numpy as np

from .costs import _Costs
from .plan import Plan, evaluate_plan
from .problem import OffloadProblem

__all__ = ["greedy"]

_FIRST = 64  # helpers costed first per agent (those with the lowest bounds)


def greedy_pairs(problem: OffloadProblem) -> tuple[np.ndarray, np.ndarray]:
    """(partner, split) of the greedy plan; see the module docstring."""
    k = _Costs(problem)
    n = problem.num_agents
    a = k.a
    order = np.lexsort((np.arange(n), -a))  # slowest first, ties by index
    ms = np.arange(problem.splits.num_splits)
    partner = np.full(n, -1, dtype=np.int64)
    split = np.full(n, -1, dtype=np.int64)
    search = _HelperSearch(k, order, ms)
    avail_s = np.ones(n, dtype=bool)  # by sorted position (see _HelperSearch)
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    # An agent whose slow side alone cannot beat a_i with any split can never pair.
    slow_min = k.slow_side(np.arange(n), ms).min(axis=1)
    for p, i in enumerate(order):
        if not avail_s[p]:
            continue
        avail_s[p] = False  # i is decided now: it either offloads or stays alone
        if not slow_min[i] < a[i]:
            continue
        found = search.best_helper(p, avail_s)
        if found is not None:
            j, m = found
            partner[i] = j
            split[i] = m
            avail_s[pos[j]] = False
    return partner, split


class _HelperSearch:
    """One agent's search for its best still-available helper (the rule's inner step).

    Works in sorted positions: the agents after position p of `order` are exactly those
    no slower than order[p], and slices of the sorted arrays are views (no gathers).
    """

    def __init__(self, k: _Costs, order: np.ndarray, ms: np.ndarray) -> None:
        self.k, self.order, self.ms = k, order, ms
        self.a_s, self.c_s = k.a[order], k.c[order]
        self.rf_min = float(k.rf.min())
        self.d_min = float(k.d.min())

    def best_helper(self, p: int, avail_s: np.ndarray) -> tuple[int, int] | None:
        """(j, split) of the smallest pair time for the agent at sorted position p over the
        available agents after p (ties: lower j, then lower split), if it beats a_i."""
        k, order, ms = self.k, self.order, self.ms
        i = order[p]
        ai = k.a[i]
        # Lower bounds on every split's pair time, built with the same operations as
        # the pair time so float rounding keeps them bounds: the helper term with the
        # smallest rho_f (>= a_j, so slower agents drop out too), then, for those left,
        # the transfer term with the smallest D (the link gather is only paid for them).
        lower = (k.b[i] * self.rf_min) * self.c_s[p + 1 :] + self.a_s[p + 1 :]
        ok = np.flatnonzero(avail_s[p + 1 :] & (lower < ai))
        if ok.size == 0:
            return None
        cj = order[p + 1 + ok]
        bw, lat = k.p.bandwidth, k.p.latency
        lower = np.maximum(lower[ok], (k.b[i] * self.d_min) / bw[i, cj] + (lat[i, cj] + k.o[i]))
        keep = lower < ai
        ok, lower = ok[keep], lower[keep]
        if ok.size == 0:
            return None
        idx, cost, arg = self._cost_lowest_first(i, p, ok, lower, ai)
        best = cost.min()
        if not best < ai:
            return None
        # Ties: the lower j (candidates are in speed order, not index order); arg
        # holds that j's lowest split reaching the minimum.
        cand = order[p + 1 + idx]
        tie = np.flatnonzero(cost == best)
        jj = int(tie[np.argmin(cand[tie])])
        return int(cand[jj]), int(ms[arg[jj]])

    def _cost_lowest_first(self, i: int, p: int, ok: np.ndarray, lower: np.ndarray, ai: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions after p costed, their best pair time, position in ms of its split).

        Cost the helpers with the lowest bounds first, then only those whose bound could
        still reach (or tie) the best pair found: the outcome is the full argmin's, at a
        fraction of the work.
        """
        k, order, ms = self.k, self.order, self.ms
        if ok.size > _FIRST:
            first = np.argpartition(lower, _FIRST - 1)[:_FIRST]
            c1, m1 = k.min_cost(i, order[p + 1 + ok[first]], ms)
            rest = np.flatnonzero(lower <= min(float(c1.min()), ai))
            rest = rest[~np.isin(rest, first)]
            c2, m2 = k.min_cost(i, order[p + 1 + ok[rest]], ms)
            idx = ok[np.concatenate([first, rest])]
            return idx, np.concatenate([c1, c2]), np.concatenate([m1, m2])
        cost, arg = k.min_cost(i, order[p + 1 + ok], ms)  # best split per helper
        return ok, cost, arg


def greedy(problem: OffloadProblem) -> Plan:
    t0 = time.perf_counter()
    partner, split = greedy_pairs(problem)
    return evaluate_plan(problem, partner, split, method="greedy", solve_time_s=time.perf_counter() - t0)
