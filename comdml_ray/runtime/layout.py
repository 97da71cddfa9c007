"""Which agents each actor hosts, and the refusal of a run the cluster cannot hold (pure: no Ray, no torch).

Owns `Layout` and `plan_layout(cfg, resources)`, given the cluster's resources as
`ray.cluster_resources()` reports them: `--agents-per-actor N`, or `auto`, which
packs agents only when the cluster's CPUs, GPUs or memory cannot hold one actor per
agent.  Owns the memory model behind that decision (`run_mb`), the run's whole footprint
as MemoryWatch measures it (tests/test_runtime.py checks one run against it):
- the run's own processes: the driver, the reducer and Ray's (GCS, raylet, dashboard and
  its agents), measured: RUN_BASE_MB;
- an actor process that imported torch (ACTOR_BASE_MB, measured) and trains one live
  module at a time (its activations: TRAINING_MB);
- the uint8 dataset: once per node in the object store, mapped zero-copy by every
  actor there (counted once: a cluster spreads it, so this errs on the safe side);
- per agent, its compact state (`method.agent`), computed from the model's size
  (MODEL_FLOATS) and the shard: its own weights while a round runs, their scaled copy
  in the averaging, its momentum (and, for ComDML, an offloader's prefix momentum),
  its float32 shard and labels, plus AGENT_FIXED_KB of generators and objects (measured);
- the gathered all-reduce's buffers, while the fleet's models fit in one allgather.
`check_nodes_fit(layout, nodes)` refuses a layout whose one actor (its CPUs and GPUs)
is bigger than every node of a fixed cluster: its placement would wait forever.
A refusal is a ConfigError whose one sentence names the fix.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import psutil

from comdml_ray.config import DATASET_TRAIN_SIZES, ConfigError, RunConfig

RUN_BASE_MB = 1500  # driver, reducer and Ray's own processes of a local run (measured, see run_mb)
ACTOR_BASE_MB = 320  # a Ray worker that imported torch (measured: ~310 MB private)
TRAINING_MB = {"cnn": 20, "resnet56": 250, "resnet110": 450}  # one live module training a batch of 32: activations, grads
DATASET_MB = {"fashion-mnist": 60, "cifar10": 190, "cifar100": 190, "cinic10": 560}  # uint8 arrays in the object store
SAMPLE_BYTES = {"fashion-mnist": 28 * 28 * 4, "cifar10": 3 * 32 * 32 * 4, "cifar100": 3 * 32 * 32 * 4, "cinic10": 3 * 32 * 32 * 4}
DATASET_CLASSES = {"fashion-mnist": (1, 10), "cifar10": (3, 10), "cifar100": (3, 100), "cinic10": (3, 10)}  # (channels, classes)
# Floats of each model's state (parameters and BatchNorm statistics) by (model, channels, classes); a test builds them.
MODEL_FLOATS = {
    ("cnn", 1, 10): 24_282,
    ("cnn", 3, 10): 24_570,
    ("cnn", 3, 100): 30_420,
    ("resnet56", 1, 10): 600_026,
    ("resnet56", 3, 10): 600_314,
    ("resnet56", 3, 100): 623_444,
    ("resnet110", 1, 10): 1_164_506,
    ("resnet110", 3, 10): 1_164_794,
    ("resnet110", 3, 100): 1_187_924,
}
AGENT_FIXED_KB = 48  # two torch Generators, optimizer and Python objects, index batches (measured at 10,000 agents)
GATHER_LIMIT_BYTES = 64 << 20  # actors.GATHER_LIMIT_BYTES: up to this, every actor gathers every agent's model
MEMORY_SHARE = 0.8  # of the cluster's Ray memory resource we allow the run to plan for


def model_floats(cfg: RunConfig) -> int:
    return MODEL_FLOATS[(cfg.model, *DATASET_CLASSES[cfg.dataset])]


def agent_mb(cfg: RunConfig) -> float:
    """One agent's share of the run's peak (MB): see the module docstring."""
    model = 4 * model_floats(cfg)
    copies = 3 + (cfg.algorithm == "comdml")  # own weights, scaled copy, momentum (+ an offloader's prefix momentum)
    samples = (cfg.train_samples or DATASET_TRAIN_SIZES[cfg.dataset]) / cfg.agents
    return (copies * model + samples * (SAMPLE_BYTES[cfg.dataset] + 8) + AGENT_FIXED_KB * 1024) / 2**20


def run_mb(cfg: RunConfig, actors: int) -> float:
    """The run's estimated peak memory (MB, PSS of the driver and its Ray processes) with this many actors."""
    fleet = cfg.agents * 4 * model_floats(cfg)
    gather = 3 * fleet / 2**20 if fleet <= GATHER_LIMIT_BYTES and actors > 1 else 0.0  # received parts, their concatenation, the sum
    per_actor = ACTOR_BASE_MB + TRAINING_MB[cfg.model] + gather
    return RUN_BASE_MB + DATASET_MB[cfg.dataset] + actors * per_actor + cfg.agents * agent_mb(cfg)


