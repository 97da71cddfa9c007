"""`comdml-ray run`: one experiment from the command line; its flags are `RunConfig`'s.

    comdml-ray run --agents 100                       # defaults: local SGD, Fashion-MNIST, small CNN
    comdml-ray run --agents 20 --algorithm comdml     # slow agents offload to fast ones
    comdml-ray run --agents 8 --rounds 2 --out results/quick
    ray job submit --working-dir . -- python -m comdml_ray.cli run --agents 100 --address auto --gpus-per-agent 0.25

Owns the run's flags (`build_parser`, `config_from_args`: one flag per field of
`comdml_ray.config.RunConfig`), `exit_code_of` (a user's mistake -- a bad flag, a missing
dataset, a cluster too small, a lost node no other node has room for -- is one sentence on
stderr and exit code 2; a dead actor exit 1) and `main`, which runs `experiment.run_experiment`.  `comdml-ray compare` and the
scripts in benchmarks/ build their parsers on `build_parser`; `benchmarks/run.py` is
`main` under the prog name benchmarks/run.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from comdml_ray.config import (
    AGGREGATIONS,
    ALGORITHMS,
    ASYNC_STEP_BATCHES,
    DATASET_NAMES,
    LR_SCHEDULES,
    MODEL_DEFAULTS,
    MODEL_NAMES,
    PARTITIONS,
    PLACEMENTS,
    SCHEDULERS,
    SMASHED_DTYPES,
    TOPOLOGIES,
    ConfigError,
    RunConfig,
)

PROG = "comdml-ray run"


class OneSentenceParser(argparse.ArgumentParser):
    """A mistake in a flag is one sentence on stderr and exit code 2 (argparse prints the whole usage first: 35 lines for a run)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; `{self.prog} --help` lists the flags.\n")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The flags of a run, one per `RunConfig` field (`--no-progress` sets progress=False)."""
    d = RunConfig()
    p = OneSentenceParser(
        prog=prog,
        description="Decentralized multi-agent training on Ray (ComDML and baselines). "
        "Virtual time is the simulated training time under the heterogeneity profile; wall time is real.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for add in (_what_to_train, _averaging, _heterogeneity, _comdml, _baselines, _evaluation, _faults, _placement):
        add(p, d)
    return p


def _per_model(name: str) -> str:
    return ", ".join(f"{m} {v[name]}" for m, v in MODEL_DEFAULTS.items())


def _what_to_train(p: argparse.ArgumentParser, d: RunConfig) -> None:
    g = p.add_argument_group("what to train")
    g.add_argument("--algorithm", default=d.algorithm, help=f"training method: {', '.join(ALGORITHMS)}")
    g.add_argument("--agents", type=int, default=d.agents, help="number of agents (each a data shard and a model)")
    g.add_argument("--rounds", type=int, default=d.rounds, help="synchronous rounds (each: local epochs, then averaging)")
    g.add_argument("--dataset", default=d.dataset, help=f"dataset: {', '.join(DATASET_NAMES)} (fashion-mnist ships with the repo)")
    g.add_argument(
        "--time-budget",
        dest="time_budget_s",
        type=float,
        default=d.time_budget_s,
        help="stop once the virtual time reaches this many seconds (at most --rounds rounds)",
    )
    g.add_argument(
        "--train-samples",
        type=int,
        default=d.train_samples,
        help="train on a seeded subset of this many samples (default: the whole training set)",
    )
    g.add_argument(
        "--data-dir", default=d.data_dir, help="folder holding CIFAR/CINIC files (CIFAR: cifar-10-batches-py; CINIC: cinic10/{train,test})"
    )
    g.add_argument("--download", action="store_true", help="download CIFAR-10/100 into --data-dir if missing")
    g.add_argument("--model", default=d.model, help=f"model: {', '.join(MODEL_NAMES)}")
    g.add_argument("--partition", default=d.partition, help=f"data split over agents: {', '.join(PARTITIONS)}")
    g.add_argument(
        "--alpha", type=float, default=d.alpha, help="Dirichlet concentration for --partition dirichlet (smaller = more label skew)"
    )
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="samples per batch")
    g.add_argument("--lr", type=float, default=argparse.SUPPRESS, help=f"SGD learning rate (default: per model, {_per_model('lr')})")
    g.add_argument(
        "--warmup-rounds",
        type=float,
        default=argparse.SUPPRESS,
        help=f"linear learning-rate warm-up over this many rounds' steps, 0 = none (default: per model, {_per_model('warmup_rounds')})",
    )
    g.add_argument(
        "--lr-schedule",
        default=argparse.SUPPRESS,
        help=f"{', '.join(LR_SCHEDULES)}: learning rate after the warm-up, cosine decays to 0 at --lr-horizon (default: per model, {_per_model('lr_schedule')})",
    )
    g.add_argument(
        "--lr-horizon",
        type=float,
        default=d.lr_horizon,
        help="rounds (local epochs) the cosine schedule decays over (default: --rounds; in a comparison, the base --rounds for every method)",
    )
    g.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="SGD weight decay (L2)")
    g.add_argument("--local-epochs", type=int, default=d.local_epochs, help="passes over the local shard per round")
    g.add_argument("--seed", type=int, default=d.seed, help="run seed; agent k uses seed + k")


