"""The agents' logic as plain classes, testable without Ray (the actor in `actors.py` only hosts it).

Owns
- `Agent`: one agent's shard, model, auxiliary heads, seeded generator, profile and
  speed estimate, and the work it does in a round (train alone, train a prefix and
  ship activations, train a partner's suffix);
- `AgentGroup`: the agents one process hosts, run in turn (one agent per actor by
  default; several with `--agents-per-actor`), and every step of a round as a method
  the runtime calls on each group: publish state, plan, train phases, ring
  all-reduce steps, gossip, evaluation;
- `Store`: the transport interface (put/get/prefetch).  In an actor it is Ray's
  object store; in tests `LocalStore`, a dict.  Weights and activations only ever
  move through it, as numpy arrays (zero-copy in Ray's store).

One ComDML round on a group (the runtime calls these in order on every group):
  publish_states -> plan_round (every group solves the same problem; the runtime
  checks they agree) -> train_phase (offloaders: prefix+aux, activations out in
  chunks; everyone else: own model) -> helper_phase (helpers: partner's suffix on
  the received chunks, one optimizer per round) -> finish_phase (offloaders take the
  trained suffix back) -> aux_mix (aux heads averaged among agents of the same
  split) -> averaging (ring all-reduce steps or one gossip step) -> evaluate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from comdml_ray.async_steps import AsyncSteps
from comdml_ray.clock import AgentWork
from comdml_ray.config import RunConfig
from comdml_ray.costmodel import SplitProfile, profile_flops, profile_measure
from comdml_ray.data import DatasetArrays, load_dataset, partition, to_tensor
from comdml_ray.models import SplitModel, build_model
from comdml_ray.profiles import AgentProfile, drift_slowdowns, link_matrices, make_profiles
from comdml_ray.smashed import SmashedEncoder, SmashedSpec
from comdml_ray.topology import metropolis_hastings, neighbours
from comdml_ray.training import (
    OptimConfig,
    SuffixTrainer,
    TrainStats,
    batches_per_round,
    evaluate,
    flatten,
    make_sgd,
    minibatches,
    train_full,
    train_prefix,
    unflatten_into,
)
from solvers import OffloadProblem, Plan, solve

SPEED_EMA = 0.5  # weight of the newest observation in an agent's seconds-per-batch estimate


class Store(Protocol):
    def put(self, obj: Any) -> Any: ...
    def get(self, refs: Any) -> Any: ...
    def prefetch(self, refs: list[Any]) -> None: ...


class LocalStore:
    """In-process stand-in for the object store, for tests of the plain classes."""

    def __init__(self) -> None:
        self._objs: dict[int, Any] = {}
        self.bytes_put = 0

    def put(self, obj: Any) -> int:
        key = len(self._objs)
        self._objs[key] = obj
        return key

    def get(self, refs: Any) -> Any:
        if isinstance(refs, list):
            return [self._objs[r] for r in refs]
        return self._objs[refs]

    def prefetch(self, refs: list[Any]) -> None:
        pass


# ----------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class AgentInfo:
    agent: int
    num_samples: int
    batches_per_round: int
    profile: AgentProfile


@dataclass(frozen=True)
class AgentState:
    """What an agent publishes before planning: enough for every peer to compute the same plan."""

    agent: int
    batches: int  # batches it must train this round
    sec_per_batch: float  # its smoothed estimate of seconds per full-model batch
    bandwidth_Bps: float
    latency_s: float


@dataclass(frozen=True)
class PlanDigest:
    group: int
    digest: str
    plan: Plan


@dataclass
class OffloadOut:
    """An offloader's outbound data for its helper: refs only, the data is in the store."""

    offloader: int
    helper: int
    split: int  # split point m
    suffix_ref: Any  # flat suffix weights at round start
    chunk_refs: list[Any]  # each chunk: list of smashed.SmashedBatch (z (B, C_m, H_m, W_m) encoded, y (B,) int64)


@dataclass
class PhaseReport:
    """What a group returns from a phase: per-agent work and train statistics, plus outbound refs."""

    work: dict[int, AgentWork] = field(default_factory=dict)
    loss_sum: dict[int, float] = field(default_factory=dict)
    batches: dict[int, int] = field(default_factory=dict)
    bytes_sent: dict[int, int] = field(default_factory=dict)
    offloads: list[OffloadOut] = field(default_factory=list)
    returns: dict[int, Any] = field(default_factory=dict)  # offloader -> ref of its trained suffix
    aux: dict[int, tuple[int, int, Any]] = field(default_factory=dict)  # agent -> (split, n_samples, aux ref)


