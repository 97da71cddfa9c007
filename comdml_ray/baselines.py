"""The baselines on one event-driven virtual clock: D-PSGD, AD-PSGD, Swift, DivShare (ALGORITHM.md section 6).

Owns the driver side of `--algorithm dpsgd|adpsgd|swift|divshare`:
- `EventClock`: a heap of (virtual time, seq, event) popped in time order (seq breaks
  ties in push order, so a run is deterministic);
- `Uplink`: one agent's outbound link, transfers one after the other at the link's
  bandwidth (+ latency on arrival), with DivShare's rule that transfers of an older
  step not yet started when a newer step finishes are dropped;
- the loops: `ADPSGD`, `Swift`, `DivShare` (asynchronous, on `AsyncLoop`) and
  `run_dpsgd` (synchronous: a round ends at a barrier event);
- `Setting` (agents' batches, speeds, links, topology: all the clock needs) and the
  two executors that run the real compute: `RayExecutor` (actor methods of the run's
  `AgentHost`s) and `LocalExecutor` (plain `AgentGroup`s, for tests);
- `run_event_driven(run, cfg, log)`, what `experiment.run_experiment` calls.

Work unit (project choice): a local step is one round's worth of local work of an
agent (`--local-epochs` passes over its shard, B_k batches, B_k * c_k virtual seconds,
c_k = base cost x slowdown, with `--drift` indexed by the epochs-equivalent the run
has completed), so an asynchronous step is the same work as a synchronous round.
A run of R rounds processes events until R*N steps have finished (R epochs-equivalent),
or until the row whose virtual time reaches `--time-budget` (same-clock comparisons);
every N finished steps make one row of rounds.csv, whose virtual_time_s is the time
of the N-th finish, with the mean test accuracy of `--eval-agents` agents' current
models then (asynchronous models never agree; as `Run.evaluate` does under gossip).
agents.csv has, per row and agent: steps finished in that row, their mean loss, the
absolute virtual time of its last finish (asynchronous methods have no rounds), the
bytes it sent that were delivered, and its own test accuracy if it was evaluated.

Algorithms (time model of ALGORITHM.md section 3; links i->j at the slower end's bandwidth):
- dpsgd: every round all agents train, then one Metropolis-Hastings gossip step on
  `--topology`; an agent's round time is B_k c_k + sum over its neighbours j of
  (|w| / bw_kj + l_kj) (as the synchronous loop under `--aggregation gossip`); the round ends at a barrier.
- adpsgd: the topology is split into active and passive agents (its 2-colouring when
  bipartite, else even/odd ids; active agents average only with passive neighbours,
  so two averages never wait on each other).  An active agent that finishes a step
  picks a random neighbour j; its model reaches j after |w|/bw + l, j averages
  x_i = x_j = (x_i + x_j)/2 at that instant and sends the mean back: the active
  agent starts its next step 2 (|w|/bw + l) after its finish.  Passive agents only
  train; an average that lands mid-step is handled as in `async_steps`.
- swift: on finishing a step an agent queues its model to each neighbour on its link
  (dropping copies of its previous model not yet started: only the newest is worth
  sending, and a slow link would otherwise queue stale models without end), mixes
  with the last model it has received from each neighbour (Metropolis-Hastings
  weights over itself and those neighbours) and starts its next step at once.
- divshare: on finishing a step an agent cuts every tensor of its trained model into
  `--fragments` Omega fragments (seeded permutation per tensor), queues each to `--fanout` J random other
  agents (fragment after fragment on its link), drops what is still unsent of its
  previous step, and sets each parameter to the mean of its value and all copies
  received since its last step.
Sending never blocks a Swift or DivShare agent: its link works in the background.

Execution: the driver never waits for compute while it walks the clock.  Every
operation is submitted in virtual-time order; an actor runs the calls of one
submitter in submission order and Ray resolves ObjectRef arguments first, so each
operation sees exactly the state the event order implies, and every dependency
points to an earlier submission (no deadlock).  The driver fetches a row's reports
and accuracy one row late, so the actors stay busy.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import networkx as nx
import numpy as np
import pandas as pd

from comdml_ray.async_steps import FragmentSpec, StepReport, fragment_sizes
from comdml_ray.clock import exchange_seconds
from comdml_ray.config import RunConfig
from comdml_ray.profiles import AgentProfile, drift_slowdowns, link_matrices
from comdml_ray.topology import metropolis_hastings, neighbours

ASYNC_ALGORITHMS = ("adpsgd", "swift", "divshare")
FLOAT_BYTES = 4  # flat models are float32

# ----------------------------------------------------------------------------- the clock


@dataclass(frozen=True)
class StepDone:
    agent: int
    step: int  # the agent's own step count, from 0


@dataclass(frozen=True)
class Delivered:
    transfer: "Transfer"


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


# ----------------------------------------------------------------------------- what the clock needs


@dataclass(frozen=True)
class Setting:
    """Everything the virtual clock needs about the agents, and where each agent lives."""

    n: int
    owner: dict[int, int]  # agent -> group (actor) index
    num_groups: int
    batches: np.ndarray  # (N,) batches of one local step
    slowdown: np.ndarray  # (N,) profile slowdowns
    base_sec_per_batch: float
    model_bytes: int
    link_bw: np.ndarray  # (N, N) bytes/s
    link_lat: np.ndarray  # (N, N) s
    agent_bw: np.ndarray  # (N,) bytes/s of each agent's own link
    agent_lat: np.ndarray  # (N,) s
    nbrs: list[list[int]]  # the --topology
    eval_ids: list[int]
    drift: float
    seed: int

    def sec_per_batch(self, r: int) -> np.ndarray:
        """Every agent's true seconds per batch in epochs-equivalent r (same formula as the sync rounds)."""
        return self.base_sec_per_batch * drift_slowdowns(self.slowdown, r, self.drift, self.seed)

    def step_seconds(self, k: int, r: int) -> float:
        return float(self.batches[k] * self.sec_per_batch(r)[k])

    def groups_of(self, agents: list[int]) -> dict[int, list[int]]:
        by: dict[int, list[int]] = {}
        for k in agents:
            by.setdefault(self.owner[k], []).append(k)
        return by

    @staticmethod
    def build(cfg: RunConfig, owner: dict[int, int], num_groups: int, batches: np.ndarray, profiles: list[AgentProfile],
              base_sec_per_batch: float, model_bytes: int) -> "Setting":
        n = cfg.agents
        link_bw, link_lat = link_matrices(profiles)
        return Setting(
            n=n, owner=dict(owner), num_groups=num_groups, batches=np.asarray(batches, dtype=float),
            slowdown=np.array([p.slowdown for p in profiles]), base_sec_per_batch=base_sec_per_batch,
            model_bytes=int(model_bytes), link_bw=link_bw, link_lat=link_lat,
            agent_bw=np.array([p.bandwidth_Bps for p in profiles]), agent_lat=np.array([p.latency_s for p in profiles]),
            nbrs=neighbours(cfg.topology, n, cfg.degree, cfg.seed), eval_ids=cfg.eval_agent_ids(), drift=cfg.drift, seed=cfg.seed,
        )


