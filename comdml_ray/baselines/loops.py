"""The asynchronous baselines' event loops: AD-PSGD, Swift, DivShare (docs/method.md §6).

Owns `AsyncLoop` (the loop they share: start every agent, pop events in virtual-time
order, close a row every N finished steps) and its three subclasses, each saying what
a finished step, a delivery or its own event does, through the typed calls of
`backend.Backend` (see the package docstring for each algorithm's rules), plus
`active_passive`, AD-PSGD's bipartite split, and `LoopState`, the loop's state at a
row boundary (a checkpoint of AD-PSGD; Swift's and DivShare's links carry payloads,
which `LoopState` does not hold).  The driver never waits for compute here:
every call is submitted in virtual-time order and only handles are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from comdml_ray.baselines.events import Delivered, EventClock, PairAverage, StepDone, Transfer, Uplink
from comdml_ray.baselines.recorder import Period, Recorder, evaluate_now
from comdml_ray.config import RunConfig
from comdml_ray.method.async_steps import FragmentSpec, fragment_sizes
from comdml_ray.runtime.backend import Backend
from comdml_ray.timing.setting import Setting
from comdml_ray.timing.topology import metropolis_hastings

FLOAT_BYTES = 4  # flat models are float32


@dataclass
class LoopState:
    """An asynchronous loop at a row boundary: its clock and every agent's progress and random state."""

    clock: tuple[list, int, float]
    rngs: list[dict]  # numpy bit-generator states, agent by agent
    steps: np.ndarray
    busy: np.ndarray
    completed: int
    last_finish: np.ndarray
    row: int  # the row now being filled
    epochs_done: float | None = None  # work done in rounds' worth of shards (None: a checkpoint from before --step-batches, = completed)


# After every row but the last: (row index, virtual time, the loop's state on demand).
AfterRow = Callable[[int, float, Callable[[], LoopState]], None]


