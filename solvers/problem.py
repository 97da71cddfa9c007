"""The offloading problem and a plan as data, and the time model that scores any plan.

Owns `SplitTable`, `OffloadProblem`, `Plan`, `evaluate_plan` (the one yardstick every
solver is checked by) and `no_offload_plan`, plus the vectorised pair-cost kernel the
solvers share (`_Costs`). The time model is docs/method.md §3.4:

- alone:      a_i = B_i c_i + ovh_i
- offloader:  max(B_i rho_s[m] c_i, B_i D[m] / nu_ij + l_ij) + ovh_i
- helper:     max(B_j c_j + sum_i B_i rho_f[m_i] c_j, sum_i B_i D[m_i] / inbound_j) + ovh_j

An offloader's finish is when its side (prefix+aux compute, sending) is done; its
suffix is done at its helper's finish. For a one-to-one pair the larger of the two is
the pair time T_ij^m = max(slow compute, transfer, helper) (overheads included). The
shared-inbound term applies one-to-one too; by default (inbound = the fastest link into
j) it never binds there.

Every solver computes costs with the *same* floating-point expressions as
`evaluate_plan` (same operands, same association), so a solver's predicted makespan
and the yardstick's agree bit for bit and comparisons such as "beats T_i" are
decided identically everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "SplitTable",
    "OffloadProblem",
    "Plan",
    "evaluate_plan",
    "no_offload_plan",
]

# A share above this is almost surely a percentage passed where a fraction was meant;
# the aux head can push rho_s slightly above 1, hence not exactly 1.
_MAX_SHARE = 2.0


def _vector(name: str, value: object, n: int | None, dtype: type = np.float64) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}; pass one value per entry.")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but there are {n}; pass exactly {n} values.")
    if dtype is np.float64 and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinity; pass finite numbers.")
    return arr


_ROW_CHUNK = 512  # rows per pass over an (N, N) matrix: bounds temporaries at 10k agents


def _offdiag_ok(mat: np.ndarray, test: str) -> bool:
    """True when every off-diagonal entry passes `test` (the diagonal is ignored)."""
    n = mat.shape[0]
    for lo in range(0, n, _ROW_CHUNK):
        blk = mat[lo : lo + _ROW_CHUNK]
        if test == "finite":
            bad = ~np.isfinite(blk)
        elif test == "positive":
            bad = ~(blk > 0)
        else:
            bad = ~(blk >= 0)
        r = np.arange(blk.shape[0])
        bad[r, lo + r] = False
        if bad.any():
            return False
    return True


def _colmax_offdiag(mat: np.ndarray) -> np.ndarray:
    """(N,) max over i != j of mat[i, j], in row chunks (no (N, N) copy)."""
    n = mat.shape[0]
    if n == 1:
        return np.ones(1)  # a lone agent never helps; any positive value will do
    out = np.full(n, -np.inf)
    for lo in range(0, n, _ROW_CHUNK):
        blk = mat[lo : lo + _ROW_CHUNK].copy()
        r = np.arange(blk.shape[0])
        blk[r, lo + r] = -np.inf
        np.maximum(out, blk.max(axis=0), out=out)
    return out


@dataclass(frozen=True, eq=False)
class SplitTable:
    """Per split point m (a row): compute shares and bytes per batch, from profiling."""

    split_ids: np.ndarray  # (M,) int: the model's split point m, for display
    rho_s: np.ndarray  # (M,) share of a full batch's compute for prefix+aux (slow side)
    rho_f: np.ndarray  # (M,) share for the suffix (helper side)
    bytes_per_batch: np.ndarray  # (M,) D[m]: bytes sent per batch (activations + labels)

    def __post_init__(self) -> None:
        rho_s = _vector("SplitTable.rho_s", self.rho_s, None)
        m = rho_s.shape[0]
        if m < 1:
            raise ValueError("SplitTable has no split; pass at least one split point.")
        rho_f = _vector("SplitTable.rho_f", self.rho_f, m)
        d = _vector("SplitTable.bytes_per_batch", self.bytes_per_batch, m)
        ids = np.asarray(self.split_ids)
        if ids.ndim != 1 or ids.shape[0] != m or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"SplitTable.split_ids must be {m} integers, one per split row; pass the model's split points.")
        for name, arr in (("rho_s", rho_s), ("rho_f", rho_f)):
            if np.any(arr < 0) or np.any(arr > _MAX_SHARE):
                raise ValueError(
                    f"SplitTable.{name} must lie in [0, {_MAX_SHARE}] (a share of one full-model batch); pass fractions, not percentages."
                )
        if np.any(d < 0):
            raise ValueError("SplitTable.bytes_per_batch must be >= 0; pass the bytes of one batch of smashed data and labels.")
        object.__setattr__(self, "split_ids", ids.astype(np.int64))
        object.__setattr__(self, "rho_s", rho_s)
        object.__setattr__(self, "rho_f", rho_f)
        object.__setattr__(self, "bytes_per_batch", d)

    @property
    def num_splits(self) -> int:
        return int(self.rho_s.shape[0])

    def nondominated(self) -> np.ndarray:
        """Row indices of splits no other split beats on all of rho_s, rho_f and D.

        Every term of the time model is non-decreasing in each of the three, so a
        dominated split is never needed by an optimal plan; among exact duplicates the
        lowest row is kept (the same tie-break as the solvers' argmin).
        """
        keys = np.stack([self.rho_s, self.rho_f, self.bytes_per_batch], axis=1)  # (M, 3)
        keep = []
        for m in range(keys.shape[0]):
            le = np.all(keys <= keys[m], axis=1)
            lt = np.any(keys < keys[m], axis=1)
            dominated = np.any(le & lt) or np.any(np.all(keys[:m] == keys[m], axis=1))
            if not dominated:
                keep.append(m)
        return np.asarray(keep, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class OffloadProblem:
    """One round's offloading problem: per-agent work and speed, links, split table."""

    batches: np.ndarray  # (N,) B_i batches this round (float ok, >= 0)
    sec_per_batch: np.ndarray  # (N,) c_i seconds per full-model batch, > 0
    bandwidth: np.ndarray  # (N, N) bytes/s of link i->j (diagonal ignored), > 0
    latency: np.ndarray  # (N, N) seconds, >= 0 (diagonal ignored)
    splits: SplitTable
    overhead_s: np.ndarray | None = None  # (N,) seconds added to every agent's finish
    inbound_bandwidth: np.ndarray | None = None  # (N,) shared inbound bytes/s of a helper
    helpers_can_serve: int = 1  # 1 = one-to-one (the paper); >1 = many-to-one

    def __post_init__(self) -> None:
        b = _vector("batches", self.batches, None)
        n = b.shape[0]
        if n < 1:
            raise ValueError("batches is empty; pass one batch count per agent (at least one agent).")
        if np.any(b < 0):
            raise ValueError("batches must be >= 0; pass each agent's number of batches this round.")
        c = _vector("sec_per_batch", self.sec_per_batch, n)
        if np.any(c <= 0):
            raise ValueError("sec_per_batch must be > 0 for every agent; pass each agent's measured seconds per full-model batch.")
        if not isinstance(self.splits, SplitTable):
            raise ValueError("splits must be a SplitTable; build one with SplitTable(split_ids, rho_s, rho_f, bytes_per_batch).")
        bw = np.asarray(self.bandwidth, dtype=np.float64)
        lat = np.asarray(self.latency, dtype=np.float64)
        for name, mat in (("bandwidth", bw), ("latency", lat)):
            if mat.shape != (n, n):
                raise ValueError(f"{name} has shape {mat.shape} but there are {n} agents; pass an ({n}, {n}) matrix of links i->j.")
        if not _offdiag_ok(bw, "finite") or not _offdiag_ok(bw, "positive"):
            raise ValueError("bandwidth must be finite and > 0 off the diagonal; pass bytes/s for every link i->j.")
        if not _offdiag_ok(lat, "finite") or not _offdiag_ok(lat, "nonnegative"):
            raise ValueError("latency must be finite and >= 0 off the diagonal; pass seconds for every link i->j.")
        if self.overhead_s is None:
            ovh = np.zeros(n)
        else:
            ovh = _vector("overhead_s", self.overhead_s, n)
            if np.any(ovh < 0):
                raise ValueError("overhead_s must be >= 0; pass each agent's model-exchange seconds.")
        if self.inbound_bandwidth is None:
            # Without a shared inbound link the fastest link into j bounds what it can receive.
            inb = _colmax_offdiag(bw)
        else:
            inb = _vector("inbound_bandwidth", self.inbound_bandwidth, n)
            if np.any(inb <= 0):
                raise ValueError("inbound_bandwidth must be > 0; pass each helper's shared inbound bytes/s.")
        hcs = self.helpers_can_serve
        if isinstance(hcs, bool) or not isinstance(hcs, (int, np.integer)) or hcs < 1:
            raise ValueError("helpers_can_serve must be an integer >= 1; pass 1 for one-to-one pairs or k > 1 for many-to-one.")
        object.__setattr__(self, "batches", b)
        object.__setattr__(self, "sec_per_batch", c)
        object.__setattr__(self, "bandwidth", bw)
        object.__setattr__(self, "latency", lat)
        object.__setattr__(self, "overhead_s", ovh)
        object.__setattr__(self, "inbound_bandwidth", inb)
        object.__setattr__(self, "helpers_can_serve", int(hcs))

    @classmethod
    def from_agent_links(
        cls,
        batches: np.ndarray,
        sec_per_batch: np.ndarray,
        agent_bandwidth: np.ndarray,
        agent_latency: np.ndarray,
        splits: SplitTable,
        overhead_s: np.ndarray | None = None,
        helpers_can_serve: int = 1,
    ) -> OffloadProblem:
        """Links from per-agent NICs: nu_ij = min(bw_i, bw_j), l_ij = lat_i + lat_j, inbound_j = bw_j."""
        bw = _vector("agent_bandwidth", agent_bandwidth, None)
        lat = _vector("agent_latency", agent_latency, bw.shape[0])
        if np.any(bw <= 0):
            raise ValueError("agent_bandwidth must be > 0; pass each agent's bytes/s.")
        if np.any(lat < 0):
            raise ValueError("agent_latency must be >= 0; pass each agent's one-way seconds.")
        return cls(
            batches=batches,
            sec_per_batch=sec_per_batch,
            bandwidth=np.minimum.outer(bw, bw),
            latency=np.add.outer(lat, lat),
            splits=splits,
            overhead_s=overhead_s,
            inbound_bandwidth=bw,
            helpers_can_serve=helpers_can_serve,
        )

    @property
    def num_agents(self) -> int:
        return int(self.batches.shape[0])

    def alone(self) -> np.ndarray:
        """(N,) finish time of each agent training alone: B_i c_i + ovh_i."""
        return self.batches * self.sec_per_batch + self.overhead_s


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


def no_offload_plan(problem: OffloadProblem) -> Plan:
    """Everyone trains alone (the straggler-bound baseline)."""
    n = problem.num_agents
    none = np.full(n, -1, dtype=np.int64)
    return evaluate_plan(problem, none, none.copy(), method="none")


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
