"""The offloading integer program in PuLP (docs/method.md §4.4), one-to-one or many-to-one.

Binaries x[i, j, m] (i offloads split m to j) and continuous T; y[i] = 1 - sum x[i, ., .]
is substituted out. Minimise T subject to
- each agent offloads at most once:      sum_{j,m} x[i,j,m] <= 1
- a helper does not offload, and serves
  at most s = helpers_can_serve agents:  sum_{i,m} x[i,j,m] <= s * y[j]
- one-to-one (s = 1):  T >= y_i a_i + sum x[i,j,m] T_ij^m   (the pair time covers both sides)
- many-to-one:         T >= y_i a_i + sum x[i,j,m] slow_ijm                    (slow side)
                       T >= y_j a_j + sum_{i,m} x[i,j,m] B_i rho_f[m] c_j     (helper load)
                       T >= y_j o_j + sum_{i,m} x[i,j,m] B_i D[m] / inbound_j (shared link)
where a_i = B_i c_i + ovh_i and slow_ijm = max(B_i rho_s c_i, B_i D / nu_ij + l_ij) + ovh_i.

Candidates are pruned before building, each step exact (an optimal plan survives):
agents with a_i <= LB never need to offload (LB: a proven lower bound); (i, j, m) whose
pair time is >= a_i (i alone is no worse) or > UB (the `exact` plan's makespan) are
dropped; one-to-one keeps the best split of each (i, j) and each i's |S0| cheapest
helpers (Hall: enough to find a matching); many-to-one drops splits dominated on
(slow side, rho_f, D) per (i, j). `max_candidates` may cap helpers per agent further;
then `optimal` is claimed only if the plan meets the lower bound.

HiGHS (pulp.HiGHS) runs when `highspy` is importable, else CBC. A time-out, an
infeasible model or any solver error falls back to `exact` (the one-to-one optimum,
always feasible) or, should that fail, `greedy`; the reason goes to `Plan.note` and
the log, and nothing raises. A plan cut short by the time limit depends on how fast
the machine was: where agents must compute the same plan independently, use `greedy`
or `exact` (both deterministic).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pulp

from .costs import _Costs
from .exact import counting_bound, exact
from .greedy import greedy
from .plan import Plan, evaluate_plan
from .problem import OffloadProblem

__all__ = ["highs_available", "ilp"]

log = logging.getLogger(__name__)

_BLOCK_ELEMS = 2_000_000  # (rows x agents x splits) per costing block


def highs_available() -> bool:
    try:
        import highspy  # noqa: F401
    except ImportError:
        return False
    return True


def _make_solver(time_limit_s: float, msg: bool) -> pulp.LpSolver:
    # Gaps ~0: the plan must match the exact optimum to well under 1e-6 relative.
    if highs_available():
        return pulp.HiGHS(msg=msg, timeLimit=time_limit_s, gapRel=1e-9, gapAbs=1e-9)
    with warnings.catch_warnings():  # PuLP 3.3 flags its bundled CBC as going away in 4.0
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=msg, timeLimit=time_limit_s, gapRel=1e-9, gapAbs=1e-9, warmStart=True)


@dataclass
class _Cands:
    """Surviving (i, j, m) candidates and their coefficients, one entry each."""

    i: np.ndarray
    j: np.ndarray
    m: np.ndarray
    pair: np.ndarray  # one-to-one pair time T_ij^m
    slow: np.ndarray  # offloader finish (overhead included)
    work: np.ndarray  # B_i rho_f[m] c_j: the helper's extra compute
    inbound: np.ndarray  # B_i D[m] / inbound_j: the helper's shared link
    lb: float
    exact_pruning: bool


def _rank_in_group(group: np.ndarray, key: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Rank of each entry within its group, ordered by (key, tie)."""
    o = np.lexsort((tie, key, group))
    g = group[o]
    start = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    pos = np.arange(o.size) - np.repeat(start, np.diff(np.r_[start, o.size]))
    rank = np.empty(o.size, dtype=np.int64)
    rank[o] = pos
    return rank


