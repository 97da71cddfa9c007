"""The headline experiment: every method on the same seeds, data, agents, heterogeneity, clock and yardstick.

    python benchmarks/compare.py --agents 20                                  # local vs comdml, paper stragglers
    python benchmarks/compare.py --agents 20 --partition dirichlet --alpha 0.5 --seeds 0 1 2
    python benchmarks/compare.py --agents 20 --setting links                  # DivShare's slow-link setting
    python benchmarks/compare.py --agents 20 --setting both --algorithms all  # + gossip variants and the baselines

Every flag of benchmarks/run.py applies to all runs (same seed -> same shards,
same initial model, same profiles, same scored agents).  Settings:
- compute: `--heterogeneity paper` (compute stragglers, the ComDML paper's preset);
- links:   `--heterogeneity uniform --slow-link-share 0.5` (DivShare's setting:
           equal compute, half the agents on 5x slower links).
Methods (`--algorithms`): the algorithms, plus `local-gossip` and `comdml-gossip`
(gossip on the baselines' `--topology` instead of the exact all-reduce) and
`comdml-greedy` / `comdml-exact` (the scheduler); `all` = the six algorithms and
the two gossip variants.
Same clock: `local` runs --rounds rounds; every other method then runs until it
has spent the same virtual time, for at most --rounds-factor x --rounds rounds.
One yardstick (`comdml_ray/results/yardstick.py`): every method is scored on the mean test
accuracy of the same seeded sample of --eval-agents agents' own models; time to
each of --targets is read on that.  With several --seeds it reports mean and std.
`--reuse-runs` skips a run whose summary.json in --out has its configuration (wherever the
folder was made; a field the run predates counts as its default, `finished_run`), and
continues one that was stopped (Ctrl-C, a killed driver) from its last checkpoint when
that checkpoint has the run's configuration (`stopped_run`): an interrupted comparison
or `make results` goes on where it stopped;
`--score-only` runs nothing and scores the finished runs in --out (a seed and setting
with a method still missing is left out), e.g. while a long table is still running.
Writes to --out: `runs.csv` (seed x setting x method x target), `summary.csv`
(mean, std, seeds that reached the target) and `comparison-<setting>.png`
(accuracy against virtual time, mean and a +-1 std band per method).
"""

from __future__ import annotations

import math
import os
import sys

import pandas as pd

from benchmarks.run import build_parser, exit_code_of
from comdml_ray.config import ConfigError, RunConfig
from comdml_ray.results.yardstick import METHODS, parse_methods, parse_targets, plot_bands, score_runs, summarize, target_level

SETTINGS = {
    "compute": dict(heterogeneity="paper", slow_link_share=0.0),
    "links": dict(heterogeneity="uniform", slow_link_share=0.5),
}
OWN_FLAGS = ("no_progress", "algorithms", "setting", "rounds_factor", "seeds", "targets", "reuse_runs", "score_only")


def parse(argv: list[str] | None) -> tuple[RunConfig, dict]:
    p = build_parser()
    p.prog = "benchmarks/compare.py"
    p.description = "Run several methods on the same agents, data, clock and yardstick; print and save a comparison."
    p.add_argument(
        "--algorithms",
        default="local,comdml",
        help=f"comma-separated, from {', '.join(METHODS)}; 'all' for the algorithms and the gossip variants",
    )
    p.add_argument("--setting", default="compute", help="compute (paper stragglers), links (slow links) or both")
    p.add_argument(
        "--rounds-factor",
        type=float,
        default=4.0,
        help="same clock: every other method runs until it has spent local's virtual time, for at most this many times --rounds rounds",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="run every method once per seed (default: --seed alone)")
    p.add_argument(
        "--targets",
        default="75,80,local-best-0.5",
        help="accuracies to time: percent (75), fraction (0.8) or local-best-D (local's best over its run minus D points, per seed)",
    )
    p.add_argument(
        "--reuse-runs",
        action="store_true",
        help="reuse a run already in --out whose summary.json has exactly this run's configuration, and continue a stopped one from its last checkpoint (an interrupted or extended comparison)",
    )
    p.add_argument(
        "--score-only",
        action="store_true",
        help="run nothing: score the runs already in --out (e.g. of a comparison still running or stopped); a seed and setting with a method missing is left out",
    )
    a = p.parse_args(argv)
    methods = parse_methods(a.algorithms)
    settings = list(SETTINGS) if a.setting == "both" else [a.setting]
    if any(s not in SETTINGS for s in settings):
        raise ConfigError(f"unknown --setting '{a.setting}': choose compute, links or both.")
    if a.rounds_factor < 1:
        raise ConfigError(f"--rounds-factor must be at least 1, got {a.rounds_factor}.")
    targets = parse_targets(a.targets)
    if a.target_acc is not None:
        targets.append(str(a.target_acc))
    if any(t.startswith("local-best") for t in targets) and "local" not in methods:
        raise ConfigError("a local-best target needs the local method: add local to --algorithms or drop it from --targets.")
    fields = {k: v for k, v in vars(a).items() if k not in OWN_FLAGS}
    fields["out"] = a.out or os.path.join("results", "compare")
    cfg = RunConfig(**fields, progress=not a.no_progress)
    seeds = a.seeds if a.seeds is not None else [cfg.seed]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds repeats a seed ({' '.join(map(str, seeds))}); give each seed once.")
    return cfg, dict(
        methods=methods,
        settings=settings,
        seeds=seeds,
        targets=targets,
        rounds_factor=a.rounds_factor,
        reuse=a.reuse_runs,
        score_only=a.score_only,
    )