class AsyncLoop:
    """The event loop shared by the asynchronous methods; subclasses say what a finished step does.

    `finish_log` keeps (virtual time, agent, step) of every finished step and
    `event_times` the time of every processed event, for tests and analysis.
    """

    name = "async"

    def __init__(self, ex: Backend, st: Setting, cfg: RunConfig):
        self.ex, self.st, self.cfg = ex, st, cfg
        self.owner = st.owner
        n = st.n
        self.clock = EventClock()
        self.rngs = [np.random.default_rng(cfg.seed + k) for k in range(n)]  # agent k's own choices
        self.uplinks = [Uplink(k, st.link_bw[k], st.link_lat[k]) for k in range(n)]
        self.steps = np.zeros(n, dtype=int)  # steps finished per agent
        self.busy = np.zeros(n, dtype=bool)  # mid-step now
        self.completed = 0
        self.epochs_done = 0.0  # finished work in rounds' worth of each agent's shard (a row is n of them)
        self.finish_log: list[tuple[float, int, int]] = []
        self.event_times: list[float] = []
        self.last_finish = np.zeros(n)
        self.period = self._new_period(0)

    def _new_period(self, index: int) -> Period:
        n = self.st.n
        return Period(index, steps=np.zeros(n, dtype=int), bytes_sent=np.zeros(n))

    def begin(self, k: int, t: float) -> None:
        """Agent k starts a step at t; its speed is that of the epochs-equivalent the run is in."""
        self.busy[k] = True
        self.clock.push(t + self.st.step_seconds(k, int(self.epochs_done / self.st.n + 1e-9)), StepDone(k, int(self.steps[k])))

    def state(self) -> LoopState:
        return LoopState(
            self.clock.snapshot(),
            [g.bit_generator.state for g in self.rngs],
            self.steps.copy(),
            self.busy.copy(),
            self.completed,
            self.last_finish.copy(),
            self.period.index,
            self.epochs_done,
        )

    def load_state(self, s: LoopState) -> None:
        self.clock = EventClock.restore(s.clock)
        for g, st in zip(self.rngs, s.rngs, strict=True):
            g.bit_generator.state = st
        self.steps, self.busy, self.last_finish = s.steps.copy(), s.busy.copy(), s.last_finish.copy()
        self.completed = s.completed
        self.epochs_done = float(s.completed if s.epochs_done is None else s.epochs_done)
        self.period = self._new_period(s.row)

    def run(self, rec: Recorder, state: LoopState | None = None, after_row: AfterRow | None = None) -> None:
        """Run to the end: from the start, or from a checkpoint's `state`; `after_row` is called at every row boundary."""
        n = self.st.n
        self.after_row = after_row
        if state is not None:
            self.load_state(state)
        else:
            for k in range(n):
                self.begin(k, 0.0)
        self.done = False
        while not self.done:
            t, ev = self.clock.pop()
            self.event_times.append(t)
            if isinstance(ev, StepDone):
                k = ev.agent
                self.busy[k] = False
                self.steps[k] += 1
                self.completed += 1
                self.epochs_done += self.st.step_share(k)
                self.last_finish[k] = t
                self.period.steps[k] += 1
                self.finish_log.append((t, k, ev.step))
                self.on_step_done(k, ev.step, t)
                if self.epochs_done >= n * (self.period.index + 1) - 1e-9:
                    self._close_period(t, rec)
            elif isinstance(ev, Delivered):
                if not ev.transfer.cancelled:
                    self.period.bytes_sent[ev.transfer.sender] += ev.transfer.nbytes
                    self.on_delivered(ev.transfer, t)
            else:
                self.on_event(ev, t)
        rec.flush()

    def _close_period(self, t: float, rec: Recorder) -> None:
        p = self.period
        p.virtual_time_s = t
        p.last_finish = self.last_finish.copy()
        row = p.index
        self.done = self.cfg.is_last(row, t)
        if self.cfg.evaluates(row, t):
            evaluate_now(self.ex, self.st, p, self.cfg.eval_images(last=self.done))
        self.period = self._new_period(row + 1)
        rec.close(p)
        if not self.done and self.after_row is not None:
            self.after_row(row, t, self.state)

    # hooks
    def on_step_done(self, k: int, step: int, t: float) -> None:
        raise NotImplementedError

    def on_delivered(self, tr: Transfer, t: float) -> None:
        pass

    def on_event(self, ev: Any, t: float) -> None:
        raise TypeError(f"{self.name} does not handle {ev}")


def active_passive(nbrs: list[list[int]]) -> tuple[np.ndarray, list[list[int]]]:
    """AD-PSGD's bipartite split: (active flags, the neighbours each active agent may average with).

    A bipartite topology (a ring of even length, an even torus) uses its 2-colouring,
    agent 0 active.  Otherwise even ids are active and an active agent averages with
    its odd neighbours, or with any neighbour when it has none (documented fallback:
    then two active agents may average, still one atomic event at a time here).
    """
    n = len(nbrs)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from((i, j) for i, js in enumerate(nbrs) for j in js)
    if n > 1 and nx.is_connected(g) and nx.is_bipartite(g):
        colour = nx.bipartite.color(g)
        active = np.array([colour[k] == colour[0] for k in range(n)])
    else:
        active = np.arange(n) % 2 == 0
    partners = [([j for j in nbrs[k] if not active[j]] or list(nbrs[k])) if active[k] else [] for k in range(n)]
    return active, partners


