"""The Python API: `run` one experiment or `compare` methods, and get typed results back.

    from comdml_ray import RunConfig, run, compare
    result = run(RunConfig(algorithm="comdml", agents=8, rounds=3, out="results/from-python"))
    result.final_accuracy, result.virtual_time_s, result.rounds, result.agents()
    result = run(agents=8, rounds=3)                 # keyword fields override the config's (or the defaults)
    cmp = compare(agents=20, methods="local,comdml", seeds=[0, 1], out="results/cmp")
    cmp.summary, cmp.run_folders[(0, "compute", "comdml")], cmp.run_result("comdml")

Owns
- `run(config, /, **fields) -> RunResult`: `experiment.run_experiment` on the config with
  the fields replaced (`dataclasses.replace`; the caller's config is never changed), then
  the run's output folder read back;
- `RunResult`: one run as written to its output folder (`RunResult.load(out)` reads any
  finished run's folder, a URI too, through `comdml_ray.storage`): rounds.csv as a
  DataFrame, the headline figures, everything summary.json holds, and agents.csv on demand;
- `compare(config, /, *, methods, setting, seeds, targets, ...) -> CompareResult`: what
  `comdml-ray compare` does (`comdml_ray.comparison`), with its flags as keywords;
- `CompareResult`: the scored tables (runs.csv, summary.csv) and every run's folder.
A bad setting raises `ConfigError` (a `ValueError`, one sentence naming the fix) before
anything starts; a missing dataset `learning.data.DatasetError`.  Ray and torch are
imported when a run starts, not with this module.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from comdml_ray.comparison import (
    DEFAULT_METHODS,
    DEFAULT_OUT,
    DEFAULT_TARGETS,
    ComparePlan,
    check_comparison,
    plan_comparison,
    run_comparison,
    run_folder,
)
from comdml_ray.config import ConfigError, RunConfig
from comdml_ray.results.report import read_csv, read_rounds
from comdml_ray.storage import OutDir

_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


@dataclass(frozen=True, eq=False)
class RunResult:
    """One finished run, as its output folder holds it (accuracies are fractions, times seconds)."""

    out: str  # the output folder: an absolute path, or the URI it was given as
    config: RunConfig = field(repr=False)  # the run's configuration as summary.json saved it (after --resume: the resumed run's)
    rounds: pd.DataFrame = field(repr=False)  # rounds.csv: one row per round (or, asynchronous methods, per epochs-equivalent)
    final_accuracy: float  # test accuracy of the last evaluation, on the whole test set (NaN if none)
    best_accuracy: float  # the best evaluation of the run (NaN if none)
    virtual_time_s: float  # the virtual clock at the end (simulated training time under the heterogeneity profile)
    wall_time_s: float  # real seconds of the rounds (start-up excluded: summary["total_wall_s"] has it)
    time_to_target_s: float | None  # on the run's clock, to config.target_acc; None without a target or if not reached
    summary: dict = field(repr=False)  # everything summary.json holds

    @classmethod
    def load(cls, out: str) -> RunResult:
        """Read a finished run's output folder (a local path or a URI such as s3://bucket/run)."""
        folder = OutDir(out)
        if not folder.exists("summary.json"):
            raise ConfigError(f"{folder.uri} has no summary.json: give the output folder (--out) of a run that has finished.")
        summary = json.loads(folder.read_text("summary.json"))
        return cls(
            out=folder.uri,
            config=RunConfig.from_saved(summary.get("config") or {}),
            rounds=read_rounds(folder),
            final_accuracy=_fraction(summary.get("final_accuracy")),
            best_accuracy=_fraction(summary.get("best_accuracy")),
            virtual_time_s=float(summary.get("virtual_time_s") or 0.0),
            wall_time_s=float(summary.get("wall_time_s") or 0.0),
            time_to_target_s=None if summary.get("time_to_target_s") is None else float(summary["time_to_target_s"]),
            summary=summary,
        )

    def agents(self) -> pd.DataFrame:
        """agents.csv: one row per round and agent, read from the output folder at each call (rounds x agents rows)."""
        return read_csv(OutDir(self.out), "agents.csv")


