"""The optimal one-to-one plan in polynomial time (docs/method.md §4.3, project extension).

For a threshold T, every agent with a_i = B_i c_i + ovh_i > T must offload, to an agent
that stays whole, over an edge whose best pair time c_ij = min_m T_ij^m is <= T (such
a helper has a_j <= c_ij <= T, so it is never in the slow set itself). T is feasible
iff a bipartite matching covers the slow set; feasibility is monotone in T, and the
optimum is one of the values {a_k} U {c_ij}, so a binary search over those values finds
it. The matching is a unit-capacity max flow solved by scipy's Dinic (see `_Matcher`).

What keeps 10,000 agents fast:
- lower bound LB = max(counting bound, max_i min(a_i, min_j c_ij)): at T a one-to-one
  plan needs #{a > T} <= #{a <= T}, and no agent can finish before its best option;
  only agents with a_i > LB (the set S0) ever need a helper, and only j with a_j < a_i;
- dominated splits are dropped; each (i, j) edge keeps its best split;
- each slow agent keeps only its |S0| cheapest edges: if i has at least |S| neighbours
  at T, some neighbour is free whatever the others take, so any |S| of them do (Hall);
- the same argument lets a feasibility check peel agents whose degree is at least the
  number of slow agents left, and match only the rest;
- the lower bound is tried first: on realistic instances it is usually the optimum;
- before any max flow, one pass of a greedy matching (proves "feasible" when it covers
  everyone) and of Hall's condition on prefixes of rows (proves "infeasible");
- an infeasible max flow leaves its Hall violator (rows reachable in the residual graph:
  fewer helpers than rows); later probes try the last few before matching.
The hard case is a dense random (N, N) link matrix with half the agents slow: nearly
every slow agent needs one of the few fast ones, so each search step that the cheap
passes cannot settle is a max flow over ~N^2/5 edges: 3,000 agents take 2 s, 10,000
about 27 s (benchmarks/README.md). Per-agent links (`from_agent_links`) and the benchmark's instances
settle at the lower bound in a few probes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .costs import _Costs
from .plan import Plan, evaluate_plan
from .problem import OffloadProblem

__all__ = ["counting_bound", "exact", "lower_bound"]

_BLOCK_ELEMS = 2_000_000  # (rows x cols x splits) per costing block: ~16 MB per temporary
_VIOLATORS_KEPT = 4  # Hall violators remembered from infeasible max flows


def counting_bound(a: np.ndarray, helpers_can_serve: int) -> float:
    """Smallest T at which #{a > T} <= helpers_can_serve * #{a <= T} is possible.

    Each helper finishes no earlier than its own a_j, so helpers are among the agents
    with a_j <= T, and each serves at most `helpers_can_serve` offloaders.
    """
    n = a.shape[0]
    k = math.ceil(n / (1 + helpers_can_serve))  # need at least k agents with a <= T
    return float(np.sort(a)[max(k, 1) - 1])


@dataclass
class _Edges:
    """Candidate edges of the slow agents, row by row, each row cheapest first."""

    slow: np.ndarray  # (S,) agent ids of S0 (a_i > lb), slowest first
    start: np.ndarray  # (S + 1,) row r's edges are [start[r], start[r + 1])
    col: np.ndarray  # (E,) int32 helper agent id
    cost: np.ndarray  # (E,) c_ij = min over kept splits of T_ij^m
    rank: np.ndarray  # (E,) int32 position of the edge in its row
    lb: float  # one-to-one lower bound on the makespan
    row_part: float  # max_i min(a_i, min_j c_ij) over the costed rows


def _candidate_edges(problem: OffloadProblem, k: _Costs, ms: np.ndarray) -> _Edges:
    n = problem.num_agents
    a = k.a
    order = np.lexsort((np.arange(n), -a))  # slowest first, ties by index
    a_asc = a[order][::-1]  # ascending, for counting agents above a bound
    lb = counting_bound(a, 1)
    row_part = -np.inf
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    p = 0
    with np.errstate(divide="ignore", invalid="ignore"):  # diagonal links are masked out
        while p < n and a[order[p]] > lb:
            cols = order[p + 1 :]  # only faster-or-equal agents can help
            if cols.size == 0:  # the fastest agent has nobody to offload to
                row_part = max(row_part, float(a[order[p]]))
                lb = max(lb, row_part)
                break
            chunk = max(1, _BLOCK_ELEMS // (cols.size * ms.size))
            rows = order[p : p + chunk]
            rows = rows[a[rows] > lb]
            p += chunk
            cost, _ = k.min_cost(rows[:, None], cols[None, :], ms)  # (r, C)
            cost[cols[None, :] == rows[:, None]] = np.inf  # no self pairing
            cost[~(cost < a[rows][:, None])] = np.inf  # useless unless it beats staying alone
            row_part = max(row_part, float(np.minimum(a[rows], cost.min(axis=1)).max()))
            lb = max(lb, row_part)
            # Agents above the current lb bound |S0| from above; a row never needs
            # more than |S0| edges (Hall), so keep only that many cheapest.
            keep_k = n - int(np.searchsorted(a_asc, lb, side="right"))
            if keep_k < cols.size:
                idx = np.argpartition(cost, keep_k - 1, axis=1)[:, :keep_k]
            else:
                idx = np.broadcast_to(np.arange(cols.size), cost.shape)
            sub = np.take_along_axis(cost, idx, axis=1)
            o = np.argsort(sub, axis=1, kind="stable")
            sub = np.take_along_axis(sub, o, axis=1)
            idx = np.take_along_axis(idx, o, axis=1)
            r_i, c_i = np.nonzero(np.isfinite(sub))  # row-major: rows in order, cheapest first
            parts.append((rows[r_i], cols[idx[r_i, c_i]], sub[r_i, c_i], c_i))

    def cat(t: int, dtype: type) -> np.ndarray:
        return np.concatenate([x[t] for x in parts]).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    row_a, col, cost, rank = cat(0, np.int64), cat(1, np.int32), cat(2, np.float64), cat(3, np.int32)
    slow = order[: n - int(np.searchsorted(a_asc, lb, side="right"))]  # a > lb, slowest first
    keep = (a[row_a] > lb) & (rank < slow.size)
    rid = np.full(n, -1, dtype=np.int64)
    rid[slow] = np.arange(slow.size)
    counts = np.bincount(rid[row_a[keep]], minlength=slow.size)
    return _Edges(
        slow=slow,
        start=np.r_[0, np.cumsum(counts)],
        col=col[keep],
        cost=cost[keep],
        rank=rank[keep],
        lb=float(lb),
        row_part=float(row_part),
    )


def lower_bound(problem: OffloadProblem) -> float:
    """A proven lower bound on the one-to-one optimal makespan (what `exact` starts from)."""
    return _candidate_edges(problem, _Costs(problem), problem.splits.nondominated()).lb


class _Matcher:
    """Feasibility of a threshold T on the candidate edges (see module docstring)."""

    def __init__(self, e: _Edges, a: np.ndarray, n: int) -> None:
        self.e = e
        self.n = n
        self.a_slow = a[e.slow]  # (S,)
        s = e.slow.size
        self.row_of = np.repeat(np.arange(s), np.diff(e.start))  # (E,)
        # Hall violators found by earlier infeasible max flows (rows of the slow set):
        # a set X with fewer helpers than rows at T stays one at every lower T (edges
        # only disappear, rows only join the slow set), and often still is one a little
        # above T, so a probe tries them before any matching.
        self.violators: list[np.ndarray] = []

    def match(self, t: float, assign: bool = False) -> np.ndarray | None:
        """None if T = t is infeasible; else (S,) helper of each slow agent with a > t
        and -1 for the others (with assign=False nobody is assigned: it only says
        "feasible")."""
        e = self.e
        s = e.slow.size
        need = self.a_slow > t  # (S,)
        out = np.full(s, -1, dtype=np.int64)
        n_need = int(np.count_nonzero(need))
        if n_need == 0:
            return out
        # Within a row edges are cheapest first, so every condition keeps a prefix.
        sel = (e.cost <= t) & (e.rank < n_need) & need[self.row_of]
        cs = np.r_[0, np.cumsum(sel)]
        deg = cs[e.start[1:]] - cs[e.start[:-1]]  # (S,) selected edges per row
        if np.any(deg[need] == 0):
            return None
        if np.count_nonzero(np.bincount(e.col[sel], minlength=self.n)) < n_need:
            return None  # fewer usable helpers than agents that need one (Hall, cheaply)
        if self._violated(sel, need):
            return None
        # Peel: a row whose degree is at least the number of rows still in play always
        # finds a free neighbour afterwards, so only the rest needs a real matching.
        need_rows = np.flatnonzero(need)
        by_deg = need_rows[np.lexsort((need_rows, -deg[need_rows]))]
        ok = deg[by_deg] >= n_need - np.arange(n_need)
        stop = n_need if ok.all() else int(np.argmin(ok))
        peeled, core = by_deg[:stop], by_deg[stop:]
        taken = np.zeros(self.n, dtype=bool)
        if core.size:
            core = np.sort(core)
            helper = self._match_core(core, sel, deg, assign)
            if helper is None:
                return None
            if assign:
                out[core] = helper
                taken[helper] = True
        if assign and peeled.size:
            # Reverse peel order: each row then has more neighbours than rows matched so
            # far; it takes its cheapest free helper.
            for r in peeled[::-1]:
                cj = e.col[e.start[r] : e.start[r] + deg[r]]
                free = cj[~taken[cj]]
                if free.size == 0:  # pragma: no cover - impossible by the peeling argument
                    raise RuntimeError("exact: peeling left a slow agent without a free helper")
                out[r] = free[0]
                taken[free[0]] = True
        return out

    def _violated(self, sel: np.ndarray, need: np.ndarray) -> bool:
        """True if a remembered Hall violator still has fewer helpers than rows."""
        in_x = np.zeros(need.size, dtype=bool)
        for violator in self.violators:
            x = violator[need[violator]]
            if x.size == 0:
                continue
            in_x[:] = False
            in_x[x] = True
            m = sel & in_x[self.row_of]
            if np.count_nonzero(np.bincount(self.e.col[m], minlength=self.n)) < x.size:
                return True
        return False

    def _match_core(self, core: np.ndarray, sel: np.ndarray, deg: np.ndarray, assign: bool) -> np.ndarray | None:
        """Helpers covering the `core` rows (ascending) over the selected edges, or None.

        Before the max flow, one cheap pass over the rows in ascending degree: a greedy
        matching (each row takes the free helper fewest rows can use) that, when it
        covers every row, proves feasibility; and Hall's condition on each prefix of
        rows (their neighbourhoods together must be at least as many), which, when it
        fails, proves infeasibility. Only when neither settles it does Dinic run.
        """
        e = self.e
        in_core = np.zeros(e.slow.size, dtype=bool)
        in_core[core] = True
        pick = sel & in_core[self.row_of]
        colcnt = np.bincount(e.col[pick], minlength=self.n)  # rows that can use helper j
        seen = np.zeros(self.n, dtype=bool)
        taken = np.zeros(self.n, dtype=bool)
        out = np.full(core.size, -1, dtype=np.int64)
        pos = np.empty(e.slow.size, dtype=np.int64)
        pos[core] = np.arange(core.size)
        n_seen = 0
        greedy_ok = True
        for q, r in enumerate(core[np.lexsort((core, deg[core]))]):
            cj = e.col[e.start[r] : e.start[r] + deg[r]]  # selected edges: a prefix
            new = cj[~seen[cj]]
            seen[new] = True
            n_seen += new.size
            if n_seen < q + 1:
                return None  # q+1 rows share fewer than q+1 helpers
            if greedy_ok:
                free = cj[~taken[cj]]
                if free.size == 0:
                    greedy_ok = False
                else:
                    j = free[np.argmin(colcnt[free])]
                    taken[j] = True
                    out[pos[r]] = j
        if greedy_ok:
            return out
        return self._flow(core, pick, assign)

    def _flow(self, core: np.ndarray, pick: np.ndarray, assign: bool) -> np.ndarray | None:
        """Match the `core` rows over the edges in `pick` (all in core rows), or None.

        Matching as a unit-capacity max flow, source -> rows -> helpers -> sink, solved
        by scipy's Dinic. (scipy's `maximum_bipartite_matching` would be the natural
        call, but its Hopcroft-Karp DFS never marks dead ends, scipy issue #26147, and
        on the near-critical threshold graphs met here it took 5-25 s on 3,000 agents
        where Dinic takes 0.1 s.) Nodes: 0 source, 1..r rows, then one per agent, sink.
        """
        r = core.size
        idx = np.flatnonzero(pick)  # row-major, and core is ascending: CSR order
        heads = (1 + r + self.e.col[idx]).astype(np.int32)
        rid = np.zeros(self.e.slow.size, dtype=np.int64)
        rid[core] = np.arange(r)
        ends = r + np.cumsum(np.bincount(rid[self.row_of[idx]], minlength=r))  # end of each row node
        last = int(ends[-1])
        sink = 1 + r + self.n
        indptr = np.concatenate([[0, r], ends, last + 1 + np.arange(self.n), [last + self.n]]).astype(np.int64)
        indices = np.concatenate([1 + np.arange(r, dtype=np.int32), heads, np.full(self.n, sink, dtype=np.int32)])
        # imported here: the greedy planner (every agent actor's default) never needs scipy (0.2 s to import)
        from scipy.sparse import csr_array
        from scipy.sparse.csgraph import breadth_first_order, maximum_flow

        g = csr_array((np.ones(indices.size, dtype=np.int32), indices, indptr), shape=(sink + 1, sink + 1))
        res = maximum_flow(g, 0, sink, method="dinic")
        if res.flow_value < r:
            # The rows reachable from the source in the residual graph have fewer
            # helpers than rows (Koenig): remember them for later probes.
            resid = g - res.flow
            resid.data[resid.data < 0] = 0
            resid.eliminate_zeros()
            reach = breadth_first_order(resid, 0, return_predecessors=False)
            rows = reach[(reach >= 1) & (reach <= r)] - 1
            self.violators = [core[rows], *self.violators[: _VIOLATORS_KEPT - 1]]
            return None
        if not assign:
            return np.zeros(0, dtype=np.int64)
        f = res.flow.tocoo()
        hit = (f.data > 0) & (f.row >= 1) & (f.row <= r) & (f.col > r) & (f.col < sink)
        out = np.full(r, -1, dtype=np.int64)
        out[f.row[hit] - 1] = f.col[hit] - r - 1
        return out


def exact(problem: OffloadProblem) -> Plan:
    """Optimal one-to-one plan (min makespan); see the module docstring."""
    t0 = time.perf_counter()
    k = _Costs(problem)
    a = k.a
    n = problem.num_agents
    ms = problem.splits.nondominated()
    e = _candidate_edges(problem, k, ms)
    matcher = _Matcher(e, a, n)
    # Candidate makespans >= lb, distinct; vals[-1] = max a: nobody needs a helper there.
    vals = np.unique(np.concatenate([e.cost[e.cost >= e.lb], a[a >= e.lb]]))
    last = vals.size - 1
    # Binary search for the first feasible candidate, the lower bound first: on most
    # instances it is the optimum.
    lo, hi = (0, 0) if matcher.match(float(vals[0])) is not None else (1, last)
    while lo < hi:
        mid = (lo + hi) // 2
        if matcher.match(float(vals[mid])) is None:
            lo = mid + 1
        else:
            hi = mid
    t_star = float(vals[hi])
    best = matcher.match(t_star, assign=True)
    if best is None:  # pragma: no cover - vals[hi] was checked feasible
        raise RuntimeError("exact: the optimal threshold became infeasible")
    partner = np.full(n, -1, dtype=np.int64)
    split = np.full(n, -1, dtype=np.int64)
    has = np.flatnonzero(best >= 0)
    offl, helper = e.slow[has], best[has]
    partner[offl] = helper
    # Best split of each matched pair (lowest row on ties), costed once more.
    split[offl] = ms[k.min_cost(offl, helper, ms)[1]]
    plan_note = ""
    optimal = True
    lb = e.lb
    if problem.helpers_can_serve > 1:
        # Optimal among one-to-one plans; proven optimal overall only if it meets a
        # many-to-one lower bound.
        lb = max(counting_bound(a, problem.helpers_can_serve), e.row_part)
        optimal = t_star <= lb
        plan_note = "optimal among one-to-one plans" + ("" if optimal else "; many-to-one may do better")
    plan = evaluate_plan(
        problem,
        partner,
        split,
        method="exact",
        optimal=optimal,
        note=plan_note,
        solve_time_s=time.perf_counter() - t0,
        lower_bound=lb,
    )
    if plan.makespan != t_star:  # the costs mirror evaluate_plan's arithmetic exactly
        raise RuntimeError(f"exact: plan makespan {plan.makespan!r} != threshold {t_star!r}")
    return plan
