"""Ray's implementation of the agent backend: the actor that hosts agents, its transport, collective and metrics.

Owns
- `RayStore`: put/get/prefetch on Ray's object store (numpy arrays travel zero-copy);
- `AgentHost`: an `AgentGroup` living in an actor process: picks its device from the
  GPU ids Ray assigned, caps its share of a shared GPU, limits torch threads to its
  CPUs, reports whether NCCL imports there, joins the run's `ray.util.collective`
  group with the backend the driver chose for all ranks (`devices.choose_backend`:
  NCCL only when every rank owns its own GPU, else gloo on host copies) and
  runs its part of the round's all-reduce (`allreduce`: one allgather when the fleet's
  models fit in GATHER_LIMIT_BYTES, else one point-to-point hop per actor round the
  ring and one gather: the same sums either way; `COMDML_ALLREDUCE=ring|gather` in the
  driver's environment forces one; the driver starts it with one call per actor).  The
  collective binds to the interface holding the node's Ray IP (`pin_collective_to`),
  never to what the host name resolves to (127.0.1.1 on stock Debian/Ubuntu images);
- `RayBackend`: `backend.Backend` on these actors: every typed method is an actor
  call that returns ObjectRefs; `average` starts the collective on every actor at
  once (one call each per round); `fetch` turns a dead actor into `AgentFailure`
  naming its agents, from Ray's own error;
- `AgentMetrics`: the `ray.util.metrics` gauges and counters, tagged by agent, that
  the Ray dashboard shows.
- `WallHost`: the same actor for `--clock wall`, with an inbox its peers call
  during a round (its own concurrency group) and the emulated averaging time.
All agent logic lives in `comdml_ray.method.agent` and its mixins; this module only adapts it to Ray.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from typing import Any

import numpy as np
import ray
from ray.exceptions import ObjectLostError, RayActorError, RayTaskError
from ray.util import metrics

from comdml_ray.config import ConfigError, RunConfig
from comdml_ray.learning.data import DatasetArrays, DatasetError
from comdml_ray.method.agent import AgentGroup, AgentInfo
from comdml_ray.runtime.backend import Backend
from comdml_ray.runtime.cluster import failure_message
from comdml_ray.runtime.telemetry import ActorTelemetry
from comdml_ray.timing.emulation import now, offset_clock, wait_until

GATHER_LIMIT_BYTES = 64 << 20  # the fleet's models (N x model floats) up to this are all-reduced by one allgather

METRIC_NAMES = (
    "comdml_round",
    "comdml_round_virtual_time_s",
    "comdml_round_wall_time_s",
    "comdml_bytes_sent_total",
    "comdml_bytes_offloaded_total",
    "comdml_partner",
    "comdml_split",
    "comdml_train_loss",
    "comdml_test_accuracy",
)


class RayStore:
    """Transport through Ray's object store."""

    def put(self, obj: Any) -> ray.ObjectRef:
        return ray.put(obj)

    def get(self, refs: Any) -> Any:
        return ray.get(refs)

    def prefetch(self, refs: list[ray.ObjectRef]) -> None:
        # Starts pulling the objects to this node without blocking: transfer overlaps compute.
        ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=True)


class AgentMetrics:
    """Per-agent metrics exported to the dashboard (Prometheus names in METRIC_NAMES)."""

    def __init__(self) -> None:
        tags = ("agent",)
        self.round = metrics.Gauge("comdml_round", "Last finished round", tag_keys=tags)
        self.virtual = metrics.Gauge("comdml_round_virtual_time_s", "Virtual finish time of the agent in its last round (s)", tag_keys=tags)
        self.wall = metrics.Gauge("comdml_round_wall_time_s", "Wall time of the last round (s)", tag_keys=tags)
        self.sent = metrics.Counter("comdml_bytes_sent_total", "Bytes the agent sent (weights and activations)", tag_keys=tags)
        self.offloaded = metrics.Counter("comdml_bytes_offloaded_total", "Bytes of activations the agent offloaded", tag_keys=tags)
        self.partner = metrics.Gauge("comdml_partner", "Helper the agent offloaded to in its last round (-1 none)", tag_keys=tags)
        self.split = metrics.Gauge("comdml_split", "Split point used in the last round (-1 none)", tag_keys=tags)
        self.loss = metrics.Gauge("comdml_train_loss", "Mean training loss of the last round", tag_keys=tags)
        self.accuracy = metrics.Gauge("comdml_test_accuracy", "Test accuracy of the averaged model (run level)")

    def record(self, rows: list[dict]) -> None:
        for r in rows:
            tags = {"agent": f"{r['agent']:03d}"}
            self.round.set(r["round"], tags)
            self.virtual.set(r["virtual_finish_s"], tags)
            self.wall.set(r["wall_time_s"], tags)
            if r["bytes_sent"] > 0:
                self.sent.inc(r["bytes_sent"], tags)
            if r["bytes_offloaded"] > 0:
                self.offloaded.inc(r["bytes_offloaded"], tags)
            self.partner.set(r["partner"], tags)
            self.split.set(r["split"], tags)
            self.loss.set(r["train_loss"], tags)

    def record_accuracy(self, acc: float) -> None:
        self.accuracy.set(acc)


