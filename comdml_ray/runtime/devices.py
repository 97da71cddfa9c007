"""What each actor trains on, and which collective backend the run's ranks can share (pure: no Ray, no torch).

Owns
- `RankDevice`: what one rank (one agent actor) holds, as plain data: its node, the
  GPU ids Ray assigned it on that node, whether CUDA works in its process and
  whether Ray's NCCL backend is usable there (it needs cupy: `pip install -e .[gpu]`);
  `RankDevice.of(placement)` reads it from `AgentHost.placement()`;
- `choose_backend(ranks)`: the collective every rank then joins, with the reason in
  one sentence (the run's log line and summary.json's `collective`):
  * NCCL only when every rank trains on a GPU, NCCL imports on every rank, and no two
    ranks hold the same device (a GPU id on a node).  NCCL refuses two ranks of one
    communicator on one device, which is what `--gpus-per-agent 0.25` gives: four
    actors on each GPU;
  * otherwise gloo, on host copies.  The averaging's arithmetic already runs on the
    host (`method.averaging`: flat float32 numpy models, summed in the ring's one
    order), so gloo moves exactly the arrays it sums and no device copy is added;
    ranks that share a GPU each take part as they would on a CPU.  (The other way,
    a local reduce per device and one NCCL rank per device, would need a second
    summation order and a device round trip per hop; for the models here, 0.1 to
    7 MB, gloo's TCP hop is not the cost of a round.  Not measured: no GPU was
    available when this was written; benchmarks/gpu_check.py prints both runs' walls.)
The actors report, the driver chooses (`faults.RunRecovery.join_collective`) and
tells every actor the same backend, so the ranks cannot disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RankDevice:
    """One rank's device, as plain data (tests build these by hand)."""

    node: str  # Ray node id (or any name unique per machine)
    gpus: tuple[str, ...] = ()  # GPU ids Ray assigned this rank on its node (several ranks may share one)
    cuda: bool = False  # the rank trains on CUDA (it has a GPU id and torch sees a GPU)
    nccl: bool = False  # Ray's NCCL backend imports in this rank's process (cupy installed and working)

    @property
    def on_gpu(self) -> bool:
        return self.cuda and bool(self.gpus)

    @staticmethod
    def of(placement: Mapping) -> RankDevice:
        """From `AgentHost.placement()`: node_id, gpu_ids, device ("cpu" or "cuda:0") and nccl."""
        return RankDevice(
            node=str(placement["node_id"]),
            gpus=tuple(str(g) for g in placement.get("gpu_ids", ())),
            cuda=str(placement.get("device", "cpu")).startswith("cuda"),
            nccl=bool(placement.get("nccl", False)),
        )


@dataclass(frozen=True)
class CollectiveChoice:
    backend: str  # "nccl", "gloo", or "none" (one rank: no group)
    reason: str  # one sentence: why this backend

    @property
    def on_device(self) -> bool:
        """Whether the collective's tensors live on the GPU (NCCL) rather than on the host (gloo)."""
        return self.backend == "nccl"


def shared_devices(ranks: Sequence[RankDevice]) -> dict[tuple[str, str], list[int]]:
    """GPU (node, id) -> the ranks that hold it, for every GPU held by more than one rank."""
    holders: dict[tuple[str, str], list[int]] = {}
    for r, rank in enumerate(ranks):
        if rank.on_gpu:
            for g in rank.gpus:
                holders.setdefault((rank.node, g), []).append(r)
    return {dev: rs for dev, rs in holders.items() if len(rs) > 1}


def choose_backend(ranks: Sequence[RankDevice]) -> CollectiveChoice:
    """The collective backend for these ranks (in rank order): a pure function of what they hold."""
    n = len(ranks)
    if n <= 1:
        return CollectiveChoice("none", "one actor: no collective group")
    on_gpu = [r for r, rank in enumerate(ranks) if rank.on_gpu]
    if not on_gpu:
        return CollectiveChoice("gloo", f"no rank trains on a GPU: gloo over the {n} ranks")
    if len(on_gpu) < n:
        return CollectiveChoice(
            "gloo",
            f"{n - len(on_gpu)} of {n} ranks train on the CPU, the rest on GPUs: gloo on host copies (NCCL needs a GPU on every rank)",
        )
    shared = shared_devices(ranks)
    if shared:
        most = max(len(rs) for rs in shared.values())
        return CollectiveChoice(
            "gloo",
            f"{len(shared)} GPU(s) are shared by up to {most} ranks each (NCCL refuses two ranks on one device): gloo on host copies",
        )
    without = [r for r in on_gpu if not ranks[r].nccl]
    if without:
        return CollectiveChoice(
            "gloo",
            f"NCCL (cupy) does not import on {len(without)} of {n} ranks: gloo on host copies; `pip install -e .[gpu]` on the GPU nodes",
        )
    nodes = Counter(rank.node for rank in ranks)
    return CollectiveChoice("nccl", f"every one of the {n} ranks holds its own GPU ({len(nodes)} node(s)) and NCCL imports: NCCL")