def run(config: RunConfig | None = None, /, **fields) -> RunResult:
    """Run one experiment to the end and return what it wrote; fields override the config's (`run(agents=8, rounds=3)`).

    Starts a Ray of its own (and stops it after) unless config.address joins a cluster;
    writes the output folder config.out (default results/<timestamp>).  Raises
    ConfigError on a bad setting, before anything starts.
    """
    cfg = with_fields(config, fields).validate()
    from comdml_ray.experiment import run_experiment

    summary = run_experiment(cfg)
    return RunResult.load(summary["out"])


@dataclass(frozen=True, eq=False)
class CompareResult:
    """A finished comparison: its scored tables and where each run lies."""

    out: str  # the comparison's output folder (runs.csv, summary.csv, comparison-<setting>.png, one folder per run)
    config: RunConfig = field(repr=False)  # what every run shares (each method's run sets its algorithm, seed and setting)
    plan: ComparePlan  # methods, settings, seeds, targets, rounds_factor
    runs: pd.DataFrame = field(repr=False)  # runs.csv: one row per seed, setting, method and target
    summary: pd.DataFrame = field(repr=False)  # summary.csv: the scored table, mean and std over seeds per setting, method and target
    run_folders: dict[tuple[int, str, str], str] = field(repr=False)  # (seed, setting, method) -> that run's output folder

    def run_result(self, method: str, setting: str | None = None, seed: int | None = None) -> RunResult:
        """One method's run (default: the first setting and seed of the plan), read back from its folder."""
        key = (self.plan.seeds[0] if seed is None else seed, self.plan.settings[0] if setting is None else setting, method)
        if key not in self.run_folders:
            raise ConfigError(
                f"the comparison has no run for seed {key[0]}, setting {key[1]}, method {key[2]}: "
                f"choose from {', '.join(f'{s}/{t}/{m}' for s, t, m in self.run_folders)} (seed/setting/method)."
            )
        return RunResult.load(self.run_folders[key])


def compare(
    config: RunConfig | None = None,
    /,
    *,
    methods: str | Sequence[str] = DEFAULT_METHODS,
    setting: str = "compute",
    seeds: Sequence[int] | None = None,
    targets: str | Sequence[str | float] = DEFAULT_TARGETS,
    rounds_factor: float = 4.0,
    reuse_runs: bool = False,
    score_only: bool = False,
    **fields,
) -> CompareResult:
    """Run every method on the same seeds, data, clock and yardstick, as `comdml-ray compare`; fields override the config's.

    The keywords are `comdml-ray compare`'s own flags: methods (`--algorithms`, a list or
    comma-separated), setting (compute, links or both), seeds (default: config.seed),
    targets (75, 0.8, local-best-0.5), rounds_factor, reuse_runs, score_only.  The output
    folder is config.out, default results/compare.  Raises ConfigError on a bad choice,
    before any run starts.
    """
    cfg = with_fields(config, fields)
    cfg = cfg if cfg.out is not None else cfg.replace(out=DEFAULT_OUT)
    plan = plan_comparison(cfg, _commas(methods), setting, rounds_factor, seeds, _commas(targets), reuse_runs, score_only)
    check_comparison(cfg, plan)
    scores = run_comparison(cfg, plan)
    out = OutDir(cfg.out).uri
    keys = scores.runs[["seed", "setting", "method"]].drop_duplicates().itertuples(index=False)
    folders = {(int(seed), setting, method): run_folder(out, plan, int(seed), setting, method) for seed, setting, method in keys}
    return CompareResult(out=out, config=cfg, plan=plan, runs=scores.runs, summary=scores.summary, run_folders=folders)


def with_fields(config: RunConfig | None, fields: dict) -> RunConfig:
    """A copy of config (default: RunConfig()) with fields replaced; ConfigError names a field RunConfig lacks."""
    if config is None:
        config = RunConfig()
    elif not isinstance(config, RunConfig):
        raise TypeError(f"expected a RunConfig, got {type(config).__name__}; give settings as keywords instead, e.g. run(agents=8).")
    for name in fields:
        if name not in _FIELDS:
            close = difflib.get_close_matches(name, _FIELDS, n=1)
            raise ConfigError(
                f"RunConfig has no field '{name}'"
                + (f": did you mean '{close[0]}'?" if close else "; its fields are listed in comdml_ray/config.py.")
            )
    return dataclasses.replace(config, **fields)


def _fraction(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _commas(value: str | Sequence) -> str:
    return value if isinstance(value, str) else ",".join(str(v) for v in value)
