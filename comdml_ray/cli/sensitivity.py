"""Where ComDML stops paying off: its time-to-target reduction against the compute/communication ratio.

    comdml-ray sensitivity --agents 20 --train-samples 12000 --rounds 15 --rounds-factor 1
    python benchmarks/sensitivity.py --agents 20 --gflops 10,100,1000 --profiles flops   # the same

For every `--reference-gflops` in --gflops (with `--profile flops`) and once with
`--profile measure` (this host's timed split costs), runs local, ComDML and
`local-deadline` on the same clock (`comdml_ray.comparison`'s rules, paper
heterogeneity) and records the time each takes to --target (on the smoothed curve, the
mean of the last 3 evaluations, and the raw first crossing), each one's round advantage
(local's mean virtual round over its own) and the compute/communication ratio of the
setting:

    compute / communication = median over agents of (seconds to compute one batch)
                              / (seconds to send that batch's split-1 activations over the agent's link)

i.e. what an offloader trades: above ~1, shipping activations is cheap next to the
compute it saves; near or below 1, it is not.

With `--fleets` it sweeps fleet compositions instead (each a `--heterogeneity` value,
e.g. `two-class:0.25` for a quarter of slow agents, `lognormal:1.0` for a wide spread of
speeds), the same three methods at each: where ComDML's advantage comes from and where
it goes.  Writes `runs.csv` (one row per point)
and `sensitivity.png` (reduction against the ratio, log x; for fleets `fleet.png`, each
method's time in local's) in --out.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from comdml_ray.cli.run import build_parser, exit_code_of
from comdml_ray.config import ConfigError, RunConfig
from comdml_ray.results.yardstick import finish_log_x_plot, parse_targets, smoothed, sweep_time, target_level, time_to

OWN_FLAGS = ("no_progress", "gflops", "profiles", "rounds_factor", "target", "reuse_runs", "fleets")


PROG = "benchmarks/sensitivity.py"
# The methods run at each point, of either sweep: local, ComDML and the straggler-aware local-deadline.
POINT_METHODS = ["local", "comdml", "local-deadline"]


def parse(argv: list[str] | None, prog: str = PROG) -> tuple[RunConfig, list[float], list[str], float, str, bool, list[str]]:
    p = build_parser(prog)
    p.add_argument("--gflops", default="10,30,100,300,1000", help="comma-separated --reference-gflops values (profile flops)")
    p.add_argument("--profiles", default="flops,measure", help="flops (one point per --gflops), measure (one point), or both")
    p.add_argument(
        "--rounds-factor", type=float, default=1.0, help="ComDML runs until local's virtual time, at most this many x --rounds rounds"
    )
    p.add_argument("--target", default="80", help="one target as in compare.py --targets (75, 0.8, local-best-0.5)")
    p.add_argument("--reuse-runs", action="store_true", help="as in compare.py: reuse finished runs in --out, continue stopped ones")
    p.add_argument(
        "--fleets",
        default="",
        help="sweep fleets instead of speeds: comma-separated --heterogeneity values (e.g. two-class:0.25,lognormal:0.5,paper), "
        "each run with the same three methods at --reference-gflops",
    )
    a = p.parse_args(argv)
    try:
        gflops = [float(x) for x in a.gflops.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--gflops must be comma-separated numbers, got '{a.gflops}'.") from None
    profiles = [x.strip() for x in a.profiles.split(",") if x.strip()]
    if not profiles or any(x not in ("flops", "measure") for x in profiles) or any(g <= 0 for g in gflops):
        raise ConfigError(
            "--profiles takes flops and/or measure, and --gflops positive numbers; e.g. --gflops 10,100 --profiles flops,measure."
        )
    if a.rounds_factor < 1:
        raise ConfigError(f"--rounds-factor must be at least 1, got {a.rounds_factor}.")
    (target,) = parse_targets(a.target)
    fields = {k: v for k, v in vars(a).items() if k not in OWN_FLAGS}
    fields["out"] = a.out or os.path.join("results", "sensitivity")
    fleets = [x.strip() for x in a.fleets.split(",") if x.strip()]
    cfg = RunConfig(**fields, progress=not a.no_progress)
    for fleet in fleets:
        cfg.replace(heterogeneity=fleet).validate()  # a bad fleet is one sentence before anything runs
    return cfg, gflops, profiles, a.rounds_factor, target, a.reuse_runs, fleets


def compute_comm_ratio(profile_csv: str, cfg: RunConfig) -> float:
    """Median over agents of one batch's compute seconds over its split-1 activations' transfer seconds."""
    from comdml_ray.timing.profiles import make_profiles

    prof = pd.read_csv(profile_csv)
    d1 = float(prof.loc[prof["split"] == 1, "bytes_per_batch"].iloc[0])
    base = float(prof["base_sec_per_batch"].iloc[0])
    agents = make_profiles(cfg.heterogeneity, cfg.agents, cfg.seed, cfg.slow_link_share)
    return float(np.median([base * a.slowdown / (d1 / a.bandwidth_Bps) for a in agents]))


def point(cfg: RunConfig, out: str, rounds_factor: float, target: str, log, reuse: bool = False, fleet: bool = False) -> dict:
    """One point: local, ComDML and local-deadline on the same clock, trained, and what they took to the target."""
    from comdml_ray.comparison import run_one_setting

    curves, _ = run_one_setting(cfg, POINT_METHODS, out, rounds_factor, log, reuse)
    level = target_level(target, curves["local"])
    rounds = {m: float(c["round_virtual_s"].mean()) for m, c in curves.items()}
    extra = {
        **({"fleet": cfg.heterogeneity} if fleet else {}),
        "deadline_time_s": time_to(curves["local-deadline"], level),
        "deadline_time_smoothed_s": time_to(smoothed(curves["local-deadline"]), level),
        "deadline_round_advantage": rounds["local"] / rounds["local-deadline"],
    }
    return {
        **extra,
        "seed": cfg.seed,
        "profile": cfg.profile,
        "reference_gflops": cfg.reference_gflops if cfg.profile == "flops" else math.nan,
        "compute_comm_ratio": compute_comm_ratio(os.path.join(out, "local", "profile.csv"), cfg),
        "round_advantage": rounds["local"] / rounds["comdml"],
        "target": target,
        "target_accuracy": level,
        "local_time_s": time_to(curves["local"], level),
        "comdml_time_s": time_to(curves["comdml"], level),
        # the tables read these: the first evaluation at which the mean of the last 3 reaches the target
        "local_time_smoothed_s": time_to(smoothed(curves["local"]), level),
        "comdml_time_smoothed_s": time_to(smoothed(curves["comdml"]), level),
        "local_rounds": len(curves["local"]),
        "comdml_rounds": len(curves["comdml"]),
    }


def plot(runs: pd.DataFrame, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    red = 100 * (1 - sweep_time(runs, "comdml") / sweep_time(runs, "local"))
    if "deadline_time_s" in runs:  # local-deadline at the same points (sweeps made before it joined have none)
        dred = 100 * (1 - sweep_time(runs, "deadline") / sweep_time(runs, "local"))
        for prof, marker in (("flops", "^"), ("measure", "D")):
            m = runs["profile"] == prof
            ls = "--" if prof == "flops" else ""
            ax.plot(
                runs.loc[m, "compute_comm_ratio"],
                dred[m],
                marker=marker,
                ls=ls,
                color="tab:green",
                label=f"local-deadline, --profile {prof}",
            )
    for prof, marker in (("flops", "o"), ("measure", "s")):
        m = runs["profile"] == prof
        ls = "-" if prof == "flops" else ""
        ax.plot(runs.loc[m, "compute_comm_ratio"], red[m], marker=marker, ls=ls, color="tab:blue", label=f"ComDML, --profile {prof}")
        for r, y in zip(runs[m].itertuples(), red[m], strict=True):
            ax.annotate(
                f"{r.reference_gflops:g} GFLOPS" if prof == "flops" else "measured",
                (r.compute_comm_ratio, y),
                fontsize=7,
                textcoords="offset points",
                xytext=(4, 4),
            )
    ax.axhline(0, color="grey", lw=0.8)
    finish_log_x_plot(
        fig,
        ax,
        path,
        "compute / communication (median agent: batch compute / split-1 transfer)",
        "time-to-target reduction vs local (%)",
    )


def plot_fleet(runs: pd.DataFrame, path: str) -> None:
    """The fleet sweep: each fleet's time to the target for ComDML and local-deadline, in local's time (log x: 1 is local)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(runs) + 1.4))
    y = np.arange(len(runs))
    local = sweep_time(runs, "local")
    for k, (who, label) in enumerate((("comdml", "ComDML"), ("deadline", "local-deadline"))):
        ax.barh(y + (k - 0.5) * 0.38, sweep_time(runs, who) / local, height=0.38, label=label)
    ax.axvline(1, color="grey", lw=0.8)
    ax.set_yticks(y, runs["fleet"])
    ax.invert_yaxis()
    finish_log_x_plot(fig, ax, path, f"time to {runs['target'].iloc[0]}% / local's (log; 1 = local)", "fleet")


