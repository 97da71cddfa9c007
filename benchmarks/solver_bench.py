"""Benchmark of the offloading solvers on random instances (no torch, no Ray).

    python benchmarks/solver_bench.py                                  # N = 10, 100, 1000, 10000
    python benchmarks/solver_bench.py --sizes 10 100 --ilp-max 100 --json results/solvers.json
    python benchmarks/solver_bench.py --profiles paper --methods greedy exact --seed 1
    python benchmarks/solver_bench.py --profiles bimodal --sizes 100 1000 3000   # the hard case

For each size N and each profile family it draws one instance and runs each method:
`greedy` (the paper's scheduler), `exact` (optimal one-to-one, the reference for the
"vs optimum" column), `ilp` (PuLP one-to-one, only where N <= --ilp-max) and `ilp-m2o`
(PuLP many-to-one with --serve offloaders per helper, same limit). The table shows the
makespan relative to no offloading, relative to the one-to-one optimum, the number of
offloaders and the solve time. `--json PATH` writes the same rows.

Instances (one generator seeded by --seed, so a row is reproducible):
- `paper`: agent k takes profile k mod 5 of the reference code, compute slowdown
  [16, 22, 54, 72, 256] / 4 times a base cost and bandwidth [100, 50, 50, 50, 10] MB/s;
- `lognormal`: slowdown exp(N(0, 1)), bandwidth uniform in [10, 100] MB/s;
- `bimodal` (a stress test, not a default): half the agents 8x slower, and every link
  i->j drawn on its own (1-100 MB/s, 0-200 ms), a dense random matrix; here nearly
  every slow agent needs one of the few fast ones, the hard case for `exact`.
All: about 600 samples per agent (x exp(N(0, 0.3)) data skew) at batch 32, latency
1-20 ms per agent, links min(bw_i, bw_j) with latencies added, model exchange overhead
2 |w| / bw_i, and a ResNet-56-like split table (7 cuts: after the stem and each stage).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from solvers import OffloadProblem, Plan, SplitTable, no_offload_plan, solve

BATCH = 32
SAMPLES_PER_AGENT = 600
BASE_SEC_PER_BATCH = 0.025  # ResNet-56, batch 32, forward+backward on a fast device
MODEL_BYTES = 0.59e6 * 4  # bottleneck ResNet-56 parameters, float32
PAPER_SLOWDOWN = np.array([16, 22, 54, 72, 256]) / 4
PAPER_BANDWIDTH = np.array([100, 50, 50, 50, 10]) * 1e6  # bytes/s


def resnet56_splits() -> SplitTable:
    """Cut after the stem and each of the 6 stages of a CIFAR bottleneck ResNet-56.

    Stages cost about the same (channels double where the map halves); the stem and
    head ~2% each; an aux head (pool + linear) adds ~1% to the slow side. D[m] is one
    batch of the activation (float32) plus int64 labels.
    """
    share = np.array([0.02] + [0.16] * 6)  # stem, stage1..6 (head = the rest)
    cum = np.cumsum(share)
    chw = np.array([16 * 32 * 32, 64 * 32 * 32, 64 * 32 * 32, 128 * 16 * 16, 128 * 16 * 16, 256 * 8 * 8, 256 * 8 * 8])
    return SplitTable(
        split_ids=np.arange(1, 8),
        rho_s=cum + 0.01,
        rho_f=1.0 - cum,
        bytes_per_batch=BATCH * chw * 4.0 + BATCH * 8.0,
    )


def make_instance(n: int, profile: str, seed: int, helpers_can_serve: int = 1) -> OffloadProblem:
    rng = np.random.default_rng(seed)
    samples = np.maximum(BATCH, np.round(SAMPLES_PER_AGENT * np.exp(rng.normal(0.0, 0.3, n))))
    batches = np.ceil(samples / BATCH)
    if profile == "paper":
        k = np.arange(n) % 5
        slowdown, bw = PAPER_SLOWDOWN[k], PAPER_BANDWIDTH[k]
    elif profile == "lognormal":
        slowdown = np.exp(rng.normal(0.0, 1.0, n))
        bw = rng.uniform(10e6, 100e6, n)
    elif profile == "bimodal":
        slow = rng.random(n) < 0.5
        sec = BASE_SEC_PER_BATCH * np.where(slow, 8 * np.exp(rng.normal(0, 0.2, n)), np.exp(rng.normal(0, 0.5, n)))
        bw_ij = rng.uniform(1e6, 100e6, (n, n))
        return OffloadProblem(
            batches=batches,
            sec_per_batch=sec,
            bandwidth=bw_ij,
            latency=rng.uniform(0.0, 0.2, (n, n)),
            splits=resnet56_splits(),
            overhead_s=2 * MODEL_BYTES / bw_ij.mean(axis=1),
            helpers_can_serve=helpers_can_serve,
        )
    else:
        raise ValueError(f"unknown profile {profile!r}; use 'paper', 'lognormal' or 'bimodal'.")
    latency = rng.uniform(0.001, 0.020, n)
    return OffloadProblem.from_agent_links(
        batches=batches,
        sec_per_batch=BASE_SEC_PER_BATCH * slowdown,
        agent_bandwidth=bw,
        agent_latency=latency,
        splits=resnet56_splits(),
        overhead_s=2 * MODEL_BYTES / bw,
        helpers_can_serve=helpers_can_serve,
    )


@dataclass
class Row:
    n: int
    profile: str
    method: str
    makespan_s: float
    vs_no_offload: float
    vs_optimum: float
    offloaders: int
    optimal: bool
    solve_time_s: float
    note: str


def run_method(problem: OffloadProblem, method: str, time_limit_s: float) -> Plan:
    return solve(problem, method=method, time_limit_s=time_limit_s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    ap.add_argument("--profiles", nargs="+", default=["paper", "lognormal"], choices=["paper", "lognormal", "bimodal"])
    ap.add_argument("--methods", nargs="+", default=["greedy", "exact", "ilp", "ilp-m2o"], choices=["greedy", "exact", "ilp", "ilp-m2o"])
    ap.add_argument("--ilp-max", type=int, default=100, help="run ilp / ilp-m2o only where N <= this")
    ap.add_argument("--serve", type=int, default=3, help="offloaders per helper for ilp-m2o")
    ap.add_argument("--time-limit", type=float, default=10.0, help="ILP time limit (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = ap.parse_args(argv)
    if any(n < 1 for n in args.sizes):
        print("error: --sizes must be positive agent counts; pass e.g. --sizes 10 100.", file=sys.stderr)
        return 2

    rows: list[Row] = []
    head = (
        f"{'N':>6} {'profile':>9} {'method':>8} {'makespan s':>11} {'/no-off':>8} {'/opt':>8} {'offl':>5} {'opt?':>5} {'time s':>8}  note"
    )
    print(head)
    print("-" * len(head))
    for n in args.sizes:
        for profile in args.profiles:
            problem = make_instance(n, profile, args.seed)
            base = no_offload_plan(problem).makespan
            plans: dict[str, Plan] = {}
            # exact first: it is the yardstick for the others.
            for method in sorted(args.methods, key=lambda m: m != "exact"):
                if method.startswith("ilp") and n > args.ilp_max:
                    continue
                if method == "ilp-m2o":
                    p2 = make_instance(n, profile, args.seed, helpers_can_serve=args.serve)
                    plan = run_method(p2, "ilp", args.time_limit)
                else:
                    plan = run_method(problem, method, args.time_limit)
                plans[method] = plan
                opt = plans["exact"].makespan if "exact" in plans else float("nan")
                row = Row(
                    n=n,
                    profile=profile,
                    method=method,
                    makespan_s=plan.makespan,
                    vs_no_offload=plan.makespan / base,
                    vs_optimum=plan.makespan / opt,
                    offloaders=plan.num_offloaders,
                    optimal=plan.optimal,
                    solve_time_s=plan.solve_time_s,
                    note=plan.note,
                )
                rows.append(row)
                print(
                    f"{n:>6} {profile:>9} {method:>8} {row.makespan_s:>11.3f} {row.vs_no_offload:>8.4f} "
                    f"{row.vs_optimum:>8.4f} {row.offloaders:>5} {row.optimal!s:>5} {row.solve_time_s:>8.3f}  {row.note}",
                    flush=True,
                )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
