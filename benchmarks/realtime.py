"""The simulator checked against reality: the same seed, agents and heterogeneity under the virtual clock and under `--clock wall --emulate`.

    python benchmarks/realtime.py --agents 10 --rounds 10 --comdml-rounds 14 --train-samples 2240 --reference-gflops 5 --out results/realtime
    python benchmarks/realtime.py --agents 10 --rounds 12 --train-samples 2240 --reference-gflops 5 --drift 0.3 --algorithms comdml --out results/drift
    python benchmarks/realtime.py --bed --agents 10 --rounds 10 --comdml-rounds 14 --train-samples 2240 --reference-gflops 5   # as root

For every algorithm in --algorithms it runs the job twice, once per clock, and prints
per round: the virtual run's round time, the clock's time for the work the wall run
did (same plan inputs: its own clock row), the wall run's real round time, and the
gap between the last two (per round and summed).  For ComDML under the wall clock it
also prints the plan's predicted finish against the observed one per round (online
profiling; `plan.csv`), and plots them (predicted_vs_observed.png).  With local and
comdml both run, it prints ComDML's wall time to local's final accuracy and both
accuracies at equal wall time.  Every other flag goes to both runs unchanged
(benchmarks/run.py's flags).  With `--bed` it runs the wall clock alone, on a multi-host
bed with one node per agent whose link is shaped to the agent's bandwidth, and checks
the clock per round and per link against the wire (benchmarks/realtime_bed.py).  Figures: benchmarks/README.md, "Real time".
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run import config_from_args, exit_code_of


def _runs(args, rest: list[str], log) -> dict[tuple[str, str], tuple[dict, pd.DataFrame]]:
    from comdml_ray.experiment import run_experiment

    out = {}
    for algo in args.algorithms.split(","):
        for clock in args.clocks.split(","):
            wall = (
                [
                    "--clock",
                    "wall",
                    "--emulate",
                    "--agents-per-actor",
                    "1",
                    "--num-cpus",
                    str(args.num_cpus_wall),
                    "--cpus-per-agent",
                    "0.5",
                ]
                if clock == "wall"
                else []
            )
            folder = os.path.join(args.out, f"{algo}-{clock}")
            more = ["--rounds", str(args.comdml_rounds)] if algo == "comdml" and args.comdml_rounds else []
            cfg = config_from_args([*rest, "--algorithm", algo, "--out", folder, "--no-progress", *wall, *more]).validate()
            log(f"--- {algo}, {clock} clock -> {folder}")
            summary = run_experiment(cfg, log=lambda *_a, **_k: None)
            out[(algo, clock)] = (summary, pd.read_csv(os.path.join(folder, "rounds.csv")))
    return out


def clock_table(runs: dict) -> pd.DataFrame:
    """Per algorithm and round: virtual run's round time, the clock on the wall run's work, the wall round time, gaps."""
    rows = []
    for (algo, clock), (_, df) in runs.items():
        if clock != "wall":
            continue
        virt = runs.get((algo, "virtual"), (None, None))[1]
        whole = pd.read_csv(os.path.join(summary_out(runs, algo), "agents.csv")).groupby("round")["whole_s"].max()
        for _, r in df.iterrows():
            rows.append(
                {
                    "algorithm": algo,
                    "round": int(r["round"]),
                    "virtual_run_s": float(virt["round_virtual_s"].iloc[int(r["round"])])
                    if virt is not None and r["round"] < len(virt)
                    else np.nan,
                    "clock_on_wall_work_s": float(r["round_virtual_s"]),
                    "wall_s": float(r["round_wall_s"]),
                    "all_whole_s": float(whole.get(int(r["round"]), np.nan)),  # start to the last model whole (planning included)
                }
            )
    t = pd.DataFrame(rows)
    if len(t):
        t["averaging_s"] = t["wall_s"] - t["all_whole_s"]  # the collective as it really lasted
        t["gap"] = t["wall_s"] / t["clock_on_wall_work_s"] - 1
    return t


def summary_out(runs: dict, algo: str) -> str:
    return runs[(algo, "wall")][0]["out"]


def plan_tracking(folder: str, drift: tuple[float, float, int] = (0.0, 1.0, 0)) -> pd.DataFrame:
    """Per round of a wall-clock ComDML run: the plan's predicted makespan against the observed one, and per-agent errors.

    Under `--drift` (sigma, prob, seed) it also counts the agents whose true speed changed
    in that round (no plan made before the round can know it) and gives the median error
    over the others (`median_steady_error`).
    """
    from comdml_ray.timing.profiles import drift_slowdowns

    plan = pd.read_csv(os.path.join(folder, "plan.csv"))
    rel = (plan["predicted_finish_s"] / plan["observed_finish_s"] - 1).abs()
    n = int(plan["agent"].max()) + 1
    sigma, prob, seed = drift

    def factor(r):
        return drift_slowdowns(np.ones(n), r, sigma, seed, prob)

    changed = {r: factor(r) != factor(r - 1) if r > 0 else np.zeros(n, bool) for r in plan["round"].unique()}
    plan = plan.assign(rel=rel, changed=[bool(changed[r][k]) for r, k in zip(plan["round"], plan["agent"], strict=True)])
    g = plan.groupby("round")
    steady = plan[~plan["changed"]].groupby("round")["rel"].median()
    return (
        pd.DataFrame(
            {
                "predicted_makespan_s": g["predicted_finish_s"].max(),
                "observed_makespan_s": g["observed_finish_s"].max(),
                "median_agent_error": g["rel"].median(),
                "max_agent_error": g["rel"].max(),
                "changed_agents": g["changed"].sum(),
                "median_steady_error": steady,
            }
        )
        .assign(makespan_error=lambda d: (d.predicted_makespan_s / d.observed_makespan_s - 1).abs())
        .reset_index()
    )


def plot_tracking(folder: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = pd.read_csv(os.path.join(folder, "plan.csv"))
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    sc = ax.scatter(plan["observed_finish_s"], plan["predicted_finish_s"], c=plan["round"], cmap="viridis", s=14)
    hi = float(max(plan["observed_finish_s"].max(), plan["predicted_finish_s"].max())) * 1.05
    ax.plot([0, hi], [0, hi], color="grey", lw=1, ls="--", label="predicted = observed")
    ax.fill_between([0, hi], [0, 0.8 * hi], [0, 1.2 * hi], color="grey", alpha=0.12, label="within 20%")
    ax.set_xlabel("observed finish (s, wall clock)")
    ax.set_ylabel("plan's predicted finish (s)")
    fig.colorbar(sc, ax=ax, label="round")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def time_to_accuracy(runs: dict) -> list[str]:
    """ComDML's wall time to local's final accuracy, and both accuracies at equal wall time."""
    if ("local", "wall") not in runs or ("comdml", "wall") not in runs:
        return []
    loc, com = runs[("local", "wall")][1].dropna(subset=["test_accuracy"]), runs[("comdml", "wall")][1].dropna(subset=["test_accuracy"])
    target = float(loc["test_accuracy"].iloc[-1])
    t_local = float(loc["wall_time_s"].iloc[-1])
    hit = com[com["test_accuracy"] >= target - 1e-12]
    t_com = float(hit["wall_time_s"].iloc[0]) if len(hit) else None
    lines = [f"local's final accuracy {100 * target:.2f}% after {t_local:.1f} s of wall time ({len(loc)} rounds)"]
    lines.append(
        f"ComDML reaches it after {t_com:.1f} s: {t_com / t_local:.2f}x local's" if t_com else "ComDML does not reach it within its rounds"
    )
    equal = min(t_local, float(com["wall_time_s"].iloc[-1]))

    def acc(d):
        upto = d[d["wall_time_s"] <= equal + 1e-9]
        return float(upto["test_accuracy"].iloc[-1]) if len(upto) else float("nan")

    lines.append(f"at equal wall time {equal:.1f} s: local {100 * acc(loc):.2f}%, ComDML {100 * acc(com):.2f}%")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--bed" in argv:  # on a multi-host bed with real shaped links: benchmarks/realtime_bed.py
        from benchmarks.realtime_bed import bed_main

        return bed_main([a for a in argv if a != "--bed"])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algorithms", default="local,comdml")
    p.add_argument("--clocks", default="virtual,wall")
    p.add_argument(
        "--num-cpus-wall", type=int, default=None, help="logical CPUs of the wall runs' local Ray (default: agents/2, at least 2)"
    )
    p.add_argument(
        "--comdml-rounds", type=int, default=None, help="rounds of the comdml runs (default --rounds): room to reach local's final accuracy"
    )
    p.add_argument("--out", default="results/realtime")
    args, rest = p.parse_known_args(argv)
    cfg = config_from_args(rest)
    agents = cfg.agents
    args.num_cpus_wall = args.num_cpus_wall or max(2, -(-agents // 2))

    def job() -> None:
        os.makedirs(args.out, exist_ok=True)
        runs = _runs(args, rest, print)
        table = clock_table(runs)
        table.to_csv(os.path.join(args.out, "clocks.csv"), index=False)
        pd.set_option("display.width", 160)
        if len(table):
            print(
                "\nper round: virtual run, the clock on the wall run's work, the wall round (until all models whole, then the averaging); gap = wall / clock - 1"
            )
            print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
            for algo, d in table.groupby("algorithm"):
                print(
                    f"{algo}: max |gap| per round {d['gap'].abs().max():.1%}, summed gap {d['wall_s'].sum() / d['clock_on_wall_work_s'].sum() - 1:+.1%}"
                )
        if ("comdml", "wall") in runs:
            folder = os.path.join(args.out, "comdml-wall")
            track = plan_tracking(folder, (cfg.drift, cfg.drift_prob, cfg.seed))
            track.to_csv(os.path.join(args.out, "plan_tracking.csv"), index=False)
            plot_tracking(folder, os.path.join(args.out, "predicted_vs_observed.png"))
            print("\nComDML plan, predicted against observed finish (wall clock):")
            print(track.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        for line in time_to_accuracy(runs):
            print(line)
        with open(os.path.join(args.out, "summaries.json"), "w") as f:
            json.dump({f"{a}-{c}": s for (a, c), (s, _) in runs.items()}, f, indent=1, default=str)

    return exit_code_of(job)


if __name__ == "__main__":
    from comdml_ray.runtime.cluster import exit_process

    exit_process(main())  # one Ray session per run: see exit_process for the crash a plain exit can meet
