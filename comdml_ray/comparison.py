"""A comparison: every method on the same seeds, data, agents, heterogeneity, clock and yardstick.

Owns what `comdml-ray compare` (and `benchmarks/compare.py`) does once its flags are read,
and what `comdml_ray.compare` does from Python:
- `ComparePlan`: what a comparison runs besides the `RunConfig` every run shares
  (methods, settings, seeds, targets, the same-clock factor, reuse, score-only), built
  and checked by `plan_comparison` (a bad choice raises `ConfigError`, one sentence);
- `run_one_setting`: every method of one seed and setting.  Equal time (`--time-budget
  S`): every method runs until it has spent S virtual seconds (at most --rounds rounds).
  Otherwise `local` runs --rounds rounds and every other method then runs until it has
  spent local's virtual time, for at most rounds_factor x --rounds rounds (the same
  clock), its cosine schedule still over --rounds (`--lr-horizon`), as local's;
- `run_comparison`: every seed and setting (or, score-only, none: the finished runs
  already there), scored on the one yardstick (`comdml_ray.results.yardstick`), with
  `runs.csv`, `summary.csv` and `comparison-<setting>.png` written to the output folder;
- reuse: `finished_run` (a run already there with this configuration) and
  `stopped_run` (one stopped part way, continued from its last checkpoint); `method_config`
  (one method's run configuration, which both running and `run_states` use; `on_locals_clock`
  says which wait for local's run) and
  `comparison_states` (what a reusing comparison would run, running nothing);
- `format_table`: the table printed at the end.
The runs of one seed and setting lie in OUT/SETTING/METHOD (OUT/seedS/SETTING/METHOD
with several seeds): `run_folder`.

May import: `comdml_ray.experiment` and everything below it (the rule: `comdml_ray.LAYERS`).
Ray is started and stopped through `experiment` alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from comdml_ray.config import ConfigError, RunConfig
from comdml_ray.results.yardstick import METHODS, parse_methods, parse_targets, plot_bands, score_runs, summarize, target_level
from comdml_ray.storage import OutDir

SETTINGS = {
    "compute": dict(heterogeneity="paper", slow_link_share=0.0),
    "links": dict(heterogeneity="uniform", slow_link_share=0.5),
}
DEFAULT_METHODS = "local,comdml"
DEFAULT_TARGETS = "75,80,local-best-0.5"
DEFAULT_OUT = os.path.join("results", "compare")


@dataclass(frozen=True)
class ComparePlan:
    """What a comparison runs besides the RunConfig its runs share (see `plan_comparison`)."""

    methods: tuple[str, ...]  # local first when present (local-best targets and the same clock come from it)
    settings: tuple[str, ...]  # keys of SETTINGS
    seeds: tuple[int, ...]
    targets: tuple[str, ...]  # labels as `parse_targets` reads them
    rounds_factor: float = 4.0
    reuse: bool = False  # --reuse-runs
    score_only: bool = False  # --score-only


def plan_comparison(
    cfg: RunConfig,
    methods: str = DEFAULT_METHODS,
    setting: str = "compute",
    rounds_factor: float = 4.0,
    seeds: Sequence[int] | None = None,
    targets: str = DEFAULT_TARGETS,
    reuse: bool = False,
    score_only: bool = False,
) -> ComparePlan:
    """The plan for these choices, as `comdml-ray compare`'s flags give them; ConfigError (one sentence) on a bad one.

    methods and targets are comma-separated (`--algorithms`, `--targets`); setting is
    compute, links or both; seeds default to cfg.seed; cfg.target_acc, if set, is one
    more target.
    """
    chosen = parse_methods(methods)
    settings = list(SETTINGS) if setting == "both" else [setting]
    if any(s not in SETTINGS for s in settings):
        raise ConfigError(f"unknown --setting '{setting}': choose compute, links or both.")
    if rounds_factor < 1:
        raise ConfigError(f"--rounds-factor must be at least 1, got {rounds_factor}.")
    labels = parse_targets(targets)
    if cfg.target_acc is not None:
        labels.append(str(cfg.target_acc))
    if any(t.startswith("local-best") for t in labels) and "local" not in chosen:
        raise ConfigError("a local-best target needs the local method: add local to --algorithms or drop it from --targets.")
    seeds = list(seeds) if seeds is not None else [cfg.seed]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds repeats a seed ({' '.join(map(str, seeds))}); give each seed once.")
    return ComparePlan(tuple(chosen), tuple(settings), tuple(seeds), tuple(labels), rounds_factor, reuse, score_only)


def check_comparison(cfg: RunConfig, plan: ComparePlan) -> None:
    """Before any run: the first method's configuration is valid and the output folder writable (else ConfigError)."""
    cfg.replace(algorithm=METHODS[plan.methods[0]][0]).validate()
    OutDir(cfg.out).check_writable()