class AgentFailure(RuntimeError):
    """An actor died; the message names the agents it hosted, `group` the actor (None when Ray did not say)."""

    def __init__(self, message: str, group: int | None = None):
        super().__init__(message)
        self.group = group


class StateLost(RuntimeError):
    """A restarted actor was called before the driver set it up again: the agents it hosted are gone.

    Ray restarts a dead actor by running its constructor again; calls the driver sent
    after the death (the event loops keep sending) reach that bare process. They fail
    with this instead of an AttributeError, so `RayBackend.fetch` reports the actor as lost.
    """

    def __init__(self, group_id: int):
        super().__init__(f"the actor of group {group_id} was restarted and holds no agents yet")
        self.group_id = group_id


def node_interface(ip: str) -> str | None:
    """The network interface that holds address `ip` on this node; None when none does."""
    import socket

    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family in (socket.AF_INET, socket.AF_INET6) and a.address.split("%")[0] == ip for a in addrs):
            return name
    return None


def pin_collective_to(ip: str) -> str | None:
    """Make GLOO (and NCCL's sockets) use the interface of `ip`, this node's Ray address; returns it (None: left as it was).

    Without it GLOO takes its address from the host name, which stock Debian/Ubuntu
    images map to 127.0.1.1 (/etc/hosts): every member then offers its peers a
    loopback address and the group never connects across nodes.  A value the user
    set (GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME) is kept.
    """
    iface = node_interface(ip)
    if iface is not None:
        for var in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
            os.environ.setdefault(var, iface)
    return iface


