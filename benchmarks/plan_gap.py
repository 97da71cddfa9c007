"""Greedy against exact on the very instances ComDML plans in a run: predicted round makespans, no training.

    python benchmarks/plan_gap.py --agents 20 --train-samples 12000 --partition dirichlet --alpha 0.5
    python benchmarks/plan_gap.py --agents 20 --train-samples 12000 --gflops 400,500,600,700,800

Builds the run's agents and Setting in process (`backend.LocalBackend`: shards, profiles,
split profile, exchange times), forms the first round's offloading problem from the
agents' true speeds (what every round plans from once the speed estimates have settled,
with `--drift 0`), and prints, for --reference-gflops 10, 30, 100, 300 and 1000, the
predicted makespan (and so the round advantage) of no offloading, of `greedy` (the paper's) and of `exact` (the
one-to-one optimum), and the solve times.  It is a proxy for the end-to-end comparison
(`python benchmarks/tables.py scheduler-iid`), not a substitute: the clock charges what
agents did, which the prediction matches to within 0.1% (benchmarks/README.md).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from benchmarks.run import config_from_args, exit_code_of
from comdml_ray.config import ConfigError
from comdml_ray.method.messages import AgentState

GFLOPS = (10, 30, 100, 300, 1000)


def gaps(argv: list[str] | None, gflops: tuple[float, ...] = GFLOPS) -> list[dict]:
    from comdml_ray.method.comdml_steps import problem_from_states
    from comdml_ray.runtime.backend import LocalBackend
    from solvers import no_offload_plan, solve

    cfg = config_from_args(argv).replace(algorithm="comdml").validate()
    rows = []
    for g in gflops:
        c = cfg.replace(reference_gflops=float(g))
        be = LocalBackend(c, [list(range(c.agents))])
        grp, st = be.groups[0], be.setting
        sec = st.sec_per_batch(0)
        states = [AgentState(k, int(st.batches[k]), float(sec[k]), float(st.agent_bw[k]), float(st.agent_lat[k])) for k in range(st.n)]
        problem = problem_from_states(states, grp.split_profile, st.exchange_s, c.helpers_can_serve)
        row = {"reference_gflops": g, "no_offload_s": no_offload_plan(problem).makespan}
        for method in ("greedy", "exact"):
            t0 = time.perf_counter()
            plan = solve(problem, method=method)
            row[f"{method}_s"], row[f"{method}_solve_ms"] = plan.makespan, 1e3 * (time.perf_counter() - t0)
            row[f"{method}_pairs"] = int(np.sum(np.asarray(plan.partner) >= 0))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    def job() -> None:
        args, gflops = list(sys.argv[1:] if argv is None else argv), GFLOPS
        if "--gflops" in args:
            i = args.index("--gflops")
            try:
                gflops = tuple(float(x) for x in args[i + 1].split(","))
            except (IndexError, ValueError):
                raise ConfigError("--gflops takes comma-separated numbers, e.g. --gflops 400,500,600.") from None
            del args[i : i + 2]
        print(
            f"{'GFLOPS':>7} {'no offload s':>12} {'greedy s':>9} {'exact s':>9} {'greedy/exact':>12} {'advantage':>9} {'pairs g/e':>9} {'solve ms g/e':>13}"
        )
        for r in gaps(args, gflops):
            print(
                f"{r['reference_gflops']:>7} {r['no_offload_s']:12.3f} {r['greedy_s']:9.3f} {r['exact_s']:9.3f} "
                f"{r['greedy_s'] / r['exact_s']:12.4f} {r['no_offload_s'] / r['exact_s']:8.2f}x {r['greedy_pairs']:>4}/{r['exact_pairs']:<4} {r['greedy_solve_ms']:6.1f}/{r['exact_solve_ms']:<6.1f}"
            )

    return exit_code_of(job)


if __name__ == "__main__":
    sys.exit(main())
