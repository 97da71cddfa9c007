"""The experiment loop on Ray: start or join a cluster, place agent actors, drive synchronous rounds.

Owns
- `plan_layout`: which agents each actor hosts (`--agents-per-actor`,
  `auto` packs only when the cluster's CPUs, GPUs or memory cannot hold one actor per
  agent) and the refusal, before any actor starts, of a run the cluster cannot hold;
- `Run`: the actors (in a placement group: `pack` or `spread`), the split profile,
  and one round of `local` or `comdml` followed by averaging (ring all-reduce or
  gossip), evaluation and the rows of results.  The driver only starts steps and
  moves ObjectRefs between actors: weights, activations and data never pass
  through it (it does `ray.get` only on small reports: work counts, losses, plans).
`comdml_ray.experiment.run_experiment` drives a `Run` round by round.
The asynchronous baselines run on the event clock in `comdml_ray.baselines`.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import psutil
import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from comdml_ray.actors import AgentHostActor
from comdml_ray.agent import drive_ring
from comdml_ray.clock import AgentWork, exchange_seconds, round_finish_times
from comdml_ray.cluster import failure_message, wait_for_placement  # start_ray moved to comdml_ray.cluster (issue 16)
from comdml_ray.config import DATASET_TRAIN_SIZES, ConfigError, RunConfig
from comdml_ray.costmodel import SplitProfile
from comdml_ray.data import DatasetError
from comdml_ray.profiles import drift_slowdowns, link_matrices, make_profiles
from comdml_ray.telemetry import with_idle_share
from comdml_ray.topology import neighbours

ACTOR_BASE_MB = 320  # a Ray worker that imported torch (measured: ~310 MB private)
DATASET_MB = {"fashion-mnist": 60, "cifar10": 190, "cifar100": 190, "cinic10": 560}  # uint8 arrays each actor holds
SAMPLE_BYTES = {"fashion-mnist": 28 * 28 * 4, "cifar10": 3 * 32 * 32 * 4, "cifar100": 3 * 32 * 32 * 4, "cinic10": 3 * 32 * 32 * 4}
PER_AGENT_MB = {"cnn": 8, "resnet56": 60, "resnet110": 110}  # model, grads, momentum, flat copies, batch activations
MEMORY_SHARE = 0.8
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # of the cluster's Ray memory resource we allow the run to plan for


class AgentFailure(RuntimeError):
    """An actor died; the message names the agents it hosted."""


# ----------------------------------------------------------------------------- cluster and layout


@dataclass
class Layout:
    groups: list[list[int]]  # agent ids hosted by each actor
    cpus: float  # per actor
    gpus: float  # per actor
    memory_mb_per_actor: float
    reason: str  # why this packing


def plan_layout(cfg: RunConfig, resources: dict) -> Layout:
    """Decide agents per actor and refuse (ConfigError) what the cluster cannot hold."""
    n = cfg.agents
    cpus = float(resources.get("CPU", 0))
    gpus = float(resources.get("GPU", 0))
    mem_mb = float(resources.get("memory", psutil.virtual_memory().available)) / 2**20 * MEMORY_SHARE
    if cfg.gpus_per_agent > 0 and gpus < cfg.gpus_per_agent:
        raise ConfigError(f"--gpus-per-agent {cfg.gpus_per_agent} needs GPUs but the cluster has {gpus:g}; drop the flag or add GPU nodes (locally, --num-gpus declares logical GPUs).")
    if cpus < cfg.cpus_per_agent:
        raise ConfigError(f"--cpus-per-agent {cfg.cpus_per_agent} is more than the cluster's {cpus:g} CPUs; lower it.")
    shard_mb = DATASET_TRAIN_SIZES[cfg.dataset] / n * SAMPLE_BYTES[cfg.dataset] / 2**20
    agent_mb = PER_AGENT_MB[cfg.model] + shard_mb
    fixed_mb = ACTOR_BASE_MB + DATASET_MB[cfg.dataset]

    def actor_mb(k: int) -> float:
        return fixed_mb + k * agent_mb

    max_cpu = int(cpus // cfg.cpus_per_agent)
    max_gpu = int(gpus // cfg.gpus_per_agent + 1e-9) if cfg.gpus_per_agent > 0 else n
    if cfg.agents_per_actor == "auto":
        actors = min(n, max_cpu, max_gpu)
        while actors > 1 and actors * fixed_mb + n * agent_mb > mem_mb:
            actors -= 1
        k = math.ceil(n / actors)
        reason = "one agent per actor" if k == 1 else f"{k} agents per actor: the cluster's {cpus:g} CPUs" + (
            f", {gpus:g} GPUs" if cfg.gpus_per_agent > 0 else "") + f" and {mem_mb / 1024:.1f} GB of usable memory hold {actors} actors at once"
    else:
        k = int(cfg.agents_per_actor)
        actors = math.ceil(n / k)
        reason = f"{k} agents per actor (--agents-per-actor)"
        if actors > max_cpu:
            raise ConfigError(
                f"{actors} actors x {cfg.cpus_per_agent:g} CPUs need {actors * cfg.cpus_per_agent:g} CPUs but the cluster has {cpus:g}; "
                f"use --agents-per-actor {math.ceil(n / max(max_cpu, 1))} or auto, or lower --cpus-per-agent.")
        if actors > max_gpu:
            raise ConfigError(
                f"{actors} actors x {cfg.gpus_per_agent:g} GPUs need {actors * cfg.gpus_per_agent:g} GPUs but the cluster has {gpus:g}; "
                f"use --agents-per-actor {math.ceil(n / max(max_gpu, 1))} or auto, or lower --gpus-per-agent.")
    actors = math.ceil(n / k)
    need_mb = actors * fixed_mb + n * agent_mb
    if need_mb > mem_mb:
        fit = int(max((mem_mb - fixed_mb) // agent_mb, 0))
        raise ConfigError(
            f"{n} agents of {cfg.model} on {cfg.dataset} need about {need_mb / 1024:.1f} GB but the cluster has {mem_mb / 1024:.1f} GB usable; "
            f"at most {fit} agents fit: use fewer --agents, a smaller --model, or more nodes.")
    groups = [list(range(i, min(i + k, n))) for i in range(0, n, k)]
    return Layout(groups, cfg.cpus_per_agent, cfg.gpus_per_agent, actor_mb(k), reason)


class MemoryWatch:
    """Peak memory of this run: proportional set size (PSS) summed over the driver and its process tree.

    A local Ray started by the driver (GCS, raylet, dashboard, the agent actors and
    their share of the object store's shared memory) lives in that tree, so the peak
    is the run's own footprint, unaffected by other programs on the machine.  With
    --address only the driver is counted.  Sampled once a second.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @staticmethod
    def sample() -> int:
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        return total

    def _loop(self) -> None:
        while True:
            self.peak = max(self.peak, self.sample())
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


# ----------------------------------------------------------------------------- the run


@dataclass
class RoundResult:
    row: dict  # one row of rounds.csv
    agent_rows: list[dict]  # per agent: virtual finish, partner, split, loss, bytes
    plan_rows: list[dict] = field(default_factory=list)


class Run:
    """Actors of one experiment and the steps of a synchronous round."""

    def __init__(self, cfg: RunConfig, log=print):
        self.cfg = cfg
        self.log = log
        self.layout = plan_layout(cfg, ray.cluster_resources())
        self.log(f"layout: {len(self.layout.groups)} actors, {self.layout.reason}")
        self.owner = {k: g for g, ids in enumerate(self.layout.groups) for k in ids}
        strategy = "PACK" if cfg.placement == "pack" else "SPREAD"
        bundle = {"CPU": self.layout.cpus} | ({"GPU": self.layout.gpus} if self.layout.gpus > 0 else {})
        self.pg = placement_group([bundle] * len(self.layout.groups), strategy=strategy)
        wait_for_placement(self.pg, self.log, timeout_s=120)  # progress lines while it waits (issue 16)
        self.hosts = []
        for g, ids in enumerate(self.layout.groups):
            name = f"agent-{ids[0]:03d}" if len(ids) == 1 else f"agents-{ids[0]:03d}-{ids[-1]:03d}"
            self.hosts.append(
                AgentHostActor.options(
                    name=name,
                    num_cpus=self.layout.cpus,
                    num_gpus=self.layout.gpus,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=g),
                ).remote(g, ids, cfg)
            )
        self.infos = sorted((i for lst in self.get([h.setup.remote() for h in self.hosts]) for i in lst), key=lambda i: i.agent)
        self.placements = self.get([h.placement.remote() for h in self.hosts])
        self.split_profile: SplitProfile = self.get(self.hosts[0].profile_splits.remote())
        self.get([h.set_split_profile.remote(self.split_profile) for h in self.hosts])
        self.profiles = make_profiles(cfg.heterogeneity, cfg.agents, cfg.seed, cfg.slow_link_share)
        self.nbrs = neighbours(cfg.topology, cfg.agents, cfg.degree, cfg.seed) if cfg.aggregation == "gossip" else [
            [(k - 1) % cfg.agents, (k + 1) % cfg.agents] for k in range(cfg.agents)]
        bw = np.array([p.bandwidth_Bps for p in self.profiles])
        lat = np.array([p.latency_s for p in self.profiles])
        self.link_bw, self.link_lat = link_matrices(self.profiles)
        self.inbound_bw = bw
        self.exchange_s = exchange_seconds(self.cfg.aggregation, self.nbrs, bw, lat, self.split_profile.model_bytes)
        self.sizes = np.array([i.num_samples for i in self.infos])

    # ------------------------------------------------------------------ helpers
    def get(self, refs):
        """ray.get that turns a dead actor into a message naming its agents (never a hang)."""
        try:
            return ray.get(refs)
        except RayActorError as e:
            raise AgentFailure(self._who_died(e)) from None
        except RayTaskError as e:
            if isinstance(e.cause, (ConfigError, DatasetError)):
                raise e.cause from None
            raise

    def _who_died(self, err: Exception) -> str:
        for g, h in enumerate(self.hosts):
            try:
                ray.get(h.placement.remote(), timeout=10)
            except Exception:
                ids = self.layout.groups[g]
                who = f"agent {ids[0]}" if len(ids) == 1 else f"agents {ids[0]}-{ids[-1]}"
                return failure_message(who, h, err)  # names its node IP and the command that shows its log (issue 16)
        return f"an agent actor died ({err}); rerun."

    def shutdown(self, timeout_s: float = 30.0, release_wait_s: float = 5.0) -> None:
        """Kill the actors and free their placement group before returning, so the next run finds the resources free.

        "REMOVED" comes before the bundles' CPUs/GPUs are back in the pool the scheduler
        sees; a PACK group created in that gap lands on other nodes. So also wait (at most
        release_wait_s: another job may take them) until the pool has grown by the group.
        """
        held: dict[str, float] = {}
        for b in self.pg.bundle_specs:
            for k, v in b.items():
                held[k] = held.get(k, 0.0) + v
        before = ray.available_resources()
        for h in self.hosts:
            ray.kill(h)
        remove_placement_group(self.pg)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and placement_group_table(self.pg).get("state") != "REMOVED":
            time.sleep(0.1)
        deadline = time.monotonic() + release_wait_s
        while time.monotonic() < deadline:
            now = ray.available_resources()
            if all(now.get(k, 0.0) >= before.get(k, 0.0) + v - 1e-6 for k, v in held.items()):
                break
            time.sleep(0.05)

    # ------------------------------------------------------------------ one round
    def run_round(self, r: int) -> RoundResult:
        t0 = time.perf_counter()
        cfg = self.cfg
        plan = None
        plan_rows: list[dict] = []
        if cfg.algorithm == "comdml":
            states = [h.publish_states.remote(r) for h in self.hosts]
            digests = self.get([h.plan_round.remote(r, self.exchange_s, *states) for h in self.hosts])
            if len({d.digest for d in digests}) != 1:
                raise RuntimeError(f"round {r}: agents disagree on the plan ({sorted({d.digest for d in digests})}); the planning function must be deterministic.")
            plan = digests[0].plan
            a = [h.train_phase.remote(r) for h in self.hosts]
            b = [h.helper_phase.remote(r, *a) for h in self.hosts]
            c = [h.finish_phase.remote(r, *b) for h in self.hosts]
            self.get([h.aux_mix.remote(*c) for h in self.hosts])
            reports = self.get(a) + self.get(b)
            del a, b, c  # drop the refs so the activation chunks leave the object store
        else:
            reports = self.get([h.train_phase.remote(r) for h in self.hosts])
        work = {k: AgentWork(k) for k in range(cfg.agents)}
        loss_sum = np.zeros(cfg.agents)
        batches = np.zeros(cfg.agents)
        sent = np.zeros(cfg.agents)
        for rep in reports:
            for k, w in rep.work.items():
                merged = work[k]
                merged.own_batches += w.own_batches
                merged.prefix_batches += w.prefix_batches
                if w.partner >= 0:
                    merged.partner, merged.split_row, merged.bytes_offloaded = w.partner, w.split_row, w.bytes_offloaded
                merged.suffix_batches.update(w.suffix_batches)
            for k, v in rep.loss_sum.items():
                loss_sum[k] += v
            for k, v in rep.batches.items():
                batches[k] += v
            for k, v in rep.bytes_sent.items():
                sent[k] += v
            rep.offloads.clear()
            rep.returns.clear()
        sent += self.aggregate()
        sec = self.split_profile.base_sec_per_batch * drift_slowdowns(
            np.array([p.slowdown for p in self.profiles]), r, cfg.drift, cfg.seed)
        prof = self.split_profile
        finish = round_finish_times(
            [work[k] for k in range(cfg.agents)], sec, np.asarray(prof.rho_s), np.asarray(prof.rho_f),
            np.asarray(prof.suffix_bytes), self.link_bw, self.link_lat, self.inbound_bw, self.exchange_s)
        if plan is not None:
            # The solver scores an offloader by its own side; its model is whole when its helper is done too.
            predicted = np.where(plan.partner >= 0, np.maximum(plan.finish, plan.finish[np.maximum(plan.partner, 0)]), plan.finish)
            for k in range(cfg.agents):
                plan_rows.append({
                    "round": r, "agent": k, "partner": int(plan.partner[k]),
                    "split": int(prof.split_ids[plan.split[k]]) if plan.split[k] >= 0 else -1,
                    "predicted_finish_s": float(predicted[k]), "simulated_finish_s": float(finish[k]),
                    "bytes_offloaded": int(work[k].bytes_offloaded), "method": plan.method, "note": plan.note,
                })
        wall = time.perf_counter() - t0
        agent_rows = [{
            "round": r, "agent": k, "virtual_finish_s": float(finish[k]), "wall_time_s": wall,
            "partner": work[k].partner,
            "split": int(prof.split_ids[work[k].split_row]) if work[k].split_row >= 0 else -1,
            "train_loss": float(loss_sum[k] / max(batches[k], 1)), "bytes_sent": int(sent[k]),
            "bytes_offloaded": int(work[k].bytes_offloaded),
        } for k in range(cfg.agents)]
        row = {
            "round": r,
            "round_virtual_s": float(finish.max()),
            "round_wall_s": wall,
            "train_loss": float(loss_sum.sum() / max(batches.sum(), 1)),
            "bytes_sent": int(sent.sum()),
            "bytes_offloaded": int(sum(w.bytes_offloaded for w in work.values())),
            "pairs": int(sum(1 for w in work.values() if w.partner >= 0)),
        }
        return RoundResult(row, agent_rows, plan_rows)

    def aggregate(self) -> np.ndarray:
        """Average neighbours' models through the object store; returns bytes each agent sent."""
        n = self.cfg.agents
        sent = np.zeros(n)
        if self.cfg.aggregation == "gossip":
            puts = self.get([h.gossip_put.remote() for h in self.hosts])
            refs = {k: ref for d in puts for k, ref in d.items()}
            need = [{j: refs[j] for k in ids for j in (k, *self.nbrs[k])} for ids in self.layout.groups]
            self.get([h.gossip_mix.remote(need[g]) for g, h in enumerate(self.hosts)])
            for k in range(n):
                sent[k] = len(self.nbrs[k]) * self.split_profile.model_bytes
            return sent
        self.get([h.ring_start.remote() for h in self.hosts])
        drive_ring(
            lambda phase, step, per_group: self.get([h.ring_step.remote(phase, step, per_group[g]) for g, h in enumerate(self.hosts)]),
            self.owner, len(self.hosts), n)
        self.get([h.ring_finish.remote() for h in self.hosts])
        # Each agent sends one chunk per step, 2(N-1) steps; chunks are ~model/N floats.
        sent[:] = 2 * (n - 1) * self.split_profile.model_bytes / n
        return sent

    def evaluate(self) -> float:
        """Test accuracy of the averaged model(s): one model under allreduce (all equal), else the mean over --eval-agents."""
        ids = self.cfg.eval_agent_ids()
        by_group: dict[int, list[int]] = {}
        for k in ids:
            by_group.setdefault(self.owner[k], []).append(k)
        accs = self.get([self.hosts[g].evaluate.remote(ks) for g, ks in by_group.items()])
        return float(np.mean([a for d in accs for a in d.values()]))

    def record_metrics(self, agent_rows: list[dict], accuracy: float | None) -> None:
        agent_rows = with_idle_share(agent_rows)  # the dashboard's idle share needs every agent's finish (issue 16)
        for g, h in enumerate(self.hosts):
            rows = [r for r in agent_rows if self.owner[r["agent"]] == g]
            h.record_metrics.remote(rows, accuracy if g == 0 else None)