def _averaging(p: argparse.ArgumentParser, d: RunConfig) -> None:
    g = p.add_argument_group("averaging")
    g.add_argument(
        "--aggregation",
        default=d.aggregation,
        help=f"{', '.join(AGGREGATIONS)}: exact ring all-reduce, or one Metropolis-Hastings gossip step",
    )
    g.add_argument("--topology", default=d.topology, help=f"gossip topology: {', '.join(TOPOLOGIES)}")
    g.add_argument("--degree", type=int, default=d.degree, help="neighbours per agent for --topology regular")


def milliseconds(text: str) -> float:
    """A flag given in milliseconds, as the seconds RunConfig keeps (argparse names the function in its error: "invalid milliseconds value")."""
    return float(text) / 1e3


def _heterogeneity(p: argparse.ArgumentParser, d: RunConfig) -> None:
    g = p.add_argument_group("heterogeneity and the virtual clock")
    g.add_argument(
        "--heterogeneity",
        default=d.heterogeneity,
        help="preset paper|uniform|lognormal[:SIGMA]|two-class:SHARE (that share of agents in the paper's slowest class, the rest in its fastest), "
        "or a CSV with agent,slowdown,bandwidth_mbps[,latency_ms]",
    )
    g.add_argument(
        "--profile",
        default=d.profile,
        help="split cost profile: flops (counted, host-independent), measure (timed on this host), or a saved profile.csv",
    )
    g.add_argument(
        "--profile-file",
        dest="profile",
        default=argparse.SUPPRESS,
        help="same as --profile PATH: reuse a profile.csv from an earlier run's output folder",
    )
    g.add_argument(
        "--reference-gflops", type=float, default=d.reference_gflops, help="GFLOP/s of an agent with slowdown 1 under --profile flops"
    )
    g.add_argument("--drift", type=float, default=d.drift, help="log-normal sigma of a change of an agent's speed (0 = static speeds)")
    g.add_argument(
        "--drift-prob",
        type=float,
        default=d.drift_prob,
        help="chance per round that an agent's speed changes (it keeps the new speed until the next change; 1 = a random walk)",
    )
    g.add_argument(
        "--clock",
        default=d.clock,
        help="virtual: rounds timed by the clock from the profile; wall: by what the actors really took (needs --agents-per-actor 1)",
    )
    g.add_argument(
        "--emulate",
        nargs="?",
        const=True,
        default=False,
        metavar="compute",
        help="with --clock wall: pad each agent's compute (sleep) to its profile's speed and delay transfers by its links;"
        " '--emulate compute' pads compute only and leaves the links to the cluster (a test bed's shaped links)",
    )
    g.add_argument(
        "--link-efficiency",
        type=float,
        default=d.link_efficiency,
        help="the clock's links deliver this share of their profile bandwidth as payload (measured on a real cluster: benchmarks/realtime.py --bed; default 1)",
    )
    g.add_argument(
        "--transfer-latency-ms",
        dest="transfer_latency_s",
        type=milliseconds,
        default=d.transfer_latency_s,
        help="milliseconds every transfer pays beyond the profile's link latencies (Ray's calls and fetch on a real cluster; default 0)",
    )
    g.add_argument(
        "--collective-step-ms",
        dest="collective_step_s",
        type=milliseconds,
        default=d.collective_step_s,
        help="milliseconds every step (ring hop) of the model averaging costs beyond its bytes on a real cluster (process wake-ups; default 0)",
    )