def setting_folder(out: str, seed: int, setting: str, several_seeds: bool) -> str:
    """Where the runs of one seed and setting lie: OUT/SETTING, or OUT/seedS/SETTING when the comparison has several seeds."""
    return os.path.join(out, f"seed{seed}", setting) if several_seeds else os.path.join(out, setting)


def run_folder(out: str, plan: ComparePlan, seed: int, setting: str, method: str) -> str:
    """The output folder of one method's run in a comparison written to `out`."""
    return os.path.join(setting_folder(out, seed, setting, len(plan.seeds) > 1), method)


def same_configuration(saved: dict, run_cfg: RunConfig) -> bool:
    """Whether a configuration saved with a run (summary.json, a checkpoint) is run_cfg's.

    A field the saved configuration lacks (the run was made before the field existed)
    matches when this run leaves it at its default: a new field's default keeps the old
    behaviour, so a table's finished runs survive a RunConfig that grew a field.  `out`
    is where the run lies and `resume` where it was continued from, not what it did: a
    folder moved or copied elsewhere, or a run resumed after a stop, still matches.
    """
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


def finished_runs(methods: Sequence[str], out: str) -> tuple[dict, dict] | None:
    """--score-only: the rounds.csv curves and summaries of every method's run in `out`, or None if one has not finished."""
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


def on_locals_clock(cfg: RunConfig, method: str) -> bool:
    """Whether the method's run depends on local's (same work, not equal time): it runs until local's virtual time is spent."""
    return cfg.time_budget_s is None and method != "local"


def method_config(cfg: RunConfig, method: str, out: str, rounds_factor: float, local: dict | None) -> RunConfig:
    """One method's run in a comparison of one seed and setting (cfg), in out/METHOD.

    Equal time (cfg.time_budget_s): the shared configuration with the method's algorithm.
    Otherwise, given local's summary, a method other than local runs until it has spent
    local's virtual time, for at most rounds_factor x --rounds rounds (the same clock).
    """
    algo, flags = METHODS[method]
    run_cfg = cfg.replace(algorithm=algo, out=os.path.join(out, method), **flags)
    if on_locals_clock(cfg, method) and local is not None:
        # Same clock: run until local's virtual training time is spent (more, shorter rounds).
        run_cfg = run_cfg.replace(rounds=int(cfg.rounds * rounds_factor), time_budget_s=local["virtual_time_s"])
        if run_cfg.optimizer_setting("lr_schedule") == "cosine" and cfg.lr_horizon is None:
            run_cfg = run_cfg.replace(lr_horizon=float(cfg.rounds))  # the same schedule as local's, not one stretched over more rounds
    run_cfg.validate()
    return run_cfg


def run_one_setting(cfg: RunConfig, methods: Sequence[str], out: str, rounds_factor: float, log, reuse: bool = False) -> tuple[dict, dict]:
    """Every method of one seed and setting; returns their rounds.csv curves and summaries."""
    from comdml_ray.experiment import run_experiment

    curves: dict[str, pd.DataFrame] = {}
    summaries: dict[str, dict] = {}
    for method in methods:
        run_cfg = method_config(cfg, method, out, rounds_factor, summaries.get("local"))
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


