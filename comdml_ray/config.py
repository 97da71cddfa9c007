"""Run configuration: one validated dataclass for every knob of an experiment.

Owns `RunConfig` (what `benchmarks/run.py` parses its flags into), its validation
(`RunConfig.validate`, which raises `ConfigError` with one sentence naming the fix),
and the tables of allowed names.  No torch, no Ray: the driver imports this first.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import numpy as np

ALGORITHMS = ("local", "comdml", "local-deadline", "dpsgd", "adpsgd", "swift", "divshare")
SYNC_ALGORITHMS = ("local", "comdml", "local-deadline", "dpsgd")
# The synchronous methods whose agents all hold one model after an exact all-reduce.
ONE_MODEL_ALGORITHMS = ("local", "comdml", "local-deadline")
# Minibatches per local step of the asynchronous baselines, as close to each paper as one clock allows:
# AD-PSGD (Lian et al. 2018) and Swift (Bornstein et al. 2023) communicate after every minibatch;
# DivShare (Biswas et al. 2024) after a local round of a few steps.  0 = one round's work (--local-epochs).
ASYNC_STEP_BATCHES = {"adpsgd": 1, "swift": 1, "divshare": 4}
AGGREGATIONS = ("allreduce", "gossip")
TOPOLOGIES = ("ring", "torus", "regular", "complete")
PARTITIONS = ("iid", "dirichlet")
HETEROGENEITY_PRESETS = ("paper", "uniform", "lognormal")  # and the parameterised lognormal:SIGMA, two-class:SHARE (timing/profiles.py)
SCHEDULERS = ("greedy", "exact", "ilp")
PROFILE_SOURCES = ("flops", "measure")
PLACEMENTS = ("pack", "spread", "slots")  # slots: actor g on the node offering custom resource `comdml_slot_<g>` (runtime/run.py)
CLOCKS = ("virtual", "wall")
MODEL_NAMES = ("cnn", "resnet56", "resnet110")
SMASHED_DTYPES = ("float32", "float16", "int8")  # encodings of the activations an offloader sends (comdml_ray/learning/smashed.py)
LR_SCHEDULES = ("constant", "cosine")
# Optimizer defaults per model, used where --lr / --warmup-rounds / --lr-schedule are not given.
# The CNN keeps the project's original values; the ResNets' come from the sweeps in
# benchmarks/README.md ("ResNet defaults"): without warm-up and zero init, lr 0.2 diverged in the
# first steps; with them, at the acceptance run's budget (10 rounds of 31 batches) ResNet-56
# learned fastest at 0.3 of 0.05-0.3. ResNet-110 keeps 0.1 (not swept at that budget).
MODEL_DEFAULTS: dict[str, dict[str, float | str]] = {
    "cnn": {"lr": 0.2, "warmup_rounds": 0.0, "lr_schedule": "constant"},
    "resnet56": {"lr": 0.3, "warmup_rounds": 1.0, "lr_schedule": "cosine"},
    "resnet110": {"lr": 0.1, "warmup_rounds": 1.0, "lr_schedule": "cosine"},
}
DATASET_NAMES = ("fashion-mnist", "cifar10", "cifar100", "cinic10")
# Training-set sizes, so "more agents than samples" is refused before any actor starts.
DATASET_TRAIN_SIZES = {"fashion-mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000, "cinic10": 90_000}


class ConfigError(ValueError):
    """A user-caused configuration fault; its message is one sentence naming the fix."""


@dataclass
class RunConfig:
    """Every setting of one run.  Units are in the field names or comments."""

    # --- what to train
    algorithm: str = "local"
    agents: int = 100
    rounds: int = 20
    time_budget_s: float | None = None  # stop after the round whose virtual time reaches this (same-clock comparisons)
    dataset: str = "fashion-mnist"
    train_samples: int | None = None  # use a seeded subset of this many training samples (quick runs, tests)
    data_dir: str | None = None
    download: bool = False
    model: str = "cnn"
    partition: str = "iid"
    alpha: float = 0.5  # Dirichlet concentration, used when partition == "dirichlet"
    batch_size: int = 32
    lr: float | None = None  # None: the model's default (MODEL_DEFAULTS)
    warmup_rounds: float | None = None  # linear learning-rate warm-up over this many rounds' steps; None: the model's default
    lr_schedule: str | None = None  # "constant" or "cosine" (decay over --lr-horizon); None: the model's default
    lr_horizon: float | None = (
        None  # rounds (local epochs) the cosine decays over; None: --rounds (a comparison: the base --rounds, for every method)
    )
    momentum: float = 0.9
    weight_decay: float = 5e-4
    local_epochs: int = 1
    seed: int = 0
    # --- averaging
    aggregation: str = "allreduce"
    topology: str = "ring"
    degree: int = 4  # for topology == "regular"
    # --- heterogeneity and the virtual clock
    heterogeneity: str = "paper"  # preset name or path to a CSV file
    profile: str = "flops"  # "flops", "measure" or a path to a saved profile.csv
    reference_gflops: float = 10.0  # speed of an agent with slowdown 1 under profile == "flops"
    drift: float = 0.0  # log-normal sigma of a change of an agent's slowdown (0 = static)
    drift_prob: float = 0.2  # chance per round and agent that its speed changes (1: a random walk, a change every round)
    clock: str = "virtual"  # "virtual": rounds timed by the clock from the profile; "wall": by what the actors really took
    # The clock's link model measured on a real cluster (`benchmarks/realtime.py --bed` probes it; docs/method.md §3.3):
    # a link delivers link_efficiency x its profile bandwidth of payload, and every transfer pays transfer_latency_s more
    # than the profile's latencies.  The defaults (1, 0) are the profile's links as they are: the virtual results do not move.
    link_efficiency: float = 1.0
    transfer_latency_s: float = 0.0
    # and each synchronous step (ring hop) of the model averaging costs collective_step_s more (process wake-ups; 0 by default)
    collective_step_s: float = 0.0
    # wall clock only (emulation.py): True ("--emulate"): pad compute to the profile's speed and delay transfers by its links;
    # "compute": pad compute only, the links are the cluster's own (a test bed's shaped links); False: neither
    emulate: bool | str = False
    # --- local-deadline (straggler-aware local SGD, FedNova-style averaging)
    deadline_quantile: float = 0.5  # each round's deadline: this quantile of the agents' full-round compute times
    # --- ComDML
    scheduler: str = "greedy"
    helpers_can_serve: int = 1
    chunk_batches: int = 4  # batches of activations per object-store chunk
    smashed_dtype: str = "float32"  # encoding of the activations sent to the helper: float32, float16 or int8
    smashed_noise: float = 0.0  # SIGMA: Gaussian noise std as a multiple of each channel's activation std (0 = off)
    smashed_clip: float | None = None  # bound on each sample's activation L2 norm before the noise (None = off)
    # --- asynchronous baselines
    fragments: int = 4  # DivShare Omega
    fanout: int = 2  # DivShare J
    step_batches: int | None = None  # async baselines: minibatches per local step (None: each method's default, ASYNC_STEP_BATCHES)
    slow_link_share: float = 0.0  # share of agents whose links are 5x slower (DivShare setting)
    # --- evaluation and output
    eval_every: int = 1
    eval_samples: int = (
        1000  # test images (a fixed seeded subset) of the evaluations before the last; the last uses all (0: all every time)
    )
    eval_agents: int = 16  # a seeded sample of this many agents (all when fewer) whose models are scored, the same for every method
    target_acc: float | None = None  # in [0, 1]
    out: str | None = None
    progress: bool = True
    # --- checkpoints and faults
    checkpoint_every: int | None = None  # rounds between checkpoints; None: `checkpoint_interval`'s default; 0: none
    resume: str | None = None  # output folder (or URI) of a stopped run to continue from its last checkpoint
    kill_actor: str | None = None  # fault injection: "ROUND:ACTOR[,ROUND:ACTOR...]", each actor kills itself once
    node_timeout_s: float = 600.0  # a lost node whose actors the other nodes have no room for: wait this long for a node to join
    # --- Ray placement
    address: str | None = None  # None: RAY_ADDRESS if set (ray job submit), else a new local Ray; "auto": attach to a running cluster
    cpus_per_agent: float = 1.0
    gpus_per_agent: float = 0.0
    agents_per_actor: str | int = "auto"
    placement: str = "pack"
    num_cpus: int | None = None  # CPUs of the local Ray started when address is None (default: all)
    num_gpus: float | None = None  # logical GPUs of the local Ray (lets CI exercise GPU scheduling)
    scale_timeout_s: float = 1200.0  # on an autoscaling cluster: wait at most this long for the nodes the run asks for

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_saved(cls, saved: dict) -> RunConfig:
        """The configuration a run saved (summary.json, a checkpoint): a field the save predates keeps its default, one this code no longer has is left out."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})

    @property
    def one_model(self) -> bool:
        """Every agent ends a round with the same model: local/comdml under exact all-reduce."""
        return self.algorithm in ONE_MODEL_ALGORITHMS and self.aggregation == "allreduce"

    def is_last(self, row: int, virtual_s: float) -> bool:
        """The run's last round (or row): --rounds done, or --time-budget virtual seconds spent (same-clock comparisons)."""
        return row == self.rounds - 1 or (self.time_budget_s is not None and virtual_s >= self.time_budget_s)

    def evaluates(self, row: int, virtual_s: float) -> bool:
        """Is the model evaluated after this round: every --eval-every rounds, and after the last."""
        return (row + 1) % self.eval_every == 0 or self.is_last(row, virtual_s)

    def checkpoint_interval(self) -> int:
        """Rounds between checkpoints: --checkpoint-every, else every round up to 100 agents and every 5 beyond
        (at 100 agents a checkpoint costs ~1% of a round, benchmarks/README.md)."""
        if self.checkpoint_every is not None:
            return self.checkpoint_every
        return 1 if self.agents <= 100 else 5

    def kills(self) -> list[tuple[int, int]]:
        """--kill-actor as (round, actor) pairs, in the order given."""
        if not self.kill_actor:
            return []
        return [tuple(int(x) for x in item.split(":")) for item in self.kill_actor.split(",")]

    def eval_agent_ids(self) -> list[int]:
        """The agents whose models are scored: all of them, or a sample of --eval-agents seeded by --seed alone.

        The same ids for every method (the one yardstick); under exact all-reduce their
        models are identical, so `scored_agent_ids` evaluates one of them.
        """
        n = self.agents
        if self.eval_agents >= n:
            return list(range(n))
        return sorted(np.random.default_rng([self.seed, 14]).choice(n, self.eval_agents, replace=False).tolist())

    def scored_agent_ids(self) -> list[int]:
        """The models actually evaluated: one of `eval_agent_ids` when all agents hold one model, else all of them."""
        ids = self.eval_agent_ids()
        return ids[:1] if self.one_model else ids

    def async_step_batches(self, batches_per_round: int) -> int:
        """Minibatches of one asynchronous local step: --step-batches, else the method's default (0 = one round's work)."""
        k = self.step_batches if self.step_batches is not None else ASYNC_STEP_BATCHES.get(self.algorithm, 0)
        return batches_per_round if k == 0 else k

    def optimizer_setting(self, name: str) -> float | str:
        """--lr, --warmup-rounds or --lr-schedule in force: the flag if given, else the model's default."""
        value = getattr(self, name)
        return MODEL_DEFAULTS.get(self.model, MODEL_DEFAULTS["cnn"])[name] if value is None else value

    def lr_horizon_rounds(self) -> float:
        """Rounds (local epochs) the cosine schedule decays over: --lr-horizon, else --rounds."""
        return float(self.rounds if self.lr_horizon is None else self.lr_horizon)

    def optimizer_line(self) -> str:
        """The optimizer settings in force and where they come from (the run's first lines)."""
        parts = []
        for name, flag in (("lr", "lr"), ("warmup_rounds", "warm-up rounds"), ("lr_schedule", "schedule")):
            source = "flag" if getattr(self, name) is not None else f"{self.model} default"
            parts.append(f"{flag} {self.optimizer_setting(name)} ({source})")
        return f"optimizer: SGD momentum {self.momentum}, weight decay {self.weight_decay}, batch {self.batch_size}, " + ", ".join(parts)

    def eval_images(self, last: bool) -> int | None:
        """Test images of this evaluation: None (the whole test set) at the last one or with --eval-samples 0."""
        return None if last or self.eval_samples == 0 else self.eval_samples

    def _validate_faults(self, need) -> None:
        if self.checkpoint_every is not None:
            need(
                self.checkpoint_every >= 0,
                f"--checkpoint-every must be >= 0 rounds (0 turns checkpoints off), got {self.checkpoint_every}.",
            )
        if self.kill_actor:
            try:
                kills = self.kills()
            except ValueError:
                kills = [()]
            need(
                all(len(k) == 2 and k[0] >= 0 and k[1] >= 0 for k in kills),
                f"--kill-actor takes ROUND:ACTOR pairs separated by commas (e.g. 2:1 or 5:3,12:7), got '{self.kill_actor}'.",
            )

    def validate(self) -> RunConfig:
        """Raise ConfigError (one sentence, naming the fix) on the first bad setting."""
        self._check_what_to_train()
        self._check_averaging_and_clock()
        self._check_comdml_and_baselines()
        self._check_evaluation_and_placement()
        return self

    def _check_what_to_train(self) -> None:
        _one_of(self.algorithm, ALGORITHMS, "--algorithm")
        _need(self.agents > 0, f"--agents must be a positive number of agents, got {self.agents}.")
        _need(self.rounds > 0, f"--rounds must be at least 1, got {self.rounds}.")
        if self.time_budget_s is not None:
            _need(self.time_budget_s > 0, f"--time-budget must be a positive number of virtual seconds, got {self.time_budget_s}.")
        _one_of(self.dataset, DATASET_NAMES, "--dataset")
        _one_of(self.model, MODEL_NAMES, "--model")
        _one_of(self.partition, PARTITIONS, "--partition")
        _need(self.alpha > 0, f"--alpha (Dirichlet concentration) must be > 0, got {self.alpha}; use e.g. 0.5.")
        _need(self.batch_size > 0, f"--batch-size must be positive, got {self.batch_size}.")
        if self.lr is not None:
            _need(self.lr > 0, f"--lr must be positive, got {self.lr}.")
        if self.warmup_rounds is not None:
            _need(self.warmup_rounds >= 0, f"--warmup-rounds must be >= 0 (0 turns warm-up off), got {self.warmup_rounds}.")
        if self.lr_schedule is not None:
            _one_of(self.lr_schedule, LR_SCHEDULES, "--lr-schedule")
        if self.lr_horizon is not None:
            _need(self.lr_horizon > 0, f"--lr-horizon must be a positive number of rounds, got {self.lr_horizon}.")
        _need(self.local_epochs > 0, f"--local-epochs must be at least 1, got {self.local_epochs}.")
        n_train = DATASET_TRAIN_SIZES[self.dataset]
        if self.train_samples is not None:
            _need(
                0 < self.train_samples <= n_train,
                f"--train-samples must be between 1 and {n_train} for {self.dataset}, got {self.train_samples}.",
            )
            n_train = self.train_samples
        _need(
            self.agents <= n_train,
            f"--agents {self.agents} is more than the {n_train} training samples of {self.dataset}; use at most {n_train} agents.",
        )

    def _check_averaging_and_clock(self) -> None:
        _one_of(self.aggregation, AGGREGATIONS, "--aggregation")
        _one_of(self.topology, TOPOLOGIES, "--topology")
        if self.topology == "regular":
            _need(
                0 < self.degree < self.agents and (self.agents * self.degree) % 2 == 0,
                f"--degree {self.degree} cannot make a regular graph on {self.agents} agents: pick 0 < degree < agents with agents*degree even.",
            )
        if self.heterogeneity.startswith(("lognormal:", "two-class:")):
            name, _, value = self.heterogeneity.partition(":")
            try:
                v = float(value)
            except ValueError:
                v = math.nan
            ok = v > 0 if name == "lognormal" else 0 <= v <= 1
            _need(
                ok,
                f"--heterogeneity {self.heterogeneity}: give lognormal:SIGMA with SIGMA > 0 (e.g. lognormal:0.5), "
                "or two-class:SHARE with SHARE in [0, 1] (e.g. two-class:0.25).",
            )
        elif self.heterogeneity not in HETEROGENEITY_PRESETS:
            _need(
                os.path.isfile(self.heterogeneity),
                f"--heterogeneity '{self.heterogeneity}' is neither a preset ({', '.join(HETEROGENEITY_PRESETS)}) nor an existing CSV file.",
            )
        _need(
            0 < self.link_efficiency <= 1 and self.transfer_latency_s >= 0 and self.collective_step_s >= 0,
            f"--link-efficiency {self.link_efficiency}, --transfer-latency-ms {self.transfer_latency_s * 1e3:g} and --collective-step-ms "
            f"{self.collective_step_s * 1e3:g}: give an efficiency in (0, 1] and latencies >= 0.",
        )
        if self.profile not in PROFILE_SOURCES:
            _need(
                os.path.isfile(self.profile),
                f"--profile '{self.profile}' is neither 'flops', 'measure' nor an existing profile.csv from an earlier run.",
            )
        _need(self.reference_gflops > 0, f"--reference-gflops must be positive, got {self.reference_gflops}.")
        _need(self.drift >= 0, f"--drift must be >= 0 (0 turns it off), got {self.drift}.")
        _need(
            0 < self.drift_prob <= 1, f"--drift-prob must be in (0, 1] (1: every agent's speed changes every round), got {self.drift_prob}."
        )
        self._check_wall_clock()

    @property
    def emulate_compute(self) -> bool:
        """--emulate or --emulate compute: every agent's compute padded to its profile's speed."""
        return bool(self.emulate)

    @property
    def emulate_links(self) -> bool:
        """--emulate alone: transfers also delayed by the profile's links (else the links are the cluster's own)."""
        return self.emulate is True or self.emulate == "all"

    def _check_wall_clock(self) -> None:
        _one_of(self.clock, CLOCKS, "--clock")
        _need(
            self.emulate in (False, True, "all", "compute"),
            f"--emulate takes 'compute' (pace compute only, the links are the cluster's) or nothing (compute and links), got '{self.emulate}'.",
        )
        _need(
            not self.emulate or self.clock == "wall",
            "--emulate needs --clock wall (it shapes real time; the virtual clock already follows the profile).",
        )
        if self.clock == "wall":
            _need(
                self.algorithm in ("local", "comdml"),
                f"--clock wall runs local and comdml only, got --algorithm {self.algorithm}; use the virtual clock for it.",
            )
            _need(
                str(self.agents_per_actor) == "1",
                "--clock wall times each agent on its own actor: add --agents-per-actor 1 (and --num-cpus N or a smaller --cpus-per-agent if the cluster is small).",
            )
            _need(self.time_budget_s is None, "--time-budget counts virtual seconds: leave it out with --clock wall.")

    def _check_comdml_and_baselines(self) -> None:
        _one_of(self.scheduler, SCHEDULERS, "--scheduler")
        _need(self.helpers_can_serve >= 1, f"--helpers-can-serve must be at least 1, got {self.helpers_can_serve}.")
        _need(self.chunk_batches >= 1, f"--chunk-batches must be at least 1, got {self.chunk_batches}.")
        _one_of(self.smashed_dtype, SMASHED_DTYPES, "--smashed-dtype")
        _need(
            math.isfinite(self.smashed_noise) and self.smashed_noise >= 0,
            f"--smashed-noise is a multiple of each channel's activation std and must be >= 0 (0 turns it off), got {self.smashed_noise}.",
        )
        if self.smashed_clip is not None:
            _need(
                math.isfinite(self.smashed_clip) and self.smashed_clip > 0,
                f"--smashed-clip must be a positive L2 norm per sample (leave it out to turn clipping off), got {self.smashed_clip}.",
            )
        _need(self.fragments >= 1, f"--fragments must be at least 1, got {self.fragments}.")
        _need(self.fanout >= 1, f"--fanout must be at least 1, got {self.fanout}.")
        if self.step_batches is not None:
            _need(
                self.step_batches >= 0,
                f"--step-batches must be a number of minibatches >= 1 (0: one round's work), got {self.step_batches}.",
            )
        _need(0 <= self.slow_link_share <= 1, f"--slow-link-share must be in [0, 1], got {self.slow_link_share}.")
        _need(
            0 < self.deadline_quantile <= 1,
            f"--deadline-quantile must be in (0, 1] (1: the slowest agent's round, i.e. plain local SGD), got {self.deadline_quantile}.",
        )
        if self.algorithm == "local-deadline":
            _need(
                self.aggregation == "allreduce",
                "local-deadline averages with the exact all-reduce (FedNova's normalised average): drop --aggregation gossip.",
            )

    def _check_evaluation_and_placement(self) -> None:
        _need(self.eval_every >= 1, f"--eval-every must be at least 1, got {self.eval_every}.")
        _need(
            self.eval_samples >= 0, f"--eval-samples must be >= 0 test images (0: the whole test set every time), got {self.eval_samples}."
        )
        _need(self.eval_agents >= 1, f"--eval-agents must be at least 1, got {self.eval_agents}.")
        if self.target_acc is not None:
            _need(0 < self.target_acc <= 1, f"--target-acc is a fraction in (0, 1], got {self.target_acc}; e.g. 0.8 for 80%.")
        _need(self.cpus_per_agent > 0, f"--cpus-per-agent must be positive, got {self.cpus_per_agent}.")
        _need(
            0 <= self.gpus_per_agent <= 1, f"--gpus-per-agent must be between 0 and 1 (a fraction of one GPU), got {self.gpus_per_agent}."
        )
        if self.agents_per_actor != "auto":
            try:
                k = int(self.agents_per_actor)
            except (TypeError, ValueError):
                raise ConfigError(f"--agents-per-actor must be 'auto' or a positive integer, got '{self.agents_per_actor}'.") from None
            _need(k >= 1, f"--agents-per-actor must be 'auto' or a positive integer, got {k}.")
            self.agents_per_actor = k
        self._validate_faults(_need)
        _one_of(self.placement, PLACEMENTS, "--placement")
        if self.num_cpus is not None:
            _need(self.num_cpus >= 1, f"--num-cpus must be at least 1, got {self.num_cpus}.")
        if self.num_gpus is not None:
            _need(self.num_gpus >= 0, f"--num-gpus must be >= 0, got {self.num_gpus}.")
        _need(
            self.node_timeout_s >= 0,
            f"--node-timeout must be >= 0 seconds (0: stop as soon as a lost node's actors are seen to have no room, about 5 s), got {self.node_timeout_s}.",
        )
        _need(
            self.scale_timeout_s >= 0, f"--scale-timeout must be >= 0 seconds (0: do not wait for new nodes), got {self.scale_timeout_s}."
        )


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _one_of(value: str, allowed: tuple[str, ...], flag: str) -> None:
    _need(value in allowed, f"unknown {flag} '{value}': choose one of {', '.join(allowed)}.")