def _candidates(problem: OffloadProblem, ub: float, max_candidates: int | None) -> _Cands:
    """The (i, j, m) worth a binary, each pruning step exact (see the module docstring)."""
    k = _Costs(problem)
    n = problem.num_agents
    a = k.a
    s = problem.helpers_can_serve
    i, j, m, pair, best_pair = _useful_pairs(problem, k, ub)
    # Lower bound: no agent finishes before its best option; a plan needs enough helpers.
    lb = max(counting_bound(a, s), float(np.max(np.minimum(a, best_pair))))
    keep = a[i] > lb  # agents at or below a lower bound never need a helper
    i, j, m, pair = i[keep], j[keep], m[keep], pair[keep]
    bi = k.b[i]
    slow = np.maximum((bi * k.rs[m]) * k.c[i] + k.o[i], (bi * k.d[m]) / problem.bandwidth[i, j] + (problem.latency[i, j] + k.o[i]))
    work = (bi * k.rf[m]) * k.c[j]
    inbound = (bi * k.d[m]) / k.inb[j]
    pair_key = i * n + j
    # One-to-one: only the pair time matters, so keep each (i, j)'s best split (lowest row
    # on ties).  Many-to-one: drop the splits another split of the same (i, j) dominates.
    keep = _rank_in_group(pair_key, pair, m) == 0 if s == 1 else _undominated_splits(pair_key, m, slow, work, inbound)
    i, j, m, pair, slow, work, inbound = (x[keep] for x in (i, j, m, pair, slow, work, inbound))
    n_slow = int(np.count_nonzero(a > lb))
    cap = n_slow if s == 1 else None  # Hall: |S0| cheapest helpers suffice one-to-one
    exact_pruning = True
    if max_candidates is not None and (cap is None or max_candidates < cap):
        cap, exact_pruning = max_candidates, False
    if cap is not None and i.size:
        keep = _helper_rank(i, j, m, pair, n) < cap
        if not exact_pruning and keep.all():
            exact_pruning = True  # the cap did not bite
        i, j, m, pair, slow, work, inbound = (x[keep] for x in (i, j, m, pair, slow, work, inbound))
    return _Cands(i, j, m, pair, slow, work, inbound, lb, exact_pruning)