class AgentHost(AgentGroup):
    """An AgentGroup inside a Ray actor: device from Ray's GPU ids, CPU threads from its share.

    The constructor only picks the device; `setup()` builds the agents from the dataset
    (one object in the store, mapped zero-copy), so a user-caused fault there reaches
    the driver as an exception it can print in one sentence (a failing actor
    constructor only says the actor died).
    """

    def __init__(self, group_id: int, agent_ids: list[int], cfg: RunConfig):
        import torch

        torch.set_num_threads(max(1, int(cfg.cpus_per_agent)))
        gpu_ids = ray.get_gpu_ids()
        device = "cpu"
        if gpu_ids and torch.cuda.is_available():
            device = "cuda:0"  # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU(s)
            # float32 convolutions, as on the CPU: cuDNN's default TF32 keeps 10 mantissa bits,
            # and a GPU run should differ from a CPU run only by the order of float32 sums.
            torch.backends.cudnn.allow_tf32 = False
            if cfg.gpus_per_agent < 1:
                # Agents sharing a GPU each keep to their share of its memory.
                torch.cuda.set_per_process_memory_fraction(cfg.gpus_per_agent, 0)
        self.gpu_ids = [str(g) for g in gpu_ids]
        self._args = (group_id, list(agent_ids), cfg)
        self.device_name = device
        self.nccl = device != "cpu" and _nccl_imports()
        self.collective: tuple[str, int] | None = None  # (group name, world size)
        self.collective_backend = "gloo"

    @property
    def agents(self) -> dict:
        """The hosted agents; before setup() (a restarted process) there are none: StateLost."""
        try:
            return self.__dict__["_agents"]
        except KeyError:
            raise StateLost(self._args[0]) from None

    @agents.setter
    def agents(self, value: dict) -> None:
        self.__dict__["_agents"] = value

    def setup(self, data: DatasetArrays) -> list[AgentInfo]:
        """Build the agents on the shared dataset; returns their descriptions."""
        group_id, agent_ids, cfg = self._args
        AgentGroup.__init__(self, group_id, agent_ids, cfg, data, RayStore(), self.device_name)
        self.metrics = AgentMetrics()
        self.telemetry = ActorTelemetry(agent_ids, self.device_name, self.gpu_ids)  # log lines + extra metrics
        return self.describe()

    def join_collective(self, name: str, world_size: int, backend: str = "gloo") -> None:
        """Join the run's collective group as rank = group id (every actor calls this at once, with the same backend).

        After a lost actor every actor joins a new group: the old one (and, under GLOO,
        torch.distributed's process-wide default group, which still counts the dead
        process as a member) is destroyed first, so the new group rendezvouses afresh.
        """
        if self.collective is not None and self.collective[1] > 1:
            self._leave_collective()
        if world_size > 1:
            from ray.util import collective

            pin_collective_to(ray.util.get_node_ip_address())
            collective.init_collective_group(world_size, self.group_id, backend=backend, group_name=name)
        self.collective, self.collective_backend = (name, world_size), backend

    def _leave_collective(self) -> None:
        from ray.util import collective

        with contextlib.suppress(Exception):  # a group broken by a dead member may fail to tear down; it is dropped anyway
            collective.destroy_collective_group(self.collective[0])
        if self.collective_backend == "gloo":
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        self.collective = None

    def crash(self) -> None:
        """Fault injection (--kill-actor): this actor's process kills itself, as a lost node would."""
        os.kill(os.getpid(), signal.SIGKILL)

    def allreduce(self, model: bool, aux: bool, how: str, *after) -> None:
        """This actor's part of the round's collective (see `averaging`): G ring hops then a gather, and/or the aux sums.

        `how`: "ring"; "gather" (one allgather of every agent's scaled model and of each
        group's aux partial, summed here in the ring's order: the same bits); or "auto":
        gather when the fleet's models fit in GATHER_LIMIT_BYTES (one collective call
        instead of G + 2; on a host with more actors than cores each call costs a
        scheduling round trip per hop).

        `after` (unused values) holds refs Ray must resolve first: if an actor died in the
        round, they fail and this call never starts, instead of waiting in the collective
        for a member that is gone.
        """

        _name, world = self.collective
        g = self.group_id
        if world > 1 and (how == "gather" or (how == "auto" and self._gather_fits())):
            return self._gathered(model, aux)
        if model:
            acc, sent_last = self.ring_start(), None
            for h in range(world):  # the block received at hop h started in group g-1-h; the last one is our own
                owner = (g - 1 - h) % world
                if world > 1:
                    sent_last = acc  # at the last hop: group g+1's block, going home
                    acc = self._ring_hop(acc, owner)
                acc = self.ring_add(acc, owner)
            lo, hi = self.ring_block(g)
            full = np.zeros(int(self._bounds()[-1]), dtype=np.float32)
            full[lo:hi] = acc
            if world > 1 and self._gather_by_hops():
                self.ring_finish(self._ring_gather(full, sent_last))
            else:
                self.ring_finish(self._sum(full) if world > 1 else full)  # blocks are disjoint: the sum gathers them
        if aux:
            part = self.aux_partial()
            self.apply_aux(self._sum(part) if world > 1 else part)

    def _gather_by_hops(self) -> bool:
        """Gather the ring's summed blocks by hops round the ring instead of one collective sum (`WallHost`)."""
        return False

    def _ring_gather(self, full: np.ndarray, sent_last: np.ndarray) -> np.ndarray:
        """The ring's gather half, when every group holds one agent: world - 2 hops of one block each.

        The block group g sent at the reduction's last hop was group g+1's, already summed
        (group g+1 adds nothing to its own block when it holds one agent): g holds its own
        block and g+1's.  Each hop then passes on the block received last (at hop s, group
        g-s's), so with the reduction's world hops every group sends 2(world - 1) blocks:
        the ring the clock charges.  The sums are the same bits as `_sum`'s.
        """
        g, world = self.group_id, self.collective[1]
        lo, hi = self.ring_block((g + 1) % world)
        full[lo:hi] = sent_last
        cur = full[slice(*self.ring_block(g))]
        for s in range(1, world - 1):
            owner = (g - s) % world
            cur = self._ring_hop(np.ascontiguousarray(cur), owner)
            lo, hi = self.ring_block(owner)
            full[lo:hi] = cur
        return full

    def _gather_fits(self) -> bool:
        return self.cfg.agents * int(self._bounds()[-1]) * 4 <= GATHER_LIMIT_BYTES

    def _gathered(self, model: bool, aux: bool) -> None:
        """One allgather of every group's `gather_payload`; each group then sums them itself (`gathered_finish`)."""
        import torch
        from ray.util import collective

        name, world = self.collective
        mine = torch.from_numpy(self.gather_payload(model, aux)).to(self._wire())
        outs = [torch.empty_like(mine) for _ in range(world)]
        collective.allgather(outs, mine, name)
        self.gathered_finish([o.cpu().numpy() for o in outs], model, aux)

    def _ring_hop(self, acc: np.ndarray, owner: int) -> np.ndarray:
        """Send our block to the next actor, receive group `owner`'s block from the previous one."""
        import torch
        from ray.util import collective

        name, world = self.collective
        g = self.group_id
        lo, hi = self.ring_block(owner)
        out = torch.from_numpy(acc).to(self._wire())
        into = torch.empty(hi - lo, dtype=torch.float32, device=self._wire())
        if g % 2 == 0:  # even ranks send first, odd ranks receive first: no cycle of blocked sends
            collective.send(out, (g + 1) % world, name)
            collective.recv(into, (g - 1) % world, name)
        else:
            collective.recv(into, (g - 1) % world, name)
            collective.send(out, (g + 1) % world, name)
        return into.cpu().numpy()

    def _wire(self) -> str:
        """Where the collective's tensors live: this actor's GPU under NCCL, the host under gloo (the sums are host arrays)."""
        return self.device_name if self.collective_backend == "nccl" else "cpu"

    def _sum(self, x: np.ndarray) -> np.ndarray:
        import torch
        from ray.util import collective

        t = torch.from_numpy(x).to(self._wire())
        collective.allreduce(t, group_name=self.collective[0])
        return t.cpu().numpy()

    def __repr__(self) -> str:
        ids = self._args[1]
        who = f"agent {ids[0]:03d}" if len(ids) == 1 else f"agents {ids[0]:03d}-{ids[-1]:03d}"
        if "_agents" not in self.__dict__:  # Ray takes the repr for its logs right after construction
            return f"AgentHost({who} on {self.device_name})"
        extra = "" if len(ids) == 1 else f" (+{len(ids) - 1} more)"
        return f"AgentHost({who} on {self.device_name}, {self.agents[ids[0]].profile!r}{extra})"

    def placement(self) -> dict:
        """Where this actor runs: node id, pid, device and GPU ids, and the torch build and CPU kernels it computes with (for tests and the summary)."""
        import torch

        ctx = ray.get_runtime_context()
        return {
            "group": self._args[0],
            "node_id": ctx.get_node_id(),
            "pid": os.getpid(),
            "device": self.device_name,
            "gpu_ids": self.gpu_ids,
            "nccl": self.nccl,
            "device_peak_mb": _device_peak_mb(self.device_name),
            # Floating point differs between CPU instruction sets (torch picks its kernels by them): runs with different ones differ.
            "kernels": f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}",
        }

    def record_metrics(self, rows: list[dict], accuracy: float | None) -> None:
        self.metrics.record(rows)
        if accuracy is not None:
            self.metrics.record_accuracy(accuracy)
        self.telemetry.record(rows, accuracy)  # one INFO line per round, WARNING on a non-finite loss


