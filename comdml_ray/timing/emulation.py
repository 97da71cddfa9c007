"""Emulated heterogeneity for the wall clock (`--clock wall --emulate`): machines whose cores are all alike made uneven.

Owns
- `Pacer`: one agent's device.  Each work item (a full-model batch, a chunk of prefix
  batches, a suffix batch) is padded with sleep -- never busy work -- until it has
  lasted its target: the profile's seconds for that work, c_k(r) = base cost x
  slowdown_k(r) (drift included) times rho_s or rho_f for a part of the model, the
  same figures the virtual clock charges.  Targets are deadlines: an item that ran
  over its target is made up by the next ones (jitter), but a wait for data resets
  the deadline (an idle device does not bank time).  Without `--emulate` nothing
  sleeps and the hardware's own speed is what is measured.  It also sums the device
  seconds of its items (`work_s`: each item's real time, at least its target under
  emulation; waits and the work around a round, such as loading a returned suffix,
  are left out), which online profiling divides by the batches done;
- `Links`: one agent's outbound links.  A transfer of B bytes to j becomes usable at
  j at B / bandwidth_ij + latency_ij after it starts, and transfers on one link queue
  behind each other (one NIC per link end, as the clock assumes).  The sender stamps
  each message with that delay counted from the moment it is sent (`delay_s`, a
  duration on the sender's clock); the receiver adds it to the moment the message
  reached it (its own clock) and waits until then.  Only links paced by emulation
  delay (`--emulate`, links included); otherwise the delay is 0 and the link is
  whatever the cluster's link is (the receiver's fetch of the payload);
- `LinkMeter`: the receiver's observed throughput of each inbound link (bytes over
  the time the link was busy delivering them, both ends of that time read here), for
  online profiling;
- `now()`: the one clock a wall-clock round reads: this node's monotonic clock.  Every
  duration and deadline of a wall round is a difference of two readings on one node;
  no reading is ever compared with another node's.  `offset_clock` shifts this node's
  readings (fault injection: a test gives one node a clock minutes off and checks that
  the rounds do not change).
No Ray, no torch.
"""

from __future__ import annotations

import time

_CLOCK = {"offset_s": 0.0}  # this process's clock offset (`offset_clock`); 0 unless a fault is injected


def now() -> float:
    """This node's clock in seconds: monotonic, so only differences of two readings on this node mean anything."""
    return time.monotonic() + _CLOCK["offset_s"]


def offset_clock(seconds: float) -> None:
    """Shift every later `now()` in this process by `seconds` (fault injection: clocks that disagree across nodes)."""
    _CLOCK["offset_s"] = float(seconds)


def wait_until(t: float) -> None:
    """Sleep until `now()` reaches t (no-op if it has)."""
    dt = t - now()
    if dt > 0:
        time.sleep(dt)


class Pacer:
    """One device's compute time: every work item lasts at least its target under emulation."""

    def __init__(self, emulate: bool):
        self.emulate = emulate
        self.mark = now()  # when the device is next free (emulated), or when the last item ended
        self.item_from = self.mark  # when the current work item started (the previous one's end, or a resume)
        self.work_s = 0.0  # device seconds of the items done: each max(real, target) under emulation, real without
        self.overrun_s = 0.0  # seconds the real work took beyond its targets (emulation could not slow it down)

    def resume(self) -> None:
        """The device starts work after a wait (or at the round's start): no banked time."""
        t = now()
        self.mark = max(self.mark, t)
        self.item_from = t

    def done(self, target_s: float) -> None:
        """One work item has just finished; sleep until it has lasted target_s (emulation only).

        Work between items on the training thread (handing a chunk to the sending thread) counts in the next item.
        """
        t = now()
        real = t - self.item_from
        if not self.emulate:
            self.work_s += real
            self.mark = self.item_from = t
            return
        self.work_s += max(real, target_s)
        self.mark += target_s
        if self.mark > t:
            time.sleep(self.mark - t)
        else:
            self.overrun_s += t - self.mark
        self.item_from = now()


class Links:
    """The sender's side of its links: how long after its sending each transfer becomes usable at its destination."""

    def __init__(self, emulate: bool, bandwidth: dict[int, float] | None = None, latency: dict[int, float] | None = None):
        self.emulate = emulate
        self.bw = bandwidth or {}
        self.lat = latency or {}
        self.free: dict[int, float] = {}  # `now()` at which each outbound link finishes its queued transfers

    def send(self, j: int, nbytes: float) -> float:
        """Start sending nbytes to j now; seconds from now until j may use them (0 when links are not emulated)."""
        t = now()
        if not self.emulate:
            return 0.0
        start = max(t, self.free.get(j, t))
        self.free[j] = start + nbytes / self.bw[j]
        return self.free[j] + self.lat[j] - t


class LinkMeter:
    """Observed throughput of inbound links: bytes delivered over the seconds the link was delivering."""

    def __init__(self) -> None:
        self.bytes: dict[int, float] = {}
        self.secs: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def delivered(self, src: int, nbytes: float, began: float, usable_at: float) -> None:
        """A message from src whose delivery began here at `began` was usable at `usable_at` (both `now()` on this node)."""
        begin = max(began, self.last.get(src, began))  # queued behind the previous message on that link
        self.bytes[src] = self.bytes.get(src, 0.0) + nbytes
        self.secs[src] = self.secs.get(src, 0.0) + max(usable_at - begin, 1e-6)
        self.last[src] = max(usable_at, self.last.get(src, usable_at))

    def throughput(self) -> dict[int, float]:
        """Bytes per second per inbound link observed since this meter was made."""
        return {s: self.bytes[s] / self.secs[s] for s in self.bytes}