@dataclass(frozen=True)
class Layout:
    groups: list[list[int]]  # agent ids hosted by each actor
    cpus: float  # per actor
    gpus: float  # per actor
    reason: str  # why this packing


def plan_layout(cfg: RunConfig, resources: dict) -> Layout:
    """Decide agents per actor and refuse (ConfigError) what the cluster cannot hold."""
    n = cfg.agents
    cpus = float(resources.get("CPU", 0))
    gpus = float(resources.get("GPU", 0))
    mem_mb = float(resources.get("memory", psutil.virtual_memory().available)) / 2**20 * MEMORY_SHARE
    if cfg.gpus_per_agent > 0 and gpus < cfg.gpus_per_agent:
        raise ConfigError(
            f"--gpus-per-agent {cfg.gpus_per_agent} needs GPUs but the cluster has {gpus:g}; drop the flag or add GPU nodes (locally, --num-gpus declares logical GPUs)."
        )
    if cpus < cfg.cpus_per_agent:
        raise ConfigError(f"--cpus-per-agent {cfg.cpus_per_agent} is more than the cluster's {cpus:g} CPUs; lower it.")

    def need_mb(actors: int) -> float:
        return run_mb(cfg, actors)

    # true division with a tolerance: 2 // 0.2 is 9.0 in floats, yet Ray's fixed-point resources hold 10 x 0.2 CPUs on 2
    max_cpu = math.floor(cpus / cfg.cpus_per_agent + 1e-9)
    max_gpu = math.floor(gpus / cfg.gpus_per_agent + 1e-9) if cfg.gpus_per_agent > 0 else n
    if cfg.agents_per_actor == "auto":
        actors = min(n, max_cpu, max_gpu)
        while actors > 1 and need_mb(actors) > mem_mb:
            actors -= 1
        k = math.ceil(n / actors)
        reason = (
            "one agent per actor"
            if k == 1
            else f"{k} agents per actor: the cluster's {cpus:g} CPUs"
            + (f", {gpus:g} GPUs" if cfg.gpus_per_agent > 0 else "")
            + f" and {mem_mb / 1024:.1f} GB of usable memory hold {actors} actors at once"
        )
    else:
        k = int(cfg.agents_per_actor)
        actors = math.ceil(n / k)
        reason = f"{k} agents per actor (--agents-per-actor)"
        _check_fits(actors, max_cpu, cfg.cpus_per_agent, cpus, "CPUs", "--cpus-per-agent", n)
        _check_fits(actors, max_gpu, cfg.gpus_per_agent, gpus, "GPUs", "--gpus-per-agent", n)
    actors = math.ceil(n / k)
    if need_mb(actors) > mem_mb:
        fit = _most_agents(cfg, actors, mem_mb)
        raise ConfigError(
            f"{n} agents of {cfg.model} on {cfg.dataset} need about {need_mb(actors) / 1024:.1f} GB but the cluster has {mem_mb / 1024:.1f} GB usable; "
            f"at most {fit} agents fit: use fewer --agents, a smaller --model, or more nodes."
        )
    groups = [list(range(i, min(i + k, n))) for i in range(0, n, k)]
    return Layout(groups, cfg.cpus_per_agent, cfg.gpus_per_agent, reason)


def _most_agents(cfg: RunConfig, actors: int, mem_mb: float) -> int:
    """The most agents of cfg's model and data that fit in mem_mb with this many actors (bisection: shards shrink as agents grow)."""
    lo, hi = 0, cfg.agents
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if run_mb(dataclasses.replace(cfg, agents=mid), min(actors, mid)) <= mem_mb:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _check_fits(actors: int, most: int, per_actor: float, total: float, what: str, flag: str, n: int) -> None:
    if actors > most:
        raise ConfigError(
            f"{actors} actors x {per_actor:g} {what} need {actors * per_actor:g} {what} but the cluster has {total:g}; "
            f"use --agents-per-actor {math.ceil(n / max(most, 1))} or auto, or lower {flag}."
        )


def check_nodes_fit(layout: Layout, nodes: list[dict]) -> None:
    """ConfigError when no node's own resources (Ray's per-node totals) hold one actor of the layout."""
    if not nodes:
        return
    fits = [n for n in nodes if n.get("CPU", 0.0) >= layout.cpus - 1e-9 and n.get("GPU", 0.0) >= layout.gpus - 1e-9]
    if fits:
        return
    biggest_cpu = max(n.get("CPU", 0.0) for n in nodes)
    biggest_gpu = max(n.get("GPU", 0.0) for n in nodes)
    need = f"{layout.cpus:g} CPUs" + (f" and {layout.gpus:g} GPUs" if layout.gpus > 0 else "")
    have = f"{biggest_cpu:g} CPUs" + (f" and {biggest_gpu:g} GPUs" if layout.gpus > 0 else "")
    raise ConfigError(
        f"each agent actor needs {need} on one node, but the largest of the cluster's {len(nodes)} nodes has {have}; "
        f"lower --cpus-per-agent/--gpus-per-agent or add bigger nodes."
    )