def same_configuration(saved: dict, run_cfg: RunConfig) -> bool:
    """Whether a configuration saved with a run (summary.json, a checkpoint) is run_cfg's.

    A field the saved configuration lacks (the run was made before the field existed)
    matches when this run leaves it at its default: a new field's default keeps the old
    behaviour, so a table's finished runs survive a RunConfig that grew a field.  `out`
    is where the run lies and `resume` where it was continued from, not what it did: a
    folder moved or copied elsewhere, or a run resumed after a stop, still matches.
    """
    import dataclasses
    import json

    from comdml_ray.results.report import _json_default

    def as_json(x) -> dict:
        d = json.loads(json.dumps(x if isinstance(x, dict) else dataclasses.asdict(x), default=_json_default))
        for k in ("out", "resume"):
            d.pop(k, None)
        return d

    wanted, defaults, had = as_json(run_cfg), as_json(RunConfig()), as_json(dict(saved or {}))
    return set(had) <= set(wanted) and all(had[k] == v if k in had else v == defaults[k] for k, v in wanted.items())


def finished_run(run_cfg: RunConfig) -> dict | None:
    """The summary of a finished run already in run_cfg.out with this configuration, else None.

    A run stopped part way (Ctrl-C writes its summary.json with `aborted` set) is not finished.
    """
    import json

    path = os.path.join(run_cfg.out, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    return saved if not saved.get("aborted") and same_configuration(saved.get("config"), run_cfg) else None


def stopped_run(run_cfg: RunConfig) -> int | None:
    """The round a run stopped part way in run_cfg.out would go on from (its last checkpoint), if that checkpoint has this configuration.

    Reads the checkpoint as `--resume` does (`recovery.resumed_config`); none, or one it cannot read, means the run starts again.
    """
    from comdml_ray.runtime.recovery import resumed_config

    try:
        _, state = resumed_config(run_cfg.replace(resume=run_cfg.out))
    except ConfigError:
        return None
    return state.at.next_round if same_configuration(state.config, run_cfg) else None


def finished_runs(methods: list[str], out: str) -> tuple[dict, dict] | None:
    """--score-only: the rounds.csv curves and summaries of every method's run in `out`, or None if one has not finished."""
    import json

    curves: dict[str, pd.DataFrame] = {}
    summaries: dict[str, dict] = {}
    for method in methods:
        path = os.path.join(out, method, "summary.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            summaries[method] = json.load(f)
        if summaries[method].get("aborted"):
            return None
        curves[method] = pd.read_csv(os.path.join(out, method, "rounds.csv"))
    return curves, summaries


def run_one_setting(cfg: RunConfig, methods: list[str], out: str, rounds_factor: float, log, reuse: bool = False) -> tuple[dict, dict]:
    """Every method of one seed and setting; returns their rounds.csv curves and summaries."""
    from comdml_ray.experiment import run_experiment

    curves: dict[str, pd.DataFrame] = {}
    summaries: dict[str, dict] = {}
    for method in methods:
        algo, flags = METHODS[method]
        run_cfg = cfg.replace(algorithm=algo, out=os.path.join(out, method), **flags)
        if method != "local" and "local" in summaries:
            # Same clock: run until local's virtual training time is spent (more, shorter rounds).
            run_cfg = run_cfg.replace(rounds=int(cfg.rounds * rounds_factor), time_budget_s=summaries["local"]["virtual_time_s"])
        run_cfg.validate()
        log(f"\n=== seed {cfg.seed}, {os.path.basename(out)}: {method} ===")
        done = finished_run(run_cfg) if reuse else None
        at = stopped_run(run_cfg) if reuse and done is None else None
        if done is not None:
            log(f"reused: {run_cfg.out} (summary.json has this configuration)")
        elif at is not None:
            log(f"continued: {run_cfg.out} from round {at} (its last checkpoint has this configuration)")
            run_cfg = run_cfg.replace(resume=run_cfg.out)
        summaries[method] = done or run_experiment(run_cfg, log=log, keep_ray=True)
        curves[method] = pd.read_csv(os.path.join(run_cfg.out, "rounds.csv"))
    return curves, summaries


def compare(
    cfg: RunConfig,
    methods: list[str],
    settings: list[str],
    out: str,
    rounds_factor: float = 4.0,
    seeds: list[int] | None = None,
    targets: list[str] | None = None,
    log=print,
    reuse: bool = False,
    score_only: bool = False,
) -> pd.DataFrame:
    """Run everything (score_only: nothing, score what is in `out`), write runs.csv, summary.csv and the band plots; returns the summary."""
    import ray

    seeds = seeds if seeds is not None else [cfg.seed]
    targets = targets or ["local-best-0.5"]
    rows: list[dict] = []
    bands: dict[str, dict[str, list[pd.DataFrame]]] = {s: {m: [] for m in methods} for s in settings}
    levels: dict[str, dict[str, list[float]]] = {s: {t: [] for t in targets} for s in settings}
    try:
        for seed in seeds:
            for setting in settings:
                where = os.path.join(out, f"seed{seed}", setting) if len(seeds) > 1 else os.path.join(out, setting)
                if score_only:
                    done = finished_runs(methods, where)
                    if done is None:
                        log(f"seed {seed}, {setting}: left out, not every method's run in {where} has finished")
                        continue
                    curves, summaries = done
                else:
                    curves, summaries = run_one_setting(
                        cfg.replace(seed=seed, **SETTINGS[setting]), methods, where, rounds_factor, log, reuse
                    )
                rows += score_runs(seed, setting, curves, summaries, targets)
                for m, c in curves.items():
                    bands[setting][m].append(c)
                for t in targets:
                    levels[setting][t].append(target_level(t, curves.get("local")))
    finally:
        if not cfg.address and not score_only:
            ray.shutdown()
    if not rows:
        raise ConfigError(
            f"no seed and setting in {out} has a finished run of every method: run the comparison first (without --score-only)."
        )
    runs = pd.DataFrame(rows)
    runs.to_csv(os.path.join(out, "runs.csv"), index=False)
    summary = summarize(runs)
    summary.to_csv(os.path.join(out, "summary.csv"), index=False)
    for setting in settings:
        if not levels[setting][targets[0]]:
            continue  # --score-only: no finished seed in this setting
        mean_levels = {t: float(pd.Series(v).mean()) for t, v in levels[setting].items()}
        plot_bands(bands[setting], os.path.join(out, f"comparison-{setting}.png"), mean_levels)
    log("\n" + format_table(summary))
    log(f"\nwritten: {os.path.join(out, 'runs.csv')}, summary.csv and comparison-<setting>.png")
    return summary


def _pm(mean: float, std: float, scale: float = 1.0, fmt: str = "{:.0f}") -> str:
    if math.isnan(mean):
        return "-"
    return fmt.format(scale * mean) + ("" if math.isnan(std) else " ± " + fmt.format(scale * std))


def format_table(s: pd.DataFrame) -> str:
    """The table a reader compares: per setting, method and target, mean ± std over seeds."""
    head = f"{'setting':8} {'method':14} {'target':15} {'level %':>12} {'time to target s':>22} {'reached':>7} {'x local':>13} {'final acc %':>13} {'acc at common t %':>17}"
    lines = [head]
    for r in s.itertuples():
        lines.append(
            f"{r.setting:8} {r.method:14} {r.target:15} {_pm(r.target_accuracy_mean, r.target_accuracy_std, 100, '{:.2f}'):>12} "
            f"{_pm(r.time_to_target_s_mean, r.time_to_target_s_std, 1, '{:.1f}'):>22} {r.reached:>3}/{r.seeds:<3} "
            f"{_pm(r.ratio_vs_local_mean, r.ratio_vs_local_std, 1, '{:.2f}'):>13} "
            f"{_pm(r.final_accuracy_mean, r.final_accuracy_std, 100, '{:.2f}'):>13} "
            f"{_pm(r.accuracy_at_common_time_mean, r.accuracy_at_common_time_std, 100, '{:.2f}'):>17}"
        )
    lines.append(
        "time to target: virtual seconds until the mean test accuracy of the scored agents' models first reaches the target "
        "(the same agents for every method; mean ± std over seeds that reached it); x local: that time over local's, per seed; "
        "acc at common t: each method's last evaluation at the shortest run's end."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    def job() -> None:
        cfg, opts = parse(argv)
        cfg.replace(algorithm=METHODS[opts["methods"][0]][0]).validate()
        from comdml_ray.storage import OutDir

        OutDir(cfg.out).check_writable()
        compare(
            cfg,
            opts["methods"],
            opts["settings"],
            cfg.out,
            opts["rounds_factor"],
            opts["seeds"],
            opts["targets"],
            reuse=opts["reuse"],
            score_only=opts["score_only"],
        )

    return exit_code_of(job)


if __name__ == "__main__":
    sys.exit(main())