def _nccl_imports() -> bool:
    """Ray's NCCL collective is usable in this process (it needs cupy, the optional `gpu` extra)."""
    try:
        from ray.util.collective import nccl_available

        return bool(nccl_available())
    except Exception:  # a broken cupy (say, built for another CUDA) fails in many ways: NCCL is out either way
        return False


def _device_peak_mb(device: str) -> float | None:
    """The most GPU memory this process's tensors have held (MB), None on the CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20


AgentHostActor = ray.remote(AgentHost)


class WallHost(AgentHost):
    """An AgentHost for `--clock wall`: an inbox its peers call while it trains, and an averaging step as long as the clock's under --emulate.

    `inbox` runs in its own concurrency group (one thread), so an offloader's chunk
    refs reach a helper while the helper's `wall_round` is running in the default
    group; every other method still runs one at a time.  Refs travel inside the
    `Transfer` (nested: Ray hands the ref over, the helper fetches the chunk itself).
    """

    def __init__(self, group_id: int, agent_ids: list[int], cfg: RunConfig):
        import queue

        super().__init__(group_id, agent_ids, cfg)
        self.inbox_q: queue.Queue = queue.Queue()
        self.peers: dict[int, Any] = {}

    def set_peers(self, hosts: list, owner: dict[int, int]) -> None:
        """Every agent's actor handle, so this actor can message its partners directly."""
        self.peers = {k: hosts[g] for k, g in owner.items()}

    def send(self, agent: int, message: Any) -> None:
        self.peers[agent].inbox.remote(message)

    @ray.method(concurrency_group="inbox")
    def inbox(self, message: Any) -> None:
        """A peer's message: stamped with its arrival on this node's clock, then fetched by the round's fetching thread."""
        message.arrived = now()
        self.inbox_q.put(message)

    def _gather_by_hops(self) -> bool:
        return all(len(ids) == 1 for ids in self.setting.groups)

    def offset_clock(self, seconds: float) -> None:
        """Fault injection: this process's clock (`emulation.now`) runs `seconds` off the other nodes'."""
        offset_clock(seconds)

    def allreduce(self, model: bool, aux: bool, how: str, *after) -> None:
        """The collective; under --emulate (links included) it then lasts at least the clock's aux-head and model exchange seconds.

        The model moves as the clock charges it: a ring of 2(N-1) hops of one block each
        (`_ring_gather`), not one allgather of N models ("auto"; COMDML_ALLREDUCE still forces one).
        """
        entry = now()
        super().allreduce(model, aux, "ring" if how == "auto" else how, *after)
        if self._args[2].emulate_links:
            wait_until(entry + self.averaging_pad_s())


