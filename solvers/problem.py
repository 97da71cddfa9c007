"""The offloading problem as data: `SplitTable` and `OffloadProblem`, validated on construction.

Owns the inputs every solver reads (per-agent batches and speed, the link matrices, the
split table) and their checks: a bad input raises ValueError in one sentence that says
how to fix it.  It imports nothing else of `solvers`: a plan and its time model live in
solvers/plan.py, the solvers' pair-cost kernel in solvers/costs.py, and both import
this module (never the other way round).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "AgentLinks",
    "OffloadProblem",
    "SplitTable",
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


class AgentLinks:
    """An (N, N) link matrix made from per-agent figures, computed where it is read and never stored.

    Entry [i, j] is min(v_i, v_j) (`kind` "min": a link runs at its slower end's
    bandwidth) or v_i + v_j ("add": both ends' latency): the same floats as
    np.minimum.outer / np.add.outer, bit for bit, without the 8 N^2 bytes (800 MB at
    10,000 agents).  Indexing: [i, j] with ints or arrays broadcast as numpy's fancy
    indexing does; [i] is row i; np.asarray gives the dense matrix.
    """

    def __init__(self, values: np.ndarray, kind: str) -> None:
        if kind not in ("min", "add"):
            raise ValueError(f"AgentLinks kind {kind!r} is not min or add; pass min for bandwidth, add for latency.")
        self.values = np.asarray(values, dtype=np.float64)
        self.kind = kind
        self._op = np.minimum if kind == "min" else np.add

    @property
    def shape(self) -> tuple[int, int]:
        n = self.values.shape[0]
        return (n, n)

    def __getitem__(self, idx):
        v = self.values
        if isinstance(idx, tuple):
            i, j = idx
            return self._op(v[i], v[j])
        vi = v[idx]
        return self._op.outer(vi, v) if np.ndim(vi) else self._op(vi, v)

    def __array__(self, dtype=None, copy=None):
        out = self._op.outer(self.values, self.values)
        return out if dtype is None else out.astype(dtype)

    def __reduce__(self):
        return AgentLinks, (self.values, self.kind)


_ROW_CHUNK = 512  # rows per pass over an (N, N) matrix: bounds temporaries at 10k agents


def _links(mat: object, kind: str) -> np.ndarray | AgentLinks:
    """A link matrix as float64: AgentLinks as they are (never made dense), anything else as an array."""
    if isinstance(mat, AgentLinks):
        if mat.kind != kind:
            raise ValueError(f"AgentLinks of kind {mat.kind} given where {kind} links are needed; pass min for bandwidth, add for latency.")
        return mat
    return np.asarray(mat, dtype=np.float64)


def _offdiag_ok(mat: np.ndarray | AgentLinks, test: str) -> bool:
    """True when every off-diagonal entry passes `test` (the diagonal is ignored)."""
    if isinstance(mat, AgentLinks):
        # every off-diagonal entry is the min or the sum of two agents' values: checking the values
        # is enough (and stricter only for an infinite value, which no real link has)
        return mat.shape[0] < 2 or _values_ok(mat.values, test)
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


def _values_ok(v: np.ndarray, test: str) -> bool:
    if test == "finite":
        return bool(np.all(np.isfinite(v)))
    if test == "positive":
        return bool(np.all(v > 0))
    return bool(np.all(v >= 0))


def _colmax_offdiag(mat: np.ndarray | AgentLinks) -> np.ndarray:
    """(N,) max over i != j of mat[i, j], in row chunks (no (N, N) copy)."""
    if isinstance(mat, AgentLinks) and mat.shape[0] > 1:
        mat = np.asarray(mat)  # only without inbound_bandwidth, which every caller of AgentLinks passes
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
        bw, lat = _links(self.bandwidth, "min"), _links(self.latency, "add")
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
            bandwidth=AgentLinks(bw, "min"),
            latency=AgentLinks(lat, "add"),
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