def _comdml(p: argparse.ArgumentParser, d: RunConfig) -> None:
    g = p.add_argument_group("ComDML")
    g.add_argument("--scheduler", default=d.scheduler, help=f"pairing: {', '.join(SCHEDULERS)} (greedy = the paper's)")
    g.add_argument(
        "--helpers-can-serve",
        type=int,
        default=d.helpers_can_serve,
        help="offloaders one helper may serve (ilp only; 1 = the paper's one-to-one)",
    )
    g.add_argument("--chunk-batches", type=int, default=d.chunk_batches, help="batches of activations per object-store chunk")
    g.add_argument(
        "--smashed-dtype",
        default=d.smashed_dtype,
        help=f"encoding of the activations an offloader sends: {', '.join(SMASHED_DTYPES)} (int8: per-channel scale and zero point); labels stay exact",
    )
    g.add_argument(
        "--smashed-noise",
        type=float,
        default=d.smashed_noise,
        help="SIGMA: Gaussian noise added to the activations before they leave, std = SIGMA x each channel's std (0 = off)",
    )
    g.add_argument(
        "--smashed-clip",
        type=float,
        default=d.smashed_clip,
        help="bound each sample's activation L2 norm to this before the noise (default: no clipping)",
    )


def _baselines(p: argparse.ArgumentParser, d: RunConfig) -> None:
    g = p.add_argument_group("asynchronous baselines")
    g.add_argument("--fragments", type=int, default=d.fragments, help="DivShare: fragments Omega per model")
    g.add_argument("--fanout", type=int, default=d.fanout, help="DivShare: agents J each fragment is sent to")
    g.add_argument(
        "--deadline-quantile",
        type=float,
        default=d.deadline_quantile,
        help="local-deadline: each round's deadline is this quantile of the agents' full-round compute times; slower agents train the batches that fit",
    )
    g.add_argument(
        "--step-batches",
        type=int,
        default=d.step_batches,
        help="AD-PSGD, Swift, DivShare: minibatches per local step before communicating (0: one round's work; "
        f"default per method: {', '.join(f'{k} {v}' for k, v in ASYNC_STEP_BATCHES.items())})",
    )
    g.add_argument(
        "--slow-link-share", type=float, default=d.slow_link_share, help="share of agents whose links are 5x slower (DivShare's setting)"
    )


def _evaluation(p: argparse.ArgumentParser, d: RunConfig) -> None:
    g = p.add_argument_group("evaluation and output")
    g.add_argument(
        "--eval-every", type=int, default=d.eval_every, help="evaluate the averaged model every this many rounds (and after the last)"
    )
    g.add_argument(
        "--eval-samples",
        type=int,
        default=d.eval_samples,
        help="test images of every evaluation but the last: a fixed seeded subset (the last uses the whole test set; 0 = whole set every time)",
    )
    g.add_argument(
        "--eval-agents",
        type=int,
        default=d.eval_agents,
        help="a seeded sample of this many agents (all when fewer) whose own models are scored, mean reported: the same for every method",
    )
    g.add_argument("--target-acc", type=float, default=d.target_acc, help="accuracy fraction (e.g. 0.8) for time_to_target_s")
    g.add_argument("--out", default=d.out, help="output folder (default results/<timestamp>)")
    g.add_argument("--no-progress", action="store_true", help="print one line per round instead of a progress bar")


def _faults(p: argparse.ArgumentParser, d: RunConfig) -> None:
    _fault_flags(p.add_argument_group("checkpoints and faults"), d)


