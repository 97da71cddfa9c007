"""The agents' logic as plain classes, testable without Ray (the actor in `actors.py` only hosts it).

Owns
- `Agent`: one agent's shard, model, auxiliary heads, seeded generator, profile and
  speed estimate, and its own local training;
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

from collections.abc import Sequence
from dataclasses import dataclass

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
        # Every agent starts from the same weights (seeded by the run's seed), as decentralized SGD assumes.
        torch.manual_seed(cfg.seed)
        self.model: SplitModel = build_model(cfg.model, *self.data_meta).to(device)
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
        # averaging touches weights and BN statistics only.
        self.full_optim = make_sgd(self.model.parameters(), self.opt)
        self.prefix_optim: dict[int, SGD] = {}
        self.sec_estimate: float | None = None
        self.link_estimate: dict[int, float] = {}  # wall clock: sender -> observed bytes/s of that inbound link (EWMA)
        self.encoder = SmashedEncoder(SmashedSpec.from_config(cfg), seed=cfg.seed + agent_id)  # what leaves: --smashed-*

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
            self.aux[m] = self.model.make_aux_head(m).to(self.device)
        return self.aux[m]

    def prefix_optimizer(self, m: int) -> SGD:
        """The offloader's optimizer for prefix(m) + aux(m), kept across the rounds it uses split m."""
        if m not in self.prefix_optim:
            params = list(self.model.prefix(m).parameters()) + list(self.aux_head(m).parameters())
            self.prefix_optim[m] = make_sgd(params, self.opt)
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
        return {k: evaluate(self.agents[k].model, *test)[0] for k in agent_ids if k in self.agents}

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
        return flatten(self.agents[agent_id].model)


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