# ----------------------------------------------------------------------------- who runs the compute


class Executor(Protocol):
    """Submits a group method and returns handle(s) to its result(s); `fetch` waits for values."""

    def call(self, group: int, method: str, *args: Any, returns: int = 1) -> Any: ...
    def fetch(self, handles: list[Any]) -> list[Any]: ...


class RayExecutor:
    """Methods of the run's actors; handles are ObjectRefs (top-level ref arguments are resolved by Ray)."""

    def __init__(self, run) -> None:
        self.run = run

    def call(self, group: int, method: str, *args: Any, returns: int = 1) -> Any:
        m = getattr(self.run.hosts[group], method)
        if returns != 1:
            m = m.options(num_returns=returns)
        return m.remote(*args)

    def fetch(self, handles: list[Any]) -> list[Any]:
        return self.run.get(list(handles))


class LocalExecutor:
    """Plain AgentGroups in this process, called at once (tests); handles are the values themselves."""

    def __init__(self, groups: list) -> None:
        self.groups = groups

    def call(self, group: int, method: str, *args: Any, returns: int = 1) -> Any:
        out = getattr(self.groups[group], method)(*args)
        return list(out) if returns != 1 else out

    def fetch(self, handles: list[Any]) -> list[Any]:
        return list(handles)


# ----------------------------------------------------------------------------- rows of results


@dataclass
class Period:
    """One row of rounds.csv in the making: what happened between two evaluations."""

    index: int
    virtual_time_s: float = 0.0
    reports: list[Any] = field(default_factory=list)  # handles of StepReport (or of a PhaseReport for dpsgd)
    eval_handles: list[Any] = field(default_factory=list)
    steps: np.ndarray | None = None  # (N,) steps finished in this period
    last_finish: np.ndarray | None = None  # (N,) absolute virtual time of each agent's last finish so far
    bytes_sent: np.ndarray | None = None  # (N,) bytes delivered from each agent in this period


