"""The agents' logic as plain classes, testable without Ray (the actor in `actors.py` only hosts it).

Owns
- `Agent`: one agent's shard, model, auxiliary heads, seeded generator, profile and
  speed estimate, and its own local training.  Between uses its model is compact
  state: the floating entries as one flat float32 vector (the very object every agent
  of the group holds after an exact all-reduce), the BatchNorm counters, and the
  optimizers' momentum; `Agent.model` borrows a live module and loads that state in,
  `park` writes it back and returns the module;
- `ModulePool`: the live modules of one model kind and device in this process (an
  actor trains one at a time), and the initial weights every agent starts from;
- `AgentGroup`: the agents one process hosts, run in turn (one agent per actor by
  default; several with `--agents-per-actor`): set-up, the split profile, evaluation,
  and, through its mixins, every step a round calls:
  `comdml_steps.ComdmlSteps` (plan, train phases), `wall_steps.WallSteps` (the
  overlapped wall-clock round, `--clock wall`), `averaging.Averaging` (the local
  half of the all-reduce, aux heads, gossip), `async_steps.AsyncSteps` (the
  event-driven baselines) and `checkpoint.Checkpointing` (save and restore).  `backend.Backend` is the one typed way in to these methods;
- `agent_shards`: every agent's training indices; `test_subset`: the test images an evaluation uses.
The group receives the dataset (uint8 arrays, mapped zero-copy from the object store
in an actor) and copies only its agents' shards.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from comdml_ray.config import RunConfig
from comdml_ray.learning.costmodel import SplitProfile, profile_flops, profile_measure
from comdml_ray.learning.data import DatasetArrays, partition, to_tensor
from comdml_ray.learning.models import SplitModel, build_model
from comdml_ray.learning.smashed import SmashedEncoder, SmashedSpec
from comdml_ray.learning.training import (
    SGD,
    LrSchedule,
    OptimConfig,
    TrainStats,
    batches_per_round,
    evaluate,
    flatten,
    make_sgd,
    minibatches,
    train_full,
)
from comdml_ray.method.async_steps import AsyncSteps
from comdml_ray.method.averaging import Averaging
from comdml_ray.method.checkpoint import Checkpointing
from comdml_ray.method.comdml_steps import ComdmlSteps
from comdml_ray.method.store import Store
from comdml_ray.method.wall_steps import WallSteps
from comdml_ray.timing.profiles import AgentProfile, make_profiles
from comdml_ray.timing.setting import Setting


@dataclass(frozen=True)
class AgentInfo:
    agent: int
    num_samples: int
    batches_per_round: int
    profile: AgentProfile


def _int_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's non-floating state entries (BatchNorm's batch counters), copied."""
    return {n: t.detach().clone() for n, t in model.state_dict().items() if not t.is_floating_point()}


def _entries(model: torch.nn.Module) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """The model's state tensors (the live ones, not copies): floating in state_dict order (`training.flatten`'s), and the others by name."""
    sd = model.state_dict(keep_vars=True)
    return [t for t in sd.values() if t.is_floating_point()], {n: t for n, t in sd.items() if not t.is_floating_point()}


class ModulePool:
    """The live modules of one model kind in this process: agents between rounds hold flat state and borrow one to train.

    Also the initial weights every agent starts from (the run's seed): built once, with
    the global RNG state that building it leaves (each agent's set-up used to seed and
    build its own model; restoring that state keeps every later draw the same).
    """

    _pools: ClassVar[dict[tuple, ModulePool]] = {}

    def __init__(self, model: str, data_meta: tuple[int, int, int], device: torch.device, seed: int):
        torch.manual_seed(seed)
        self.template: SplitModel = build_model(model, *data_meta).to(device)
        self.rng_after_build = torch.get_rng_state()
        self.initial_weights = flatten(self.template)
        self.initial_int_state = _int_state(self.template)
        self.free: list[SplitModel] = []
        self.created = 0
        self._entries: dict[int, tuple[list[torch.Tensor], dict[str, torch.Tensor]]] = {}  # id(module) -> its state tensors

    @classmethod
    def of(cls, model: str, data_meta: tuple[int, int, int], device: torch.device, seed: int) -> ModulePool:
        key = (model, tuple(data_meta), str(device), seed)
        if key not in cls._pools:
            cls._pools[key] = cls(model, data_meta, device, seed)
        return cls._pools[key]

    def take(self) -> SplitModel:
        if self.free:
            return self.free.pop()
        self.created += 1
        module = copy.deepcopy(self.template)  # no RNG drawn: the weights are overwritten anyway
        self._entries[id(module)] = _entries(module)
        return module

    def flat(self, module: SplitModel) -> np.ndarray:
        """`training.flatten(module)`, from the module's state tensors listed once (state_dict() is slow at 10,000 agents)."""
        floats = self._entries[id(module)][0]
        return torch.cat([t.detach().reshape(-1).to(torch.float32) for t in floats]).cpu().numpy()

    def load(self, module: SplitModel, vec: np.ndarray, int_state: dict[str, torch.Tensor]) -> None:
        """`training.unflatten_into(module, vec)` and the non-floating entries, into the listed tensors."""
        floats, ints = self._entries[id(module)]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # only read
            t = torch.from_numpy(np.ascontiguousarray(vec, dtype=np.float32)).to(floats[0].device)
        off = 0
        with torch.no_grad():
            for x in floats:
                n = x.numel()
                x.copy_(t[off : off + n].view_as(x))
                off += n
            for n, x in int_state.items():
                ints[n].copy_(x)
        if off != t.numel():
            raise ValueError(f"flat vector has {t.numel()} values, the model holds {off}")

    def int_state(self, module: SplitModel) -> dict[str, torch.Tensor]:
        return {n: t.detach().clone() for n, t in self._entries[id(module)][1].items()}

    def give(self, module: SplitModel) -> None:
        for p in module.parameters():
            p.grad = None
        self.free.append(module)


