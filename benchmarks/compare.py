"""The headline experiment: every algorithm on the same seed, data, agents and heterogeneity.

    python benchmarks/compare.py --agents 20                                  # local vs comdml (+ baselines), paper stragglers
    python benchmarks/compare.py --agents 20 --partition dirichlet --alpha 0.5
    python benchmarks/compare.py --agents 20 --setting links                  # DivShare's slow-link setting
    python benchmarks/compare.py --agents 20 --setting both --algorithms local,comdml,dpsgd,adpsgd,swift,divshare

Every flag of benchmarks/run.py applies to all runs (same seed -> same shards,
same initial model, same profiles).  Settings:
- compute: `--heterogeneity paper` (compute stragglers, the ComDML paper's preset);
- links:   `--heterogeneity uniform --slow-link-share 0.5` (DivShare's setting:
           equal compute, half the agents on 5x slower links).
Same clock: `local` runs --rounds rounds; every other algorithm then runs until it
has spent the same virtual time (its rounds are shorter when it balances load),
for at most --rounds-factor x --rounds rounds, so final accuracies are compared at
equal virtual training time.
For each setting it prints a table -- final accuracy, rounds run, virtual time to
the target accuracy (default: what `local` reaches at its end), reduction of that
time vs `local`, wall time -- and writes `comparison.csv` and `comparison-<setting>.png`
(accuracy against virtual time, one line per algorithm) in `--out`.
"""

from __future__ import annotations

import os
import sys


import pandas as pd

from benchmarks.run import build_parser, exit_code_of
from comdml_ray.config import ALGORITHMS, ConfigError, RunConfig

SETTINGS = {
    "compute": dict(heterogeneity="paper", slow_link_share=0.0),
    "links": dict(heterogeneity="uniform", slow_link_share=0.5),
}


def parse(argv: list[str] | None) -> tuple[RunConfig, list[str], list[str], str, float]:
    p = build_parser()
    p.prog = "benchmarks/compare.py"
    p.description = "Run several algorithms on the same agents, data and clock; print and save a comparison."
    p.add_argument("--algorithms", default="local,comdml", help=f"comma-separated, from {', '.join(ALGORITHMS)}; 'all' for every one")
    p.add_argument("--setting", default="compute", help="compute (paper stragglers), links (slow links) or both")
    p.add_argument("--rounds-factor", type=float, default=4.0,
                   help="same clock: every other algorithm runs until it has spent local's virtual time, for at most this many times --rounds rounds")
    a = p.parse_args(argv)
    algos = list(ALGORITHMS) if a.algorithms == "all" else [x.strip() for x in a.algorithms.split(",") if x.strip()]
    bad = [x for x in algos if x not in ALGORITHMS]
    if bad:
        raise ConfigError(f"unknown algorithm(s) {', '.join(bad)} in --algorithms: choose from {', '.join(ALGORITHMS)}.")
    settings = list(SETTINGS) if a.setting == "both" else [a.setting]
    if any(s not in SETTINGS for s in settings):
        raise ConfigError(f"unknown --setting '{a.setting}': choose compute, links or both.")
    out = a.out or os.path.join("results", "compare")
    fields = {k: v for k, v in vars(a).items() if k not in ("no_progress", "algorithms", "setting", "rounds_factor")}
    fields["out"] = out
    if a.rounds_factor < 1:
        raise ConfigError(f"--rounds-factor must be at least 1, got {a.rounds_factor}.")
    return RunConfig(**fields, progress=not a.no_progress), algos, settings, out, a.rounds_factor


def compare(cfg: RunConfig, algos: list[str], settings: list[str], out: str, rounds_factor: float = 4.0, log=print) -> pd.DataFrame:
    import ray

    from comdml_ray.experiment import run_experiment
    from comdml_ray.results import plot_accuracy, time_to_target

    if "local" in algos:  # local first: its final accuracy is the default target
        algos = ["local"] + [a for a in algos if a != "local"]
    rows = []
    try:
        for setting in settings:
            curves: dict[str, pd.DataFrame] = {}
            summaries: dict[str, dict] = {}
            for algo in algos:
                run_cfg = cfg.replace(algorithm=algo, out=os.path.join(out, setting, algo), **SETTINGS[setting])
                if algo != "local" and "local" in summaries:
                    # Same clock: run until local's virtual training time is spent (more, shorter rounds).
                    run_cfg = run_cfg.replace(rounds=int(cfg.rounds * rounds_factor), time_budget_s=summaries["local"]["virtual_time_s"])
                run_cfg.validate()
                log(f"\n=== {setting}: {algo} ===")
                summaries[algo] = run_experiment(run_cfg, log=log, keep_ray=True)
                curves[algo] = pd.read_csv(os.path.join(run_cfg.out, "rounds.csv"))
            target = cfg.target_acc
            if target is None:
                target = summaries["local"]["final_accuracy"] if "local" in summaries else None
            base = time_to_target(curves["local"], target) if "local" in curves else None
            for algo in algos:
                s = summaries[algo]
                ttt = time_to_target(curves[algo], target)
                rows.append({
                    "setting": setting,
                    "algorithm": algo,
                    "final_accuracy": s["final_accuracy"],
                    "rounds": s["rounds"],
                    "target_accuracy": target,
                    "time_to_target_s": ttt,
                    "reduction_vs_local": (1 - ttt / base) if (ttt is not None and base) else None,
                    "virtual_time_s": s["virtual_time_s"],
                    "wall_time_s": s["wall_time_s"],
                    "bytes_sent": s["bytes_sent"],
                })
            plot_accuracy(curves, os.path.join(out, f"comparison-{setting}.png"), target)
    finally:
        if not cfg.address:
            ray.shutdown()
    table = pd.DataFrame(rows)
    table.to_csv(os.path.join(out, "comparison.csv"), index=False)
    log("\n" + format_table(table))
    log(f"\nwritten: {os.path.join(out, 'comparison.csv')} and comparison-<setting>.png")
    return table


def format_table(t: pd.DataFrame) -> str:
    """The table a reader compares: accuracy in %, times in virtual seconds, reduction vs local in %."""
    lines = [f"{'setting':8} {'algorithm':9} {'final acc':>9} {'rounds':>6} {'target':>7} {'time to target':>15} {'vs local':>9} {'virtual s':>10} {'wall s':>7}"]
    for r in t.itertuples():
        ttt = "not reached" if pd.isna(r.time_to_target_s) else f"{r.time_to_target_s:.0f} s"
        red = "-" if (pd.isna(r.reduction_vs_local) or r.algorithm == "local") else f"{-100 * r.reduction_vs_local:+.0f}%"
        tgt = "-" if pd.isna(r.target_accuracy) else f"{100 * r.target_accuracy:.1f}%"
        lines.append(f"{r.setting:8} {r.algorithm:9} {100 * r.final_accuracy:8.1f}% {r.rounds:6d} {tgt:>7} {ttt:>15} {red:>9} {r.virtual_time_s:10.0f} {r.wall_time_s:7.0f}")
    lines.append("time to target: virtual seconds until the reported accuracy first reaches the target (local and comdml under all-reduce: "
                 "the averaged model; otherwise the mean over --eval-agents agents' models); "
                 "vs local: change of that time relative to local (negative = faster).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    def job() -> None:
        cfg, algos, settings, out, factor = parse(argv)
        compare(cfg.validate(), algos, settings, out, factor)

    return exit_code_of(job)


if __name__ == "__main__":
    sys.exit(main())