class Recorder:
    """Turns periods into rows, fetching each one row late so the actors never idle on the driver."""

    def __init__(self, ex: Executor, n: int, rounds: int, log, progress: bool, on_row: Callable[[list[dict], float | None], None] | None, label: str):
        self.ex = ex
        self.n = n
        self.pending: list[Period] = []
        self.rows: list[dict] = []
        self.agent_rows: list[dict] = []
        self.t0 = time.perf_counter()
        self.last_wall = 0.0
        self.last_virtual = 0.0
        self.log = log
        self.on_row = on_row
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=rounds, desc=f"{label} epochs-equivalent", unit="round")

    def close(self, p: Period) -> None:
        self.pending.append(p)
        while len(self.pending) > 1:
            self._finish(self.pending.pop(0))

    def flush(self) -> None:
        while self.pending:
            self._finish(self.pending.pop(0))
        if self.bar is not None:
            self.bar.close()

    def _finish(self, p: Period) -> None:
        reports = self.ex.fetch(p.reports)
        accs = self.ex.fetch(p.eval_handles)
        wall = time.perf_counter() - self.t0
        loss_sum, batches = np.zeros(self.n), np.zeros(self.n)
        for rep in reports:
            if isinstance(rep, StepReport):
                loss_sum[rep.agent] += rep.loss_sum
                batches[rep.agent] += rep.batches
            else:  # a PhaseReport of a synchronous round
                for k, v in rep.loss_sum.items():
                    loss_sum[k] += v
                for k, v in rep.batches.items():
                    batches[k] += v
        per_agent = {k: a for d in accs for k, a in d.items()}
        acc = float(np.mean(list(per_agent.values()))) if per_agent else math.nan
        row = {
            "round": p.index, "virtual_time_s": p.virtual_time_s, "wall_time_s": wall,
            "train_loss": float(loss_sum.sum() / max(batches.sum(), 1)), "test_accuracy": acc,
            "bytes_sent": int(p.bytes_sent.sum()), "round_virtual_s": p.virtual_time_s - self.last_virtual,
            "round_wall_s": wall - self.last_wall, "bytes_offloaded": 0, "pairs": 0, "steps": int(p.steps.sum()),
        }
        agent_rows = [{
            "round": p.index, "agent": k, "virtual_finish_s": float(p.last_finish[k]), "wall_time_s": wall,
            "partner": -1, "split": -1,
            "train_loss": float(loss_sum[k] / batches[k]) if batches[k] else math.nan,
            "bytes_sent": int(p.bytes_sent[k]), "bytes_offloaded": 0, "steps": int(p.steps[k]),
            "test_accuracy": per_agent.get(k, math.nan),
        } for k in range(self.n)]
        self.last_wall, self.last_virtual = wall, p.virtual_time_s
        self.rows.append(row)
        self.agent_rows += agent_rows
        if self.on_row is not None:
            self.on_row(agent_rows, None if math.isnan(acc) else acc)
        if self.bar is not None:
            self.bar.set_postfix(acc=f"{100 * acc:.1f}%" if not math.isnan(acc) else "-", vtime=f"{p.virtual_time_s:.0f}s")
            self.bar.update(1)
        else:
            self.log(f"row {p.index + 1}: acc {acc:.4f} virtual {p.virtual_time_s:.1f}s wall {wall:.1f}s steps {row['steps']}")

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        return pd.DataFrame(self.rows), pd.DataFrame(self.agent_rows), pd.DataFrame()


def is_last(cfg: RunConfig, row: int, virtual_s: float) -> bool:
    """The last row: --rounds done, or --time-budget virtual seconds spent (same-clock comparisons)."""
    return row == cfg.rounds - 1 or (cfg.time_budget_s is not None and virtual_s >= cfg.time_budget_s)


def evaluate_now(ex: Executor, st: Setting) -> list[Any]:
    """Submit the evaluation of the eval agents' current models (handles of {agent: accuracy})."""
    return [ex.call(g, "evaluate", ks) for g, ks in st.groups_of(st.eval_ids).items()]


# ----------------------------------------------------------------------------- asynchronous loops