def run_states(cfg: RunConfig, methods: Sequence[str], out: str, rounds_factor: float) -> list[tuple[str, str]]:
    """What `run_one_setting` with reuse would do with each method's run, running nothing: (method, state).

    state: "finished" (reused), "stopped, goes on from round N" (its last checkpoint), "to run",
    or, for a method on local's clock while local's run is not finished, "to run after local".
    """
    states: list[tuple[str, str]] = []
    local: dict | None = None
    for method in methods:
        if on_locals_clock(cfg, method) and "local" in methods and local is None:
            states.append((method, "to run after local"))
            continue
        run_cfg = method_config(cfg, method, out, rounds_factor, local)
        done = finished_run(run_cfg)
        at = stopped_run(run_cfg) if done is None else None
        local = done if method == "local" else local
        states.append((method, "finished" if done is not None else f"stopped, goes on from round {at}" if at is not None else "to run"))
    return states


def comparison_states(cfg: RunConfig, plan: ComparePlan) -> list[tuple[int, str, str, str]]:
    """Every run of a comparison written to cfg.out, and what a reusing run would do with it: (seed, setting, method, state)."""
    return [
        (seed, setting, method, state)
        for seed in plan.seeds
        for setting in plan.settings
        for method, state in run_states(
            cfg.replace(seed=seed, **SETTINGS[setting]),
            plan.methods,
            setting_folder(cfg.out, seed, setting, len(plan.seeds) > 1),
            plan.rounds_factor,
        )
    ]


@dataclass(frozen=True, eq=False)
class Scores:
    """What a comparison wrote: `runs` (runs.csv: seed x setting x method x target) and `summary` (summary.csv: over seeds)."""

    runs: pd.DataFrame
    summary: pd.DataFrame


def run_comparison(cfg: RunConfig, plan: ComparePlan, log=print) -> Scores:
    """Run everything into cfg.out (score-only: nothing, score what is there); write runs.csv, summary.csv and the band plots."""
    out = cfg.out
    targets = list(plan.targets) or ["local-best-0.5"]
    rows: list[dict] = []
    bands: dict[str, dict[str, list[pd.DataFrame]]] = {s: {m: [] for m in plan.methods} for s in plan.settings}
    levels: dict[str, dict[str, list[float]]] = {s: {t: [] for t in targets} for s in plan.settings}
    try:
        for seed in plan.seeds:
            for setting in plan.settings:
                where = setting_folder(out, seed, setting, len(plan.seeds) > 1)
                if plan.score_only:
                    done = finished_runs(plan.methods, where)
                    if done is None:
                        log(f"seed {seed}, {setting}: left out, not every method's run in {where} has finished")
                        continue
                    curves, summaries = done
                else:
                    curves, summaries = run_one_setting(
                        cfg.replace(seed=seed, **SETTINGS[setting]), plan.methods, where, plan.rounds_factor, log, plan.reuse
                    )
                rows += score_runs(seed, setting, curves, summaries, targets)
                for m, c in curves.items():
                    bands[setting][m].append(c)
                for t in targets:
                    levels[setting][t].append(target_level(t, curves.get("local")))
    finally:
        if not plan.score_only:
            from comdml_ray.experiment import stop_ray

            stop_ray(cfg)
    if not rows:
        raise ConfigError(
            f"no seed and setting in {out} has a finished run of every method: run the comparison first (without --score-only)."
        )
    runs = pd.DataFrame(rows)
    runs.to_csv(os.path.join(out, "runs.csv"), index=False)
    summary = summarize(runs)
    summary.to_csv(os.path.join(out, "summary.csv"), index=False)
    for setting in plan.settings:
        if not levels[setting][targets[0]]:
            continue  # --score-only: no finished seed in this setting
        mean_levels = {t: float(pd.Series(v).mean()) for t, v in levels[setting].items()}
        plot_bands(bands[setting], os.path.join(out, f"comparison-{setting}.png"), mean_levels)
    log("\n" + format_table(summary))
    log(f"\nwritten: {os.path.join(out, 'runs.csv')}, summary.csv and comparison-<setting>.png")
    return Scores(runs, summary)


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
