"""Plain-Python oracles and instance generators shared by the tests/test_solvers_*.py files.

The oracles here are written independently of the package, in plain Python: the time
model (`_pair`, `_finish`), the paper's greedy rule as a loop, and brute-force optima
over every plan of small instances. Instances: `_table` (a split table), the hypothesis
strategy `problems` (small instances with coarse values, so ties are common) and `FAST`.
Not a test module (pytest collects test_*.py only).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from solvers import OffloadProblem, SplitTable

# ---------------------------------------------------------------- plain-Python oracles


_LISTS: dict[int, tuple] = {}


def _lists(p: OffloadProblem):
    key = id(p)
    if key not in _LISTS or _LISTS[key][0] is not p:
        _LISTS[key] = (
            p,
            (
                p.batches.tolist(),
                p.sec_per_batch.tolist(),
                p.overhead_s.tolist(),
                p.bandwidth.tolist(),
                p.latency.tolist(),
                p.inbound_bandwidth.tolist(),
                p.splits.rho_s.tolist(),
                p.splits.rho_f.tolist(),
                p.splits.bytes_per_batch.tolist(),
            ),
        )
    return _LISTS[key][1]


def _alone(p: OffloadProblem) -> list[float]:
    b, c, o, *_ = _lists(p)
    return [b[i] * c[i] + o[i] for i in range(len(b))]


def _pair(p: OffloadProblem, i: int, j: int, m: int) -> float:
    """One-to-one pair time T_ij^m (docs/method.md §3.4), overheads included."""
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
    for j in {x for x in partner if x >= 0}:
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
            for i, m in zip(offl, ms, strict=True):
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

    def ints(lo, hi, size):
        return np.array(draw(st.lists(st.integers(lo, hi), min_size=size, max_size=size)), float)

    batches = ints(0, 30, n)
    sec = ints(1, 40, n) / 10
    bw = ints(1, 10, n * n).reshape(n, n) * 1e6
    lat = ints(0, 3, n * n).reshape(n, n) / 10
    ovh = ints(0, 2, n) / 2 if draw(st.booleans()) else None
    inb = ints(1, 20, n) * 1e6 if draw(st.booleans()) else None
    rho_s = ints(0, 10, m) / 10
    rho_f = ints(0, 10, m) / 10
    d = ints(0, 8, m) * 1e6
    return OffloadProblem(
        batches, sec, bw, lat, SplitTable(np.arange(m), rho_s, rho_f, d), overhead_s=ovh, inbound_bandwidth=inb, helpers_can_serve=serve
    )


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