class AsyncLoop:
    """The event loop shared by the asynchronous methods; subclasses say what a finished step does.

    `finish_log` keeps (virtual time, agent, step) of every finished step and
    `event_times` the time of every processed event, for tests and analysis.
    """

    name = "async"

    def __init__(self, ex: Executor, st: Setting, cfg: RunConfig):
        self.ex, self.st, self.cfg = ex, st, cfg
        n = st.n
        self.clock = EventClock()
        self.rngs = [np.random.default_rng(cfg.seed + k) for k in range(n)]  # agent k's own choices
        self.uplinks = [Uplink(k, st.link_bw[k], st.link_lat[k]) for k in range(n)]
        self.steps = np.zeros(n, dtype=int)  # steps finished per agent
        self.busy = np.zeros(n, dtype=bool)  # mid-step now
        self.completed = 0
        self.finish_log: list[tuple[float, int, int]] = []
        self.event_times: list[float] = []
        self.last_finish = np.zeros(n)
        self.period = self._new_period(0)

    def _new_period(self, index: int) -> Period:
        n = self.st.n
        return Period(index, steps=np.zeros(n, dtype=int), bytes_sent=np.zeros(n))

    def call(self, agent: int, method: str, *args: Any, returns: int = 1) -> Any:
        return self.ex.call(self.st.owner[agent], method, *args, returns=returns)

    def begin(self, k: int, t: float) -> None:
        """Agent k starts a step at t; its speed is that of the epochs-equivalent the run is in."""
        self.busy[k] = True
        self.clock.push(t + self.st.step_seconds(k, self.completed // self.st.n), StepDone(k, int(self.steps[k])))

    def run(self, rec: Recorder) -> None:
        n = self.st.n
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
                self.last_finish[k] = t
                self.period.steps[k] += 1
                self.finish_log.append((t, k, ev.step))
                self.on_step_done(k, ev.step, t)
                if self.completed % n == 0:
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
        self.done = is_last(self.cfg, row, t)
        if (row + 1) % self.cfg.eval_every == 0 or self.done:
            p.eval_handles = evaluate_now(self.ex, self.st)
        self.period = self._new_period(row + 1)
        rec.close(p)

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

    def __init__(self, ex: Executor, st: Setting, cfg: RunConfig):
        super().__init__(ex, st, cfg)
        self.active, self.partners = active_passive(st.nbrs)
        self.pair_log: list[tuple[float, int, int]] = []

    def exchange_s(self, i: int, j: int) -> float:
        """One way of the model between i and j."""
        return self.st.model_bytes / self.st.link_bw[i, j] + self.st.link_lat[i, j]

    def on_step_done(self, k: int, step: int, t: float) -> None:
        self.period.reports.append(self.call(k, "adpsgd_finish", k))
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
        xi = self.call(i, "async_snapshot", i)
        mean = self.call(j, "adpsgd_average", j, bool(self.busy[j]), xi)
        self.call(i, "adpsgd_set", i, bool(self.busy[i]), mean)
        self.pair_log.append((t, i, j))
        self.period.bytes_sent[i] += self.st.model_bytes
        self.period.bytes_sent[j] += self.st.model_bytes
        self.begin(i, t + self.exchange_s(j, i))  # the mean travels back before i goes on


class Swift(AsyncLoop):
    name = "swift"

    def __init__(self, ex: Executor, st: Setting, cfg: RunConfig):
        super().__init__(ex, st, cfg)
        self.w = metropolis_hastings(st.nbrs)
        self.last_model: list[dict[int, Any]] = [{} for _ in range(st.n)]  # receiver -> {sender: handle}

    def on_step_done(self, k: int, step: int, t: float) -> None:
        self.uplinks[k].drop_unstarted(t)  # only the newest model is worth sending
        have = sorted(self.last_model[k])
        w_nb = [float(self.w[k, j]) for j in have]
        rep, trained = self.call(k, "swift_finish", k, [1.0 - sum(w_nb), *w_nb], *[self.last_model[k][j] for j in have], returns=2)
        self.period.reports.append(rep)
        for j in self.st.nbrs[k]:
            tr = self.uplinks[k].send(t, j, self.st.model_bytes, trained)
            self.clock.push(tr.arrival, Delivered(tr))
        self.begin(k, t)

    def on_delivered(self, tr: Transfer, t: float) -> None:
        self.last_model[tr.receiver][tr.sender] = tr.payload


class DivShare(AsyncLoop):
    name = "divshare"

    def __init__(self, ex: Executor, st: Setting, cfg: RunConfig):
        super().__init__(ex, st, cfg)
        self.omega = cfg.fragments
        self.fanout = min(cfg.fanout, st.n - 1)
        (tensors,) = ex.fetch([ex.call(0, "tensor_sizes")])  # one small list from the first actor
        self.fragment_bytes = [s * FLOAT_BYTES for s in fragment_sizes(tensors, self.omega)]
        self.inbox: list[list[tuple[FragmentSpec, Any]]] = [[] for _ in range(st.n)]

    def on_step_done(self, k: int, step: int, t: float) -> None:
        self.uplinks[k].drop_unstarted(t)
        got, self.inbox[k] = self.inbox[k], []
        outs = self.call(k, "divshare_finish", k, step, self.omega, [s for s, _ in got], *[h for _, h in got], returns=self.omega + 1)
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


# ----------------------------------------------------------------------------- D-PSGD (synchronous)


def run_dpsgd(ex: Executor, st: Setting, cfg: RunConfig, rec: Recorder) -> EventClock:
    """Synchronous rounds: local training, one gossip step on the topology; a round ends at a barrier event.

    Every agent's finish time is pushed on the clock; the barrier is the last one
    popped, the same virtual round time as the synchronous loop under gossip.
    """
    n = st.n
    clock = EventClock()
    exch = exchange_seconds("gossip", st.nbrs, st.agent_bw, st.agent_lat, st.model_bytes)
    last_finish = np.zeros(n)
    t0 = 0.0
    for r in range(cfg.rounds):
        reports = [ex.call(g, "train_phase", r) for g in range(st.num_groups)]
        sec = st.sec_per_batch(r)
        for k in range(n):
            clock.push(t0 + st.batches[k] * sec[k] + exch[k], StepDone(k, r))
        while len(clock):
            t, ev = clock.pop()
            last_finish[ev.agent] = t
        t0 = clock.now  # the barrier: the last agent's finish
        # Gossip with the groups' own methods (the topology's neighbours, MH weights).
        puts = ex.fetch([ex.call(g, "gossip_put") for g in range(st.num_groups)])
        refs = {k: ref for d in puts for k, ref in d.items()}
        for g in range(st.num_groups):
            mine = [k for k in range(n) if st.owner[k] == g]
            ex.call(g, "gossip_mix", {j: refs[j] for k in mine for j in (k, *st.nbrs[k])})
        p = Period(r, virtual_time_s=t0, reports=reports, steps=np.ones(n, dtype=int), last_finish=last_finish.copy(),
                   bytes_sent=np.array([len(st.nbrs[k]) * st.model_bytes for k in range(n)], dtype=float))
        last = is_last(cfg, r, t0)
        if (r + 1) % cfg.eval_every == 0 or last:
            p.eval_handles = evaluate_now(ex, st)
        rec.close(p)
        if last:
            break
    rec.flush()
    return clock


# ----------------------------------------------------------------------------- entry points


def drive(algorithm: str, ex: Executor, st: Setting, cfg: RunConfig, log=print,
          on_row: Callable[[list[dict], float | None], None] | None = None) -> tuple[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame], Any]:
    """Run one baseline to the end; returns (rounds, agents, plans) frames and the loop (or clock) it used."""
    rec = Recorder(ex, st.n, cfg.rounds, log, cfg.progress, on_row, algorithm)
    if algorithm == "dpsgd":
        loop: Any = run_dpsgd(ex, st, cfg, rec)
    elif algorithm in LOOPS:
        loop = LOOPS[algorithm](ex, st, cfg)
        loop.run(rec)
    else:
        raise ValueError(f"no event-driven loop for algorithm '{algorithm}'")
    return rec.frames(), loop


def run_event_driven(run, cfg: RunConfig, log=print) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """What `experiment.run_experiment` calls for dpsgd, adpsgd, swift and divshare."""
    st = Setting.build(cfg, run.owner, len(run.hosts), np.array([i.batches_per_round for i in run.infos]), run.profiles,
                       run.split_profile.base_sec_per_batch, run.split_profile.model_bytes)
    if cfg.algorithm == "divshare" and cfg.fanout > cfg.agents - 1:
        log(f"divshare: --fanout {cfg.fanout} is more than the {cfg.agents - 1} other agents; each fragment goes to all of them.")
    frames, _ = drive(cfg.algorithm, RayExecutor(run), st, cfg, log, run.record_metrics)
    return frames