class Agent:
    """One agent: its data shard, model, aux heads and seeded randomness (seed + agent id)."""

    def __init__(
        self, agent_id: int, cfg: RunConfig, data: DatasetArrays, indices: np.ndarray, profile: AgentProfile, device: torch.device
    ):
        self.id = agent_id
        self.cfg = cfg
        self.profile = profile
        self.device = device
        self.data_meta = (data.channels, data.image_size, data.num_classes)
        # Every agent starts from the same weights (seeded by the run's seed), as decentralized SGD assumes:
        # built once per process (`ModulePool`), held by every agent as one flat vector until it trains.
        self.pool = ModulePool.of(cfg.model, self.data_meta, device, cfg.seed)
        self.weights, self.int_state = self.pool.initial_weights, self.pool.initial_int_state
        torch.set_rng_state(self.pool.rng_after_build)  # the global RNG as building this agent's model left it
        self._live: SplitModel | None = None
        self.x = to_tensor(data.train_x[indices], data.mean, data.std).to(device)  # (n, C, H, W)
        self.y = torch.from_numpy(data.train_y[indices].astype(np.int64)).to(device)  # (n,)
        self.gen = torch.Generator().manual_seed(cfg.seed + agent_id)
        self.aux: dict[int, torch.nn.Module] = {}
        self.opt = OptimConfig(float(cfg.optimizer_setting("lr")), cfg.momentum, cfg.weight_decay)
        self.schedule = LrSchedule(
            self.opt.lr, float(cfg.optimizer_setting("warmup_rounds")), str(cfg.optimizer_setting("lr_schedule")), cfg.lr_horizon_rounds()
        )
        # Local rounds (epochs of its shard) this agent has trained: the schedule's clock (= the round index in synchronous
        # runs; an asynchronous step of k of a round's B batches moves it by k / B).
        self.rounds_trained: float = 0
        # Local optimizer state persists across rounds (local momentum, as in local SGD);
        # averaging touches weights and BN statistics only.  Its parameters are the live module's (bound in `model`).
        self.full_optim = make_sgd(self.pool.template.parameters(), self.opt)
        self.prefix_optim: dict[int, SGD] = {}
        self.sec_estimate: float | None = None
        self.link_estimate: dict[int, float] = {}  # wall clock: sender -> observed bytes/s of that inbound link (EWMA)
        self.encoder = SmashedEncoder(SmashedSpec.from_config(cfg), seed=cfg.seed + agent_id)  # what leaves: --smashed-*

    # ------------------------------------------------------------------ compact state
    @property
    def model(self) -> SplitModel:
        """The agent's live module: taken from the pool and loaded from the flat state on first use (see `park`)."""
        if self._live is None:
            live = self.pool.take()
            self.pool.load(live, self.weights, self.int_state)
            self._live = live
            self._bind_optimizers()
        return self._live

    def _bind_optimizers(self) -> None:
        """Point the optimizers (momentum kept here) at the live module's parameters, in their creation order."""
        live = self._live
        self.full_optim.params[:] = list(live.parameters())
        for m, opt in self.prefix_optim.items():
            opt.params[:] = list(live.prefix(m).parameters()) + list(self.aux[m].parameters())

    def flat(self) -> np.ndarray:
        """The model's floating state as one flat float32 vector (the stored one when not live: do not write into it)."""
        return self.pool.flat(self._live) if self._live is not None else self.weights

    def park(self) -> None:
        """Back to flat state: weights (kept as the same object when unchanged, so a shared model stays shared),
        BatchNorm counters; the module goes back to the pool, its gradients dropped (every step clears them first)."""
        live = self._live
        if live is None:
            return
        w = self.pool.flat(live)
        if not (w.shape == self.weights.shape and np.array_equal(w.view(np.uint32), np.asarray(self.weights).view(np.uint32))):
            self.weights = w
        self.int_state = self.pool.int_state(live)
        self._live = None
        self.pool.give(live)

    def int_entries(self) -> dict[str, torch.Tensor]:
        """The non-floating model entries (BatchNorm's batch counters), copied."""
        return self.pool.int_state(self._live) if self._live is not None else {n: t.clone() for n, t in self.int_state.items()}

    def set_weights(self, vec: np.ndarray) -> None:
        """The model's floating state becomes `vec` (held, not copied: agents given one vector share it)."""
        if self._live is not None:
            self.int_state = self.pool.int_state(self._live)
            self.pool.give(self._live)
            self._live = None
        self.weights = vec

    @property
    def num_samples(self) -> int:
        return int(self.y.numel())

    def round_batches(self) -> list[torch.Tensor]:
        return minibatches(self.num_samples, self.cfg.batch_size, self.cfg.local_epochs, self.gen)

    def next_round(self) -> tuple[list[torch.Tensor], list[float]]:
        """This local round's index batches and their learning rates (the schedule's clock then moves on)."""
        batches = self.round_batches()
        lrs = self.schedule.for_batches(self.rounds_trained, len(batches))
        self.rounds_trained += 1
        return batches, lrs

    def aux_head(self, m: int) -> torch.nn.Module:
        if m not in self.aux:
            torch.manual_seed(self.cfg.seed + 1_000 * m)  # same initial aux head for a split on every agent
            self.aux[m] = self.pool.template.make_aux_head(m).to(self.device)
        return self.aux[m]

    def prefix_optimizer(self, m: int) -> SGD:
        """The offloader's optimizer for prefix(m) + aux(m), kept across the rounds it uses split m."""
        if m not in self.prefix_optim:
            params = list(self.model.prefix(m).parameters()) + list(self.aux_head(m).parameters())
            self.prefix_optim[m] = make_sgd(params, self.opt)  # rebound to each live module (`_bind_optimizers`)
        return self.prefix_optim[m]

    def train_alone(self, limit: int | None = None) -> TrainStats:
        """One local round on the agent's own model; `limit` (local-deadline): only its first `limit` batches."""
        batches, lrs = self.next_round()
        if limit is not None:
            batches, lrs = batches[:limit], lrs[:limit]
        return train_full(self.model, self.x, self.y, batches, self.full_optim, lrs)

    def train_step(self, step_batches: int) -> TrainStats:
        """An asynchronous local step: one round's work, or the next `step_batches` minibatches of a
        stream of seeded epochs (a step may cross an epoch's end; every sample is seen once per epoch).

        Either way the rates follow the schedule (warm-up, then constant or cosine) on the
        agent's own clock of epochs trained, as the synchronous methods' do.
        """
        per_round = batches_per_round(self.num_samples, self.cfg.batch_size, self.cfg.local_epochs)
        if step_batches == per_round:
            return self.train_alone()
        start = self.rounds_trained
        lrs = [self.schedule.at(start + (i + 1) / per_round) for i in range(step_batches)]
        self.rounds_trained = start + step_batches / per_round
        return train_full(self.model, self.x, self.y, self.next_batches(step_batches), self.full_optim, lrs)

    def next_batches(self, k: int) -> list[torch.Tensor]:
        """The next k index batches of the agent's stream of seeded shuffled epochs."""
        stream = self.__dict__.setdefault("_stream", [])
        while len(stream) < k:
            stream.extend(minibatches(self.num_samples, self.cfg.batch_size, 1, self.gen))
        batches, stream[:] = stream[:k], stream[k:]
        return batches

    def suffix_holder(self) -> SplitModel:
        """A module of the pool to hold a partner's suffix (give it back after): only the suffix's floating entries are
        written and read; building a fresh model for every offload was a sixth of a 10,000-agent helper phase."""
        return self.pool.take()

    def blank_model(self) -> SplitModel:
        """A model of the same architecture to hold a partner's suffix (weights overwritten)."""
        return build_model(self.cfg.model, *self.data_meta).to(self.device)