def plan_digest(plan: Plan) -> str:
    h = hashlib.sha256()
    h.update(np.asarray(plan.partner, dtype=np.int64).tobytes())
    h.update(np.asarray(plan.split, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- one agent


class Agent:
    """One agent: its data shard, model, aux heads and seeded randomness (seed + agent id)."""

    def __init__(self, agent_id: int, cfg: RunConfig, data: DatasetArrays, indices: np.ndarray, profile: AgentProfile, device: torch.device):
        self.id = agent_id
        self.cfg = cfg
        self.profile = profile
        self.device = device
        self.data_meta = (data.channels, data.image_size, data.num_classes)
        # Every agent starts from the same weights (seeded by the run's seed), as decentralized SGD assumes.
        torch.manual_seed(cfg.seed)
        self.model: SplitModel = build_model(cfg.model, *self.data_meta).to(device)
        self.x = to_tensor(data.train_x[indices], data.mean, data.std).to(device)  # (n, C, H, W)
        self.y = torch.from_numpy(data.train_y[indices].astype(np.int64)).to(device)  # (n,)
        self.gen = torch.Generator().manual_seed(cfg.seed + agent_id)
        self.aux: dict[int, torch.nn.Module] = {}
        self.opt = OptimConfig(cfg.lr, cfg.momentum, cfg.weight_decay)
        # Local optimizer state persists across rounds (local momentum, as in local SGD);
        # averaging touches weights and BN statistics only.
        self.full_optim = make_sgd(self.model.parameters(), self.opt)
        self.prefix_optim: dict[int, torch.optim.Optimizer] = {}
        self.sec_estimate: float | None = None
        self.encoder = SmashedEncoder(SmashedSpec.from_config(cfg), seed=cfg.seed + agent_id)  # what leaves: --smashed-*

    @property
    def num_samples(self) -> int:
        return int(self.y.numel())

    def round_batches(self) -> list[torch.Tensor]:
        return minibatches(self.num_samples, self.cfg.batch_size, self.cfg.local_epochs, self.gen)

    def aux_head(self, m: int) -> torch.nn.Module:
        if m not in self.aux:
            torch.manual_seed(self.cfg.seed + 1_000 * m)  # same initial aux head for a split on every agent
            self.aux[m] = self.model.make_aux_head(m).to(self.device)
        return self.aux[m]

    def prefix_optimizer(self, m: int) -> torch.optim.Optimizer:
        """The offloader's optimizer for prefix(m) + aux(m), kept across the rounds it uses split m."""
        if m not in self.prefix_optim:
            params = list(self.model.prefix(m).parameters()) + list(self.aux_head(m).parameters())
            self.prefix_optim[m] = make_sgd(params, self.opt)
        return self.prefix_optim[m]

    def train_alone(self) -> TrainStats:
        return train_full(self.model, self.x, self.y, self.round_batches(), self.full_optim)

    def blank_model(self) -> SplitModel:
        """A model of the same architecture to hold a partner's suffix (weights overwritten)."""
        return build_model(self.cfg.model, *self.data_meta).to(self.device)


# ----------------------------------------------------------------------------- a group of agents


class AgentGroup(AsyncSteps):
    """The agents hosted by one process (a Ray actor), run in turn."""

    def __init__(self, group_id: int, agent_ids: Sequence[int], cfg: RunConfig, store: Store, device: str = "cpu"):
        self.group_id = group_id
        self.cfg = cfg
        self.store = store
        self.device = torch.device(device)
        self.ids = list(agent_ids)
        self.data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
        shards = agent_shards(cfg, self.data.train_y)
        self.profiles = make_profiles(cfg.heterogeneity, cfg.agents, cfg.seed, cfg.slow_link_share)
        self.agents = {k: Agent(k, cfg, self.data, shards[k], self.profiles[k], self.device) for k in self.ids}
        self.sizes = np.array([len(s) for s in shards])
        self.nbrs = neighbours(cfg.topology, cfg.agents, cfg.degree, cfg.seed)
        self.split_profile: SplitProfile | None = None
        self.plan: Plan | None = None
        self._test: tuple[torch.Tensor, torch.Tensor] | None = None
        self._ring: dict[int, np.ndarray] = {}
        self._inbox: dict[int, np.ndarray] = {}  # ring chunks from an agent of this same group
        self._pending: dict[int, tuple[SuffixTrainer, SplitModel, OffloadOut]] = {}

    # ------------------------------------------------------------------ set-up
    def describe(self) -> list[AgentInfo]:
        return [
            AgentInfo(k, a.num_samples, batches_per_round(a.num_samples, self.cfg.batch_size, self.cfg.local_epochs), a.profile)
            for k, a in self.agents.items()
        ]

    def profile_splits(self) -> SplitProfile:
        """Profile the model's splits (called on one group; the result is shared with all)."""
        model = self.agents[self.ids[0]].blank_model().cpu()
        shape = (self.data.channels, self.data.image_size, self.data.image_size)
        if self.cfg.profile == "flops":
            return profile_flops(model, shape, self.cfg.batch_size, self.cfg.reference_gflops, self.cfg.smashed_dtype)
        if self.cfg.profile == "measure":
            return profile_measure(model, shape, self.cfg.batch_size, smashed_dtype=self.cfg.smashed_dtype)
        prof = SplitProfile.from_csv(self.cfg.profile)
        prof.check_matches(model, self.cfg.batch_size)
        return prof.with_smashed_dtype(model, shape, self.cfg.smashed_dtype)

    def set_split_profile(self, prof: SplitProfile) -> None:
        self.split_profile = prof

    def true_sec_per_batch(self, round_idx: int) -> np.ndarray:
        """Every agent's actual seconds per batch in this round (profile, drift included), (N,)."""
        base = np.array([p.slowdown for p in self.profiles])
        return self.split_profile.base_sec_per_batch * drift_slowdowns(base, round_idx, self.cfg.drift, self.cfg.seed)

    # ------------------------------------------------------------------ planning (ComDML)
    def publish_states(self, round_idx: int) -> list[AgentState]:
        """Each agent announces its batches and *estimated* speed, smoothed over what it observed."""
        truth = self.true_sec_per_batch(max(round_idx - 1, 0))
        out = []
        for k, a in self.agents.items():
            # What the agent observed last round (its virtual seconds per batch) updates its estimate.
            a.sec_estimate = truth[k] if a.sec_estimate is None else SPEED_EMA * truth[k] + (1 - SPEED_EMA) * a.sec_estimate
            bpr = batches_per_round(a.num_samples, self.cfg.batch_size, self.cfg.local_epochs)
            out.append(AgentState(k, bpr, float(a.sec_estimate), a.profile.bandwidth_Bps, a.profile.latency_s))
        return out

    def plan_round(self, round_idx: int, exchange_s: np.ndarray, *state_lists: list[AgentState]) -> PlanDigest:
        """Compute the round's plan from every agent's published state (the same on every group)."""
        states = sorted((s for lst in state_lists for s in lst), key=lambda s: s.agent)
        problem = problem_from_states(states, self.split_profile, exchange_s, self.cfg.helpers_can_serve)
        self.plan = solve(problem, method=self.cfg.scheduler)
        return PlanDigest(self.group_id, plan_digest(self.plan), self.plan)

    # ------------------------------------------------------------------ training phases
    def train_phase(self, round_idx: int) -> PhaseReport:
        """Offloaders first (they never wait), then everyone's own model (solo agents and helpers)."""
        rep = PhaseReport()
        plan = self.plan
        offloaders = [k for k in self.ids if plan is not None and plan.partner[k] >= 0]
        for k in offloaders:
            a = self.agents[k]
            m = int(self.split_profile.split_ids[plan.split[k]])
            suffix_vec = flatten(a.model, a.model.suffix_keys(m))
            out = OffloadOut(k, int(plan.partner[k]), m, self.store.put(suffix_vec), [])
            stats = TrainStats()
            sent = suffix_vec.nbytes
            act_bytes = 0
            for chunk in train_prefix(a.model.prefix(m), a.aux_head(m), a.x, a.y, a.round_batches(), a.prefix_optimizer(m), self.cfg.chunk_batches, stats, a.encoder):
                out.chunk_refs.append(self.store.put(chunk))
                act_bytes += sum(b.nbytes for b in chunk)  # encoded size: what the clock charges
            rep.offloads.append(out)
            rep.work[k] = AgentWork(k, prefix_batches=stats.batches, partner=out.helper, split_row=int(plan.split[k]), bytes_offloaded=act_bytes)
            rep.loss_sum[k], rep.batches[k] = stats.loss_sum, stats.batches
            rep.bytes_sent[k] = sent + act_bytes
        for k in self.ids:
            if k in rep.work:
                continue
            stats = self.agents[k].train_alone()
            rep.work[k] = AgentWork(k, own_batches=stats.batches)
            rep.loss_sum[k], rep.batches[k] = stats.loss_sum, stats.batches
            rep.bytes_sent[k] = 0
        return rep

    def helper_phase(self, round_idx: int, *phase_reports: PhaseReport) -> PhaseReport:
        """Helpers train their partners' suffixes on the received activations, chunk by chunk."""
        rep = PhaseReport()
        for pr in phase_reports:
            for off in pr.offloads:
                if off.helper not in self.agents:
                    continue
                helper = self.agents[off.helper]
                holder = helper.blank_model()
                unflatten_into(holder, self.store.get(off.suffix_ref), holder.suffix_keys(off.split))
                trainer = SuffixTrainer(holder.suffix(off.split), helper.opt, self.device)
                refs = off.chunk_refs
                for i, ref in enumerate(refs):
                    if i + 1 < len(refs):
                        self.store.prefetch([refs[i + 1]])  # fetch the next chunk while training on this one
                    for batch in self.store.get(ref):
                        trainer.step_smashed(batch)
                trained = flatten(holder, holder.suffix_keys(off.split))
                rep.returns[off.offloader] = self.store.put(trained)
                rep.work.setdefault(off.helper, AgentWork(off.helper)).suffix_batches[off.offloader] = trainer.stats.batches
                rep.loss_sum[off.helper] = rep.loss_sum.get(off.helper, 0.0) + trainer.stats.loss_sum
                rep.batches[off.helper] = rep.batches.get(off.helper, 0) + trainer.stats.batches
                rep.bytes_sent[off.helper] = rep.bytes_sent.get(off.helper, 0) + trained.nbytes
        return rep

    def finish_phase(self, round_idx: int, *helper_reports: PhaseReport) -> PhaseReport:
        """Offloaders load the suffix their helper trained; publish their aux head for averaging."""
        rep = PhaseReport()
        for hr in helper_reports:
            for k, ref in hr.returns.items():
                if k not in self.agents:
                    continue
                a = self.agents[k]
                m = int(self.split_profile.split_ids[self.plan.split[k]])
                unflatten_into(a.model, self.store.get(ref), a.model.suffix_keys(m))
                rep.aux[k] = (m, a.num_samples, self.store.put(flatten(a.aux[m])))
        return rep

    def aux_mix(self, *finish_reports: PhaseReport) -> None:
        """Average aux heads among agents that used the same split this round, weighted by data."""
        entries = [(k, m, n, ref) for fr in finish_reports for k, (m, n, ref) in fr.aux.items()]
        for m in sorted({e[1] for e in entries if e[0] in self.agents}):
            same = [e for e in entries if e[1] == m]
            vecs = self.store.get([e[3] for e in same])
            w = np.array([e[2] for e in same], dtype=np.float64)
            mean = np.tensordot(w / w.sum(), np.stack(vecs), axes=1).astype(np.float32)
            for k, *_ in same:
                if k in self.agents:
                    unflatten_into(self.agents[k].aux[m], mean)

    # ------------------------------------------------------------------ ring all-reduce
    def ring_start(self) -> None:
        """Scale each model by its data share; the ring then sums the scaled models (= weighted mean)."""
        share = self.sizes / self.sizes.sum()
        self._ring = {k: flatten(a.model) * np.float32(share[k]) for k, a in self.agents.items()}

    def ring_step(self, phase: str, step: int, inbound: dict[int, Any]) -> dict[int, Any]:
        """One synchronous ring step: apply what arrived, send the next chunk to agent k+1.

        Reduce-scatter step s: agent k sends chunk (k - s) mod N, the receiver adds it.
        All-gather step s: agent k sends chunk (k + 1 - s) mod N, the receiver copies it.
        `inbound` maps a receiving agent to the ref its left neighbour (in another
        actor) sent in the previous step; the return maps each sending agent whose
        right neighbour lives in another actor to the ref it sends now.  A chunk for
        an agent of this same process stays in memory: only actor-to-actor traffic
        needs the object store.
        """
        n = self.cfg.agents
        bounds = np.linspace(0, next(iter(self._ring.values())).size, n + 1).astype(np.int64)
        keys = list(inbound)
        arrived = dict(zip(keys, self.store.get([inbound[k] for k in keys]))) if keys else {}
        arrived.update(self._inbox)
        self._inbox = {}
        for k, chunk in arrived.items():
            c = self._chunk_sent(phase, step - 1, k - 1)
            lo, hi = bounds[c], bounds[c + 1]
            if phase == "reduce":
                self._ring[k][lo:hi] += chunk
            else:
                self._ring[k][lo:hi] = chunk
        out = {}
        if step < n - 1:
            for k in self.ids:
                c = self._chunk_sent(phase, step, k)
                chunk = self._ring[k][bounds[c] : bounds[c + 1]].copy()
                if (k + 1) % n in self.agents:
                    self._inbox[(k + 1) % n] = chunk
                else:
                    out[k] = self.store.put(chunk)
        return out

    def _chunk_sent(self, phase: str, step: int, sender: int) -> int:
        n = self.cfg.agents
        return (sender - step) % n if phase == "reduce" else (sender + 1 - step) % n

    def ring_finish(self) -> None:
        for k, a in self.agents.items():
            unflatten_into(a.model, self._ring[k])
        self._ring = {}

    # ------------------------------------------------------------------ gossip
    def gossip_put(self) -> dict[int, Any]:
        return {k: self.store.put(flatten(a.model)) for k, a in self.agents.items()}

    def gossip_mix(self, refs: dict[int, Any]) -> None:
        """x_i <- sum_j W_ij x_j over i's neighbours and itself (Metropolis-Hastings weights)."""
        w = metropolis_hastings(self.nbrs)
        for k, a in self.agents.items():
            js = [k, *self.nbrs[k]]
            vecs = self.store.get([refs[j] for j in js])
            mixed = np.tensordot(w[k, js], np.stack(vecs).astype(np.float64), axes=1)
            unflatten_into(a.model, mixed.astype(np.float32))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, agent_ids: list[int]) -> dict[int, float]:
        if self._test is None:
            self._test = (
                to_tensor(self.data.test_x, self.data.mean, self.data.std).to(self.device),
                torch.from_numpy(self.data.test_y.astype(np.int64)).to(self.device),
            )
        return {k: evaluate(self.agents[k].model, *self._test)[0] for k in agent_ids if k in self.agents}

    def flat_model(self, agent_id: int) -> np.ndarray:
        return flatten(self.agents[agent_id].model)


def agent_shards(cfg: RunConfig, labels: np.ndarray) -> list[np.ndarray]:
    """Every agent's training indices: the seeded partition of the (optionally subsampled) training set."""
    if cfg.train_samples is None:
        return partition(labels, cfg.agents, cfg.partition, cfg.alpha, cfg.seed)
    subset = np.sort(np.random.default_rng(cfg.seed).permutation(len(labels))[: cfg.train_samples])
    return [subset[s] for s in partition(labels[subset], cfg.agents, cfg.partition, cfg.alpha, cfg.seed)]


def drive_ring(step_all, owner: dict[int, int], num_groups: int, n: int) -> None:
    """Run the 2(N-1)-step ring all-reduce: route each step's refs to the receivers' groups.

    `step_all(phase, step, inbound_per_group)` calls `ring_step` on every group (in Ray:
    one remote call each, awaited together) and returns their outbound dicts.  Agent
    k's chunk goes to agent (k + 1) mod N, so a ref is handed to the group that owns
    the receiver.  Used by the Ray runtime and, with plain groups, by the tests.
    """
    for phase in ("reduce", "gather"):
        inbound: dict[int, Any] = {}
        for step in range(n):
            per_group: list[dict[int, Any]] = [{} for _ in range(num_groups)]
            for k, ref in inbound.items():
                per_group[owner[k]][k] = ref
            inbound = {(k + 1) % n: ref for out in step_all(phase, step, per_group) for k, ref in out.items()}


def problem_from_states(states: list[AgentState], prof: SplitProfile, exchange_s: np.ndarray, helpers_can_serve: int) -> OffloadProblem:
    profiles = [AgentProfile(s.agent, 1.0, s.bandwidth_Bps, s.latency_s) for s in states]
    bw, lat = link_matrices(profiles)
    return OffloadProblem(
        batches=np.array([s.batches for s in states], dtype=float),
        sec_per_batch=np.array([s.sec_per_batch for s in states]),
        bandwidth=bw,
        latency=lat,
        splits=prof.table(),
        overhead_s=np.asarray(exchange_s, dtype=float),
        inbound_bandwidth=np.array([s.bandwidth_Bps for s in states]),
        helpers_can_serve=helpers_can_serve,
    )