WallHostActor = ray.remote(concurrency_groups={"inbox": 1})(WallHost)  # restarts: `faults.ACTOR_OPTIONS`, as AgentHost


class RayBackend(Backend):
    """The typed agent methods as calls on the run's AgentHost actors; handles are ObjectRefs."""

    def __init__(self, hosts: list, groups: list[list[int]]):
        self.hosts = hosts
        self.groups = groups
        self.num_groups = len(hosts)
        self.allreduce_how = os.environ.get("COMDML_ALLREDUCE", "auto")  # ring, gather or auto (AgentHost.allreduce)
        self.calls = 0  # remote calls the driver made (the summary reports them per round)

    def _call(self, g: int, fn: Callable, *args: Any, returns: int | None = None) -> Any:
        self.calls += 1
        method = getattr(self.hosts[g], fn.__name__)
        if returns is None:
            return method.remote(*args)
        out = method.options(num_returns=returns).remote(*args)
        return [out] if returns == 1 else list(out)

    def fetch(self, handles: list) -> list:
        """ray.get that turns a dead actor into a message naming its agents (never a hang)."""
        try:
            return ray.get(list(handles))
        except RayActorError as e:
            raise AgentFailure(*self._who_died(e)) from None
        except ObjectLostError as e:  # a result held on a node that is gone (the actor's call had finished)
            raise AgentFailure(*self._who_lost(e)) from None
        except RayTaskError as e:
            if isinstance(e.cause, (ConfigError, DatasetError)):
                raise e.cause from None
            if isinstance(e.cause, RayActorError):  # a call (the reducer's) whose input came from an actor that died
                raise AgentFailure(*self._who_died(e.cause)) from None
            if isinstance(e.cause, ObjectLostError):
                raise AgentFailure(*self._who_lost(e.cause)) from None
            if isinstance(e.cause, StateLost):  # a call that reached the restarted process: the same loss
                g = e.cause.group_id
                raise AgentFailure(failure_message(self._who(g), self.hosts[g], e.cause), g) from None
            raise

    def _who_died(self, err: RayActorError) -> tuple[str, int | None]:
        """(message, group) of the actor named in Ray's own error (its actor id), with its node and the command that shows its log."""
        by_id = {h._actor_id.hex(): g for g, h in enumerate(self.hosts)}
        g = by_id.get(getattr(err, "actor_id", None) or "")
        if g is None:
            return f"an agent actor died ({type(err).__name__}); see `ray list actors --filter state=DEAD` and its log, and rerun.", None
        return failure_message(self._who(g), self.hosts[g], err), g

    def _who_lost(self, err: ObjectLostError) -> tuple[str, None]:
        """(message, None): which actor's node held the result is not in Ray's error; `faults.await_actors` finds the groups whose node is gone."""
        return f"a result of this round was lost with the node that held it ({type(err).__name__}).", None

    def _who(self, g: int) -> str:
        """The agents of group g, as failure messages name them."""
        ids = self.groups[g]
        return f"agent {ids[0]}" if len(ids) == 1 else f"agents {ids[0]}-{ids[-1]}"

    def average(self, model: bool, aux: bool, after: list | tuple = ()) -> list:
        self.calls += self.num_groups
        return [h.allreduce.remote(model, aux, self.allreduce_how, *after) for h in self.hosts]

    def record_metrics(self, g: int, rows: list[dict], accuracy: float | None) -> None:
        """rows may be the ref of the reducer's rows for actor g: Ray hands the actor the list, the driver never holds it."""
        self.calls += 1
        self.hosts[g].record_metrics.remote(rows, accuracy)