class AgentGroup(ComdmlSteps, WallSteps, Averaging, AsyncSteps, Checkpointing):
    """The agents hosted by one process (a Ray actor), run in turn."""

    def __init__(self, group_id: int, agent_ids: Sequence[int], cfg: RunConfig, data: DatasetArrays, store: Store, device: str = "cpu"):
        self.group_id = group_id
        self.cfg = cfg
        self.store = store
        self.device = torch.device(device)
        self.ids = list(agent_ids)
        self.data = data
        shards = agent_shards(cfg, data.train_y)
        profiles = make_profiles(cfg.heterogeneity, cfg.agents, cfg.seed, cfg.slow_link_share)
        self.agents = {k: Agent(k, cfg, data, shards[k], profiles[k], self.device) for k in self.ids}
        self.setting: Setting | None = None
        self.split_profile: SplitProfile | None = None
        self.plan = None
        self.aux_used: dict[int, int] = {}  # offloader -> split m it used this round (aux head to average)
        self._test: tuple[tuple, torch.Tensor, torch.Tensor] | None = None  # ((images, part), x, y) of the last evaluation

    def describe(self) -> list[AgentInfo]:
        return [
            AgentInfo(k, a.num_samples, batches_per_round(a.num_samples, self.cfg.batch_size, self.cfg.local_epochs), a.profile)
            for k, a in self.agents.items()
        ]

    def profile_splits(self) -> SplitProfile:
        """Profile the model's splits (called on one group; the result is shared with all).

        `--profile measure` times the model on this group's device, the one its agents
        train on (a GPU when Ray gave the actor one); flops and a saved table do not
        depend on where they are computed, so they stay on the CPU.
        """
        model = self.agents[self.ids[0]].blank_model().cpu()
        shape = (self.data.channels, self.data.image_size, self.data.image_size)
        if self.cfg.profile == "flops":
            return profile_flops(model, shape, self.cfg.batch_size, self.cfg.reference_gflops, self.cfg.smashed_dtype)
        if self.cfg.profile == "measure":
            return profile_measure(model, shape, self.cfg.batch_size, smashed_dtype=self.cfg.smashed_dtype, device=self.device)
        prof = SplitProfile.from_csv(self.cfg.profile)
        prof.check_matches(model, self.cfg.batch_size)
        return prof.with_smashed_dtype(model, shape, self.cfg.smashed_dtype)

    def set_setting(self, setting: Setting, prof: SplitProfile) -> None:
        self.setting, self.split_profile = setting, prof

    def evaluate(self, agent_ids: list[int], images: int | None = None, part: tuple[int, int] = (0, 1)) -> dict[int, float]:
        """Test accuracy of these agents' models on `images` test images (a fixed seeded subset), or on all (None).

        part (p, P): only every P-th of those images from the p-th, so P groups holding one model share the work.
        """
        test = self._test_set(images, part)
        out = {}
        for k in (k for k in agent_ids if k in self.agents):
            out[k] = evaluate(self.agents[k].model, *test)[0]
            self.agents[k].park()
        return out

    def _test_set(self, images: int | None, part: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The test images of an evaluation, as tensors: the whole test set, or the run's fixed subset (`test_subset`)."""
        if self._test is None or self._test[0] != (images, part):
            idx = test_subset(len(self.data.test_y), images, self.cfg.seed)[part[0] :: part[1]]
            self._test = (
                (images, part),
                to_tensor(self.data.test_x[idx], self.data.mean, self.data.std).to(self.device),
                torch.from_numpy(self.data.test_y[idx].astype(np.int64)).to(self.device),
            )
        return self._test[1], self._test[2]

    def flat_model(self, agent_id: int) -> np.ndarray:
        return self.agents[agent_id].flat().copy()


def test_subset(n_test: int, images: int | None, seed: int) -> np.ndarray:
    """Sorted indices of the evaluation's test images: all of them (None, or more than there are), else a seeded sample, the same every round."""
    if images is None or images >= n_test:
        return np.arange(n_test)
    return np.sort(np.random.default_rng([seed, 17]).permutation(n_test)[:images])


def agent_shards(cfg: RunConfig, labels: np.ndarray) -> list[np.ndarray]:
    """Every agent's training indices: the seeded partition of the (optionally subsampled) training set."""
    if cfg.train_samples is None:
        return partition(labels, cfg.agents, cfg.partition, cfg.alpha, cfg.seed)
    subset = np.sort(np.random.default_rng(cfg.seed).permutation(len(labels))[: cfg.train_samples])
    return [subset[s] for s in partition(labels[subset], cfg.agents, cfg.partition, cfg.alpha, cfg.seed)]
