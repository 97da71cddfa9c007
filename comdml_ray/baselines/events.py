"""The event-driven virtual clock of the baselines: events, the clock, and the agents' uplinks.

Owns
- the events: `StepDone` (an agent finished a local step), `Delivered` (a transfer
  reached its receiver), `PairAverage` (AD-PSGD's pairwise average happens);
- `EventClock`: a heap of (virtual time, seq, event) popped in time order (seq breaks
  ties in push order, so a run is deterministic); `snapshot`/`restore` for checkpoints;
- `Transfer` and `Uplink`: one agent's outbound link, transfers one after the other at
  the link's bandwidth (+ latency on arrival), with the rule that transfers of an older
  step not yet started when a newer step finishes are dropped (Swift, DivShare).
No torch, no Ray.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from comdml_ray.method.async_steps import FragmentSpec


@dataclass(frozen=True)
class StepDone:
    agent: int
    step: int  # the agent's own step count, from 0


@dataclass(frozen=True)
class Delivered:
    transfer: Transfer


@dataclass(frozen=True)
class PairAverage:
    active: int
    passive: int


class EventClock:
    """Events in virtual-time order; ties in the order they were pushed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self.now = 0.0

    def push(self, t: float, event: Any) -> None:
        if t < self.now:
            raise ValueError(f"event {event} at {t} s is before the clock ({self.now} s)")
        heapq.heappush(self._heap, (t, next(self._seq), event))

    def pop(self) -> tuple[float, Any]:
        t, _, event = heapq.heappop(self._heap)
        self.now = t
        return t, event

    def __len__(self) -> int:
        return len(self._heap)

    def snapshot(self) -> tuple[list, int, float]:
        """(pending events, next sequence number, now): enough to go on exactly (checkpoints)."""
        seq = next(self._seq)
        self._seq = itertools.count(seq)
        return list(self._heap), seq, self.now

    @staticmethod
    def restore(snap: tuple[list, int, float]) -> EventClock:
        clock = EventClock()
        heap, seq, clock.now = snap
        clock._heap = list(heap)
        clock._seq = itertools.count(seq)
        return clock


@dataclass(eq=False)
class Transfer:
    sender: int
    receiver: int
    nbytes: int
    start: float
    end: float  # last byte leaves the sender
    arrival: float  # end + latency
    payload: Any  # handle of the array (ObjectRef in Ray)
    spec: FragmentSpec | None = None
    cancelled: bool = False


class Uplink:
    """One agent's outbound link: transfers leave one after the other, FIFO."""

    def __init__(self, agent: int, bw: np.ndarray, lat: np.ndarray):
        self.agent = agent
        self.bw = bw  # (N,) bytes/s of the link to each receiver
        self.lat = lat  # (N,) seconds
        self.free_at = 0.0
        self.queue: list[Transfer] = []  # transfers not yet finished

    def send(self, now: float, receiver: int, nbytes: int, payload: Any, spec: FragmentSpec | None = None) -> Transfer:
        start = max(now, self.free_at)
        end = start + nbytes / self.bw[receiver]
        tr = Transfer(self.agent, receiver, nbytes, start, end, end + self.lat[receiver], payload, spec)
        self.free_at = end
        self.queue.append(tr)
        return tr

    def drop_unstarted(self, now: float) -> list[Transfer]:
        """A newer step finished: transfers not started by `now` are dropped; one in progress completes."""
        dropped = [tr for tr in self.queue if tr.start >= now]
        for tr in dropped:
            tr.cancelled = True
        self.queue = [tr for tr in self.queue if tr.start < now and tr.end > now]
        self.free_at = max([now] + [tr.end for tr in self.queue])
        return dropped