def _useful_pairs(problem: OffloadProblem, k: _Costs, ub: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, m, pair time) of every pair with a pair time below a_i and at most ub, over
    the nondominated splits, and each agent's best pair time (N,), costed in row blocks."""
    n = problem.num_agents
    a = k.a
    ms = problem.splits.nondominated()
    cols = np.arange(n)
    best_pair = np.full(n, np.inf)
    ii, jj, mm, pp = [], [], [], []
    with np.errstate(divide="ignore", invalid="ignore"):  # diagonal links are masked out
        step = max(1, _BLOCK_ELEMS // max(1, n * ms.size))
        for lo in range(0, n, step):
            rows = np.arange(lo, min(n, lo + step))
            pair = k.cost(rows[:, None], cols[None, :], ms)  # (r, N, M)
            pair[np.arange(rows.size), rows, :] = np.inf  # no self pairing
            best_pair[rows] = pair.min(axis=(1, 2))
            # Useless: i alone is no worse (pair >= a_i), or worse than the upper bound.
            r, j, m = np.nonzero((pair < a[rows][:, None, None]) & (pair <= ub))
            ii.append(rows[r])
            jj.append(j)
            mm.append(ms[m])
            pp.append(pair[r, j, m])
    i, j, m, pair = (np.concatenate(x) for x in (ii, jj, mm, pp))
    return i, j, m, pair, best_pair


def _undominated_splits(pair_key: np.ndarray, m: np.ndarray, slow: np.ndarray, work: np.ndarray, inbound: np.ndarray) -> np.ndarray:
    """Mask of the candidates that many-to-one may need.

    A split is useless for (i, j) if another is no worse on the slow side, the helper's
    compute and the shared link, and better on one (or equal and a lower row).
    """
    keep = np.ones(pair_key.size, dtype=bool)
    o = np.lexsort((m, pair_key))
    g = pair_key[o]
    start = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    gid = np.repeat(np.arange(start.size), np.diff(np.r_[start, o.size]))
    slot = np.arange(o.size) - start[gid]  # position within the (i, j) group
    width = int(slot.max()) + 1 if o.size else 0
    f = np.full((start.size, width, 3), np.inf)
    f[gid, slot] = np.stack([slow[o], work[o], inbound[o]], axis=1)
    present = np.zeros((start.size, width), dtype=bool)
    present[gid, slot] = True
    dominated = np.zeros((start.size, width), dtype=bool)
    for t in range(width):
        for u in range(width):
            if u == t:
                continue
            le = np.all(f[:, u] <= f[:, t], axis=1)
            lt = np.any(f[:, u] < f[:, t], axis=1)
            dominated[:, t] |= present[:, u] & le & (lt | (u < t))
    keep[o] = ~dominated[gid, slot]
    return keep


def _helper_rank(i: np.ndarray, j: np.ndarray, m: np.ndarray, pair: np.ndarray, n: int) -> np.ndarray:
    """Per candidate, the rank of its helper j among agent i's helpers, by their cheapest
    pair time (ties: lower j)."""
    pair_key = i * n + j
    head = _rank_in_group(pair_key, pair, m) == 0
    r_head = _rank_in_group(i[head], pair[head], j[head])
    lookup = dict(zip(pair_key[head].tolist(), r_head.tolist(), strict=True))
    return np.fromiter((lookup[x] for x in pair_key.tolist()), dtype=np.int64, count=i.size)


def _build(problem: OffloadProblem, c: _Cands, ub: float, warm: Plan) -> tuple[pulp.LpProblem, list[pulp.LpVariable]]:
    n = problem.num_agents
    a = problem.batches * problem.sec_per_batch + problem.overhead_s
    s = problem.helpers_can_serve
    offl = np.unique(c.i)
    helpers = np.unique(c.j)
    fixed_alone = np.setdiff1d(np.arange(n), offl)  # never offload: T >= a
    t_lb = max(c.lb, float(a[fixed_alone].max()) if fixed_alone.size else -math.inf)
    prob = pulp.LpProblem("comdml_offloading", pulp.LpMinimize)
    t = prob.add_variable("T", lowBound=t_lb, upBound=ub)
    x = [prob.add_variable(f"x_{int(i)}_{int(j)}_{int(m)}", 0, 1, cat=pulp.LpBinary) for i, j, m in zip(c.i, c.j, c.m, strict=True)]
    prob += t
    by_i: dict[int, list[int]] = {}
    by_j: dict[int, list[int]] = {}
    for e in range(len(x)):
        by_i.setdefault(int(c.i[e]), []).append(e)
        by_j.setdefault(int(c.j[e]), []).append(e)

    def lin(terms: list[tuple[pulp.LpVariable, float]], const: float = 0.0) -> pulp.LpAffineExpression:
        return pulp.LpAffineExpression(terms, constant=const)

    for i in offl:
        es = by_i[int(i)]
        prob += lin([(x[e], 1.0) for e in es]) <= 1, f"once_{i}"
        # T >= y_i a_i + sum x cost with y_i = 1 - sum x. One-to-one the pair time covers
        # both sides; many-to-one the slow side, the helper rows below do the rest (the
        # pair time is valid there too, but it slowed HiGHS down on random instances).
        cost = c.pair if s == 1 else c.slow
        prob += t >= lin([(x[e], float(cost[e] - a[i])) for e in es], float(a[i])), f"slow_{i}"
    for j in helpers:
        es = by_j[int(j)]
        own = by_i.get(int(j), [])  # j's own offloading options: y_j = 1 - sum of these
        prob += lin([(x[e], 1.0) for e in es] + [(x[e], float(s)) for e in own]) <= s, f"serve_{j}"
        if s > 1:
            prob += t >= lin([(x[e], float(c.work[e])) for e in es] + [(x[e], -float(a[j])) for e in own], float(a[j])), f"load_{j}"
            prob += (
                t
                >= lin(
                    [(x[e], float(c.inbound[e])) for e in es] + [(x[e], -float(problem.overhead_s[j])) for e in own],
                    float(problem.overhead_s[j]),
                ),
                f"link_{j}",
            )
    # Warm start (CBC uses it; HiGHS through PuLP ignores it): the upper-bound plan.
    chosen = {(int(i), int(warm.partner[i]), int(warm.split[i])) for i in np.flatnonzero(warm.partner >= 0)}
    for e, v in enumerate(x):
        v.setInitialValue(1 if (int(c.i[e]), int(c.j[e]), int(c.m[e])) in chosen else 0)
    t.setInitialValue(ub)
    return prob, x


def ilp(problem: OffloadProblem, time_limit_s: float = 10.0, msg: bool = False, max_candidates: int | None = None) -> Plan:
    """Solve the integer program; never raises on solver trouble (see module docstring)."""
    t0 = time.perf_counter()
    # The one-to-one optimum bounds T from above (for many-to-one too: every one-to-one
    # plan is feasible there), prunes every candidate above it and warm-starts CBC.
    warm = _upper_plan(problem)
    ub = warm.makespan
    c = _candidates(problem, ub, max_candidates)
    reason = ""
    plan: Plan | None = None
    try:
        if c.i.size == 0:
            # No candidate can lead below the upper-bound plan's makespan: it is optimal.
            plan = replace(
                warm,
                method="ilp",
                optimal=c.exact_pruning,
                lower_bound=c.lb,
                note=f"no useful candidate: the {warm.method} plan is optimal",
            )
        else:
            prob, x = _build(problem, c, ub, warm)
            remaining = max(0.01, time_limit_s - (time.perf_counter() - t0))
            prob.solve(_make_solver(remaining, msg))
            status = pulp.LpStatus.get(prob.status, str(prob.status))
            sol = prob.sol_status
            if sol not in (pulp.constants.LpSolutionOptimal, pulp.constants.LpSolutionIntegerFeasible):
                reason = f"solver status {status} (no solution within the {remaining:.3g}s left of the time limit)"
            else:
                vals = np.array([v.varValue if v.varValue is not None else 0.0 for v in x])
                on = vals > 0.5
                partner = np.full(problem.num_agents, -1, dtype=np.int64)
                split = np.full(problem.num_agents, -1, dtype=np.int64)
                partner[c.i[on]] = c.j[on]
                split[c.i[on]] = c.m[on]
                found = evaluate_plan(problem, partner, split, method="ilp", lower_bound=c.lb)
                proven = sol == pulp.constants.LpSolutionOptimal
                if proven:
                    # Within the solver's tolerances the rounded plan can sit a hair above
                    # the upper-bound plan, which is then proven optimal too: keep the better.
                    best = (
                        found
                        if found.makespan <= warm.makespan
                        else evaluate_plan(problem, warm.partner, warm.split, method="ilp", lower_bound=c.lb)
                    )
                    optimal = c.exact_pruning or best.makespan <= c.lb
                    plan = replace(best, optimal=optimal, note="" if c.exact_pruning else f"helpers capped at {max_candidates} per agent")
                else:
                    reason = f"time limit {time_limit_s:g}s reached before optimality was proven"
                    plan = found if found.makespan < warm.makespan else None
    except Exception as exc:  # a solver crash or bad solution must not end a run
        reason = f"solver error: {type(exc).__name__}: {exc}"
        plan = None
    if reason:
        plan = _fallback(problem, reason, plan, warm)
    assert plan is not None
    return replace(plan, solve_time_s=time.perf_counter() - t0)


def _upper_plan(problem: OffloadProblem) -> Plan:
    """`exact` (the one-to-one optimum), or greedy should exact ever fail."""
    try:
        return exact(problem)
    except Exception as exc:  # pragma: no cover - exact is deterministic and total
        log.warning("ilp: exact failed (%s); bounding with greedy", exc)
        return greedy(problem)


def _fallback(problem: OffloadProblem, reason: str, incumbent: Plan | None, fb: Plan) -> Plan:
    """The upper-bound plan (exact, else greedy), or a better ILP incumbent."""
    chosen = fb
    if incumbent is not None and incumbent.makespan < fb.makespan:
        chosen = replace(incumbent, optimal=False)
    note = f"ilp: {reason}; fell back to {chosen.method if chosen is fb else 'the ILP incumbent'}"
    if chosen is fb and fb.note:
        note += f" ({fb.note})"
    log.warning("%s", note)
    # exact already knows whether it is optimal for this problem's class; greedy and a
    # timed-out incumbent prove nothing.
    optimal = fb.optimal if chosen is fb else False
    return replace(chosen, note=note, optimal=optimal)
