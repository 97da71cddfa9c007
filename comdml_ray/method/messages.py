"""The messages of a synchronous round: what agent groups send each other and the driver (pure dataclasses).

Owns `AgentState` (published before planning), `PlanDigest` (a group's plan, summarised
for the driver's agreement check and routing), `OffloadOut` (an offloader's refs for its
helper), `Transfer` (one peer-to-peer message of the wall-clock round) and `PhaseReport` (a group's per-agent work and statistics).  They carry refs and
small numbers, never payloads.  No torch, no Ray: the round's reducer imports them
without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from comdml_ray.method.store import Shipped
from comdml_ray.timing.clock import AgentWork


@dataclass(frozen=True)
class AgentState:
    """What an agent publishes before planning: enough for every peer to compute the same plan."""

    agent: int
    batches: int  # batches it must train this round
    sec_per_batch: float  # its smoothed estimate of seconds per full-model batch
    bandwidth_Bps: float
    latency_s: float
    links: tuple[tuple[int, float], ...] = ()  # (sender j, observed bytes/s of link j->agent): online profiling, wall clock only


@dataclass(frozen=True)
class PlanDigest:
    group: int
    digest: str
    out: tuple[int, ...]  # groups hosting the helpers of this group's offloaders (sorted)


@dataclass
class OffloadOut:
    """An offloader's outbound data for its helper: refs only, the data is in the store."""

    offloader: int
    helper: int
    split: int  # split point m
    suffix: Shipped  # flat suffix weights at round start
    chunk_refs: list[Any] = field(
        default_factory=list
    )  # each chunk: list of smashed.SmashedBatch (z (B, C_m, H_m, W_m) encoded, y (B,) int64)


@dataclass
class Transfer:
    """A peer-to-peer message of the wall-clock round (`wall_steps`): a ref and when the receiver may use it."""

    kind: str  # "suffix" (offloader -> helper, round start), "chunk" (activations), "back" (trained suffix, helper -> offloader)
    round: int
    src: int  # sending agent
    offloader: int
    split: int  # split point m
    box: list[Any]  # [ObjectRef]: nested, so Ray hands the ref over instead of the value
    nbytes: int
    delay_s: float = 0.0  # the sender's emulated link delay, seconds from its sending (0: the link is real)
    arrived: float = 0.0  # when it reached the receiver, on the receiver's clock (`emulation.now()`, set by its inbox)
    batches: int = 0  # batches in a chunk
    last: bool = False  # the offloader's last chunk of the round


@dataclass
class PhaseReport:
    """What a group returns from a phase: per-agent work and train statistics (small; no payloads)."""

    work: dict[int, AgentWork] = field(default_factory=dict)
    loss_sum: dict[int, float] = field(default_factory=dict)
    batches: dict[int, int] = field(default_factory=dict)
    bytes_sent: dict[int, int] = field(default_factory=dict)
    whole_s: dict[int, float] = field(default_factory=dict)  # wall clock: seconds from the round's start until the agent's model was whole
    observed_spb: dict[int, float] = field(
        default_factory=dict
    )  # wall clock: device seconds per full-model batch this round (`Pacer.work_s`)

    def add(self, k: int, loss_sum: float, batches: int, sent: int) -> None:
        self.loss_sum[k] = self.loss_sum.get(k, 0.0) + loss_sum
        self.batches[k] = self.batches.get(k, 0) + batches
        self.bytes_sent[k] = self.bytes_sent.get(k, 0) + sent