def _placement(p: argparse.ArgumentParser, d: RunConfig) -> None:
    g = p.add_argument_group("Ray placement")
    g.add_argument(
        "--address",
        default=d.address,
        help="Ray cluster to join ('auto' inside a cluster); default: the cluster running a `ray job submit` job (RAY_ADDRESS), else a new local one",
    )
    g.add_argument("--cpus-per-agent", type=float, default=d.cpus_per_agent, help="CPUs reserved per agent actor")
    g.add_argument("--gpus-per-agent", type=float, default=d.gpus_per_agent, help="fraction of a GPU per agent actor (0.25 = four per GPU)")
    g.add_argument(
        "--agents-per-actor", default=d.agents_per_actor, help="agents one actor hosts, or auto (one each when the cluster has room)"
    )
    g.add_argument(
        "--placement",
        default=d.placement,
        help=f"{', '.join(PLACEMENTS)}: actors packed on few nodes, spread over many, or actor g on the node offering the custom resource comdml_slot_<g> (a test bed shaped per agent)",
    )
    g.add_argument("--num-cpus", type=int, default=d.num_cpus, help="CPUs of the local Ray (default: all of this machine)")
    g.add_argument(
        "--num-gpus", type=float, default=d.num_gpus, help="GPUs of the local Ray (logical GPUs let a CPU machine test GPU placement)"
    )
    g.add_argument(
        "--scale-timeout",
        dest="scale_timeout_s",
        type=float,
        default=d.scale_timeout_s,
        help="on an autoscaling cluster, seconds to wait for the nodes the run asks for (then it goes on with what joined)",
    )


def _fault_flags(g, d: RunConfig) -> None:
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=d.checkpoint_every,
        help="rounds between checkpoints (default: 1 up to 100 agents, else 5; 0 = none)",
    )
    g.add_argument(
        "--resume",
        default=d.resume,
        help="continue the run in this output folder (or URI) from its last checkpoint, with its saved settings",
    )
    g.add_argument(
        "--kill-actor",
        default=d.kill_actor,
        help="fault injection: ROUND:ACTOR[,...] (both from 0, ROUND as in rounds.csv); that actor kills its own process at the start of that round, once",
    )
    g.add_argument(
        "--node-timeout",
        dest="node_timeout_s",
        type=float,
        default=d.node_timeout_s,
        help="a node lost with actors the other nodes have no room for: seconds to wait for a node to join (then the run stops; --resume goes on); at least the 5 s in which Ray re-places them where there is room",
    )


def config_from_args(argv: list[str] | None = None, prog: str = PROG) -> RunConfig:
    a = build_parser(prog).parse_args(argv)
    fields = {k: v for k, v in vars(a).items() if k != "no_progress"}
    return RunConfig(**fields, progress=not a.no_progress)


def exit_code_of(job: Callable[[], object]) -> int:
    """Run `job()`; a user's mistake (flag, dataset, cluster too small) is one sentence and exit 2, a dead actor exit 1 (2 when no node has room for it)."""
    from comdml_ray.learning.data import DatasetError
    from comdml_ray.runtime.run import AgentFailure

    try:
        job()
    except (ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except AgentFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)  # 2: the cluster lacks room (faults.NoRoom), as for a cluster too small at start
    return 0


# Ray folds log lines that differ only in numbers (within 5 s, across actors and rounds);
# the actors' one line per round must reach `ray job logs` every round. Read by Ray at import.
ACTOR_ROUND_LINES = r"INFO (round|row) \d+ agent"


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    os.environ.setdefault("RAY_DEDUP_LOGS_ALLOW_REGEX", ACTOR_ROUND_LINES)
    # Every line out as it is printed, also into a file or a pipe (`ray job logs`, `> run.log`): a progress line such as
    # "waiting for a node to join" is news only while it is current, and Python would hold it in a 8 KB buffer.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)

    def job() -> None:
        from comdml_ray.experiment import run_experiment

        run_experiment(config_from_args(argv, prog).validate())

    return exit_code_of(job)