def sweep_points(cfg: RunConfig, gflops: list[float], profiles: list[str], fleets: list[str] | None) -> list[tuple[RunConfig, str]]:
    """The sweep's points, each a configuration and the folder of its runs under cfg.out (gflopsG, measure, or the fleet's name)."""
    if fleets:
        points = [(cfg.replace(heterogeneity=f), f.replace(":", "-")) for f in fleets]
    else:
        points = [(cfg.replace(profile="flops", reference_gflops=g), f"gflops{g:g}") for g in gflops] if "flops" in profiles else []
        points += [(cfg.replace(profile="measure"), "measure")] if "measure" in profiles else []
    return [(c.validate(), os.path.join(cfg.out, name)) for c, name in points]


def sweep(
    cfg: RunConfig,
    gflops: list[float],
    profiles: list[str],
    rounds_factor: float,
    target: str,
    log=print,
    reuse: bool = False,
    fleets: list[str] | None = None,
) -> pd.DataFrame:
    """Every point of the sweep (speeds and profiles, or fleets), each point's row written to runs.csv as soon as it is measured."""
    from comdml_ray.experiment import stop_ray

    rows = []
    try:
        for c, where in sweep_points(cfg, gflops, profiles, fleets):
            rows.append(point(c, where, rounds_factor, target, log, reuse, fleet=bool(fleets)))
            pd.DataFrame(rows).to_csv(os.path.join(cfg.out, "runs.csv"), index=False)  # every point as soon as it is measured
    finally:
        stop_ray(cfg)
    runs = pd.DataFrame(rows)
    runs.to_csv(os.path.join(cfg.out, "runs.csv"), index=False)
    if fleets:
        plot_fleet(runs, os.path.join(cfg.out, "fleet.png"))
    else:
        plot(runs, os.path.join(cfg.out, "sensitivity.png"))
    log(runs.to_string(index=False))
    return runs


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    def job() -> None:
        from comdml_ray.storage import OutDir

        cfg, gflops, profiles, factor, target, reuse, fleets = parse(argv, prog)
        OutDir(cfg.out).check_writable()
        sweep(cfg, gflops, profiles, factor, target, reuse=reuse, fleets=fleets)

    return exit_code_of(job)
