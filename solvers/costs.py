"""The pair-cost kernel every solver shares (`_Costs`), vectorised over agents and splits.

`_Costs` computes the one-to-one pair time T_ij^m (and its parts) with *exactly* the
floating-point expressions `evaluate_plan` (solvers/plan.py) uses: same operands, same
association. So a solver's predicted makespan and the yardstick's agree bit for bit,
and comparisons such as "beats T_i" are decided identically everywhere. Change one and
the other together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: solvers.problem is the layer below
    from .problem import OffloadProblem

_SMALL = 1 << 16  # pair times per call below which one (n, M) slab beats a loop over splits


class _Costs:
    """Pair times T_ij^m computed with exactly the expressions `evaluate_plan` uses.

    The solvers take minima and argmins of these, so every comparison they make
    ("beats a_i", "<= T") is the one the yardstick would make, bit for bit:
    slow = (B_i rho_s) c_i + o_i,  xfer = (B_i D) / nu_ij + (l_ij + o_i),
    helper = a_j + (B_i rho_f) c_j,  inbound = (B_i D) / inbound_j + o_j.
    """

    def __init__(self, problem: OffloadProblem) -> None:
        self.p = problem
        self.b = problem.batches
        self.c = problem.sec_per_batch
        self.o = problem.overhead_s
        self.a = self.b * self.c + self.o  # (N,) alone finish
        sp = problem.splits
        self.rs, self.rf, self.d = sp.rho_s, sp.rho_f, sp.bytes_per_batch
        self.inb = problem.inbound_bandwidth

    def slow_side(self, i: np.ndarray | int, ms: np.ndarray) -> np.ndarray:
        """shape(i) + (M,) offloader compute finish (helper-independent)."""
        i = np.asarray(i)
        return (self.b[i][..., None] * self.rs[ms]) * self.c[i][..., None] + self.o[i][..., None]

    def cost(self, i: np.ndarray | int, j: np.ndarray | int, ms: np.ndarray) -> np.ndarray:
        """broadcast(shape(i), shape(j)) + (M,) one-to-one pair time of i offloading
        split ms to j. i = (r, 1), j = (1, C) gives a block; equal shapes give pairs.
        The same elementwise operations as `_per_split`, so the values are identical."""
        i, j = np.asarray(i), np.asarray(j)
        bi, ci, oi = self.b[i][..., None], self.c[i][..., None], self.o[i][..., None]
        bd = bi * self.d[ms]
        x = bd / self.p.bandwidth[i, j][..., None]
        x += (self.p.latency[i, j] + self.o[i])[..., None]
        np.maximum(x, (bi * self.rs[ms]) * ci + oi, out=x)
        h = (bi * self.rf[ms]) * self.c[j][..., None]
        h += self.a[j][..., None]
        inb = bd / self.inb[j][..., None]
        inb += self.o[j][..., None]
        np.maximum(h, inb, out=h)
        np.maximum(x, h, out=x)
        return x

    def min_cost(self, i: np.ndarray | int, j: np.ndarray | int, ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(min over ms of the pair time, position in ms of the first minimum)."""
        i, j = np.asarray(i), np.asarray(j)
        if np.broadcast_shapes(i.shape, j.shape, (1,))[0] * len(ms) <= _SMALL and i.ndim <= 1 and j.ndim <= 1:
            # Small (the greedy's per-agent calls): one (n, M) slab, few Python steps.
            full = self.cost(i, j, ms)
            return full.min(axis=-1), np.argmin(full, axis=-1)
        best: np.ndarray | None = None
        arg: np.ndarray | None = None
        for t, cm in enumerate(self._per_split(i, j, ms)):
            if best is None:
                best, arg = cm, np.zeros(cm.shape, dtype=np.int64)
            else:
                better = cm < best  # strict: ties keep the lower split row
                np.copyto(best, cm, where=better)
                arg[better] = t
        assert best is not None and arg is not None
        return best, arg

    def _per_split(self, i: np.ndarray | int, j: np.ndarray | int, ms: np.ndarray):
        """Yield, per split in ms, the broadcast(shape(i), shape(j)) pair times.

        One (r, C) slab at a time: no (r, C, M) temporaries, and the j-independent and
        m-independent parts are computed once.
        """
        i, j = np.asarray(i), np.asarray(j)
        shape = np.broadcast_shapes(i.shape, j.shape)
        bi, ci, oi = self.b[i], self.c[i], self.o[i]
        bw = self.p.bandwidth[i, j]
        lo = self.p.latency[i, j] + oi  # (l_ij + o_i)
        cj, aj, oj, inbj = self.c[j], self.a[j], self.o[j], self.inb[j]
        h = np.empty(shape)
        for m in ms:
            bd = bi * self.d[m]
            x = np.divide(bd, bw)  # a fresh slab per split: it is handed out
            x += lo
            np.maximum(x, (bi * self.rs[m]) * ci + oi, out=x)
            np.multiply(bi * self.rf[m], cj, out=h)
            h += aj
            np.maximum(x, h, out=x)
            np.divide(bd, inbj, out=h)
            h += oj
            np.maximum(x, h, out=x)
            yield x