class ADPSGD(AsyncLoop):
    name = "adpsgd"

    def __init__(self, ex: Backend, st: Setting, cfg: RunConfig):
        super().__init__(ex, st, cfg)
        self.active, self.partners = active_passive(st.nbrs)
        self.pair_log: list[tuple[float, int, int]] = []

    def exchange_s(self, i: int, j: int) -> float:
        """One way of the model between i and j."""
        return self.st.model_bytes / self.st.link_bw[i, j] + self.st.link_lat[i, j]

    def on_step_done(self, k: int, step: int, t: float) -> None:
        self.period.reports.append(self.ex.adpsgd_finish(self.owner[k], k))
        if self.active[k] and self.partners[k]:
            j = int(self.rngs[k].choice(self.partners[k]))
            # k's model reaches j one transfer later; j averages then and replies.
            self.clock.push(t + self.exchange_s(k, j), PairAverage(k, j))
        else:
            self.begin(k, t)

    def on_event(self, ev: Any, t: float) -> None:
        if not isinstance(ev, PairAverage):
            return super().on_event(ev, t)
        i, j = ev.active, ev.passive
        xi = self.ex.async_snapshot(self.owner[i], i)
        mean = self.ex.adpsgd_average(self.owner[j], j, bool(self.busy[j]), xi)
        self.ex.adpsgd_set(self.owner[i], i, bool(self.busy[i]), mean)
        self.pair_log.append((t, i, j))
        self.period.bytes_sent[i] += self.st.model_bytes
        self.period.bytes_sent[j] += self.st.model_bytes
        self.begin(i, t + self.exchange_s(j, i))  # the mean travels back before i goes on


class Swift(AsyncLoop):
    name = "swift"

    def __init__(self, ex: Backend, st: Setting, cfg: RunConfig):
        super().__init__(ex, st, cfg)
        self.w = metropolis_hastings(st.nbrs)
        self.last_model: list[dict[int, Any]] = [{} for _ in range(st.n)]  # receiver -> {sender: handle}

    def on_step_done(self, k: int, step: int, t: float) -> None:
        self.uplinks[k].drop_unstarted(t)  # only the newest model is worth sending
        have = sorted(self.last_model[k])
        w_nb = [float(self.w[k, j]) for j in have]
        rep, trained = self.ex.swift_finish(self.owner[k], k, [1.0 - sum(w_nb), *w_nb], [self.last_model[k][j] for j in have])
        self.period.reports.append(rep)
        for j in self.st.nbrs[k]:
            tr = self.uplinks[k].send(t, j, self.st.model_bytes, trained)
            self.clock.push(tr.arrival, Delivered(tr))
        self.begin(k, t)

    def on_delivered(self, tr: Transfer, t: float) -> None:
        self.last_model[tr.receiver][tr.sender] = tr.payload


class DivShare(AsyncLoop):
    name = "divshare"

    def __init__(self, ex: Backend, st: Setting, cfg: RunConfig):
        super().__init__(ex, st, cfg)
        self.omega = cfg.fragments
        self.fanout = min(cfg.fanout, st.n - 1)
        (tensors,) = ex.fetch([ex.tensor_sizes(0)])  # one small list from the first actor
        self.fragment_bytes = [s * FLOAT_BYTES for s in fragment_sizes(tensors, self.omega)]
        self.inbox: list[list[tuple[FragmentSpec, Any]]] = [[] for _ in range(st.n)]

    def on_step_done(self, k: int, step: int, t: float) -> None:
        self.uplinks[k].drop_unstarted(t)
        got, self.inbox[k] = self.inbox[k], []
        outs = self.ex.divshare_finish(self.owner[k], k, step, self.omega, [s for s, _ in got], [h for _, h in got])
        self.period.reports.append(outs[0])
        others = np.array([j for j in range(self.st.n) if j != k])
        if self.fanout > 0:
            for q in range(self.omega):
                for r in self.rngs[k].choice(others, size=self.fanout, replace=False):
                    tr = self.uplinks[k].send(t, int(r), self.fragment_bytes[q], outs[1 + q], FragmentSpec(k, step, q))
                    self.clock.push(tr.arrival, Delivered(tr))
        self.begin(k, t)

    def on_delivered(self, tr: Transfer, t: float) -> None:
        self.inbox[tr.receiver].append((tr.spec, tr.payload))


LOOPS: dict[str, type[AsyncLoop]] = {"adpsgd": ADPSGD, "swift": Swift, "divshare": DivShare}
