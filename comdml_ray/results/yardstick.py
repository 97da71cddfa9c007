"""One yardstick for every method: targets, time-to-target, accuracy at equal virtual time, seeds.

Owns the pure part of `benchmarks/compare.py` (pandas, numpy, matplotlib; no torch, no Ray):
- `METHODS`: the rows a comparison can have -- an algorithm plus the flags that make the
  variant (`local-gossip` / `comdml-gossip`: Metropolis-Hastings gossip on the baselines'
  `--topology` instead of the exact all-reduce; `comdml-greedy` / `comdml-exact`: the scheduler);
- `parse_targets`: fixed accuracy levels and `local-best-D` (local's best accuracy over
  its run, on its smoothed curve, minus D points, computed per seed);
- `score_runs`: one row per (seed, setting, method, target) from the runs' rounds.csv
  curves: time to the target on the yardstick column `test_accuracy` (mean over the same
  seeded sample of agents' own models for every method), raw (the first evaluation at or
  above it) and smoothed (`smoothed`: the first at which the mean of the last
  SMOOTH_EVALS evaluations is), each with its ratio to local's; final and best accuracy;
  accuracy at the common virtual time of the seed's runs and, in an equal-time run
  (`--time-budget`), at a quarter, half and all of the budget; and whether local's run
  was long enough (at least 3x the rounds local took to plateau);
- `bootstrap_ci`: the percentile bootstrap interval of a mean over seeds;
- `summarize`: mean and std over seeds, with how many seeds reached each target;
- `plot_bands`: accuracy against virtual time, the mean over seeds and a +-1 std band per method.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from comdml_ray.config import ConfigError

# method -> (algorithm, RunConfig overrides)
METHODS: dict[str, tuple[str, dict]] = {
    "local": ("local", {}),
    "comdml": ("comdml", {}),
    "local-deadline": ("local-deadline", {}),
    "dpsgd": ("dpsgd", {}),
    "adpsgd": ("adpsgd", {}),
    "swift": ("swift", {}),
    "divshare": ("divshare", {}),
    "local-gossip": ("local", {"aggregation": "gossip"}),
    "comdml-gossip": ("comdml", {"aggregation": "gossip"}),
    "comdml-greedy": ("comdml", {"scheduler": "greedy"}),
    "comdml-exact": ("comdml", {"scheduler": "exact"}),
}
ALL_METHODS = ("local", "comdml", "local-deadline", "local-gossip", "comdml-gossip", "dpsgd", "adpsgd", "swift", "divshare")
PLATEAU_PP = 0.5  # local has plateaued once within this many points of its best
SMOOTH_EVALS = 3  # smoothed time-to-target: the first evaluation at which the mean of the last this-many evaluations reaches the target
BUDGET_FRACTIONS = {"quarter_budget": 0.25, "half_budget": 0.5, "budget": 1.0}  # equal-time tables: accuracy at these shares of the budget
LONG_RUN_FACTOR = 3  # a long run lasts at least this many times the rounds it took to plateau


def parse_methods(spec: str) -> list[str]:
    names = list(ALL_METHODS) if spec == "all" else [x.strip() for x in spec.split(",") if x.strip()]
    bad = [x for x in names if x not in METHODS]
    if bad or not names:
        raise ConfigError(f"unknown method(s) {', '.join(bad) or '(none)'} in --algorithms: choose from {', '.join(METHODS)} or 'all'.")
    return ["local"] + [m for m in names if m != "local"] if "local" in names else names


def parse_targets(spec: str) -> list[str]:
    """Targets as labels: '75' (75%), '0.8' (80%), 'local-best-0.5' (local's best minus 0.5 points)."""
    out = []
    for x in (s.strip() for s in spec.split(",") if s.strip()):
        if x.startswith("local-best-"):
            _number(x[len("local-best-") :], x)
        else:
            v = _number(x, x)
            if not 0 < (v / 100 if v > 1 else v) <= 1:
                raise ConfigError(f"target '{x}' in --targets is not an accuracy: give e.g. 75 (percent), 0.75 or local-best-0.5.")
        out.append(x)
    if not out:
        raise ConfigError("--targets is empty: give e.g. 75,80,local-best-0.5.")
    return out


def _number(s: str, whole: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise ConfigError(f"target '{whole}' in --targets is not a number or local-best-D: give e.g. 75,80,local-best-0.5.") from None


def target_level(label: str, local_curve: pd.DataFrame | None) -> float:
    """The accuracy (fraction) a target label stands for in one seed's comparison (NaN without local)."""
    if label.startswith("local-best-"):
        if local_curve is None:
            return math.nan
        # local's best on its smoothed curve (so local reaches its own target on the curve times are read from);
        # a run with fewer evaluations than the smoothing window takes its raw best
        s = smoothed(local_curve)
        best = (s if len(s) else evaluated(local_curve))["test_accuracy"].max()
        return float(best) - float(label[len("local-best-") :]) / 100
    v = float(label)
    return v / 100 if v > 1 else v


def evaluated(curve: pd.DataFrame) -> pd.DataFrame:
    return curve.dropna(subset=["test_accuracy"])


def time_to(curve: pd.DataFrame, level: float) -> float:
    """Virtual seconds of the first evaluation at or above level (NaN if never)."""
    d = evaluated(curve)
    hit = d[d["test_accuracy"] >= level - 1e-12]
    return float(hit["virtual_time_s"].iloc[0]) if len(hit) and not math.isnan(level) else math.nan


def smoothed(curve: pd.DataFrame) -> pd.DataFrame:
    """The evaluated rows with test_accuracy replaced by the mean of the last SMOOTH_EVALS evaluations (the first SMOOTH_EVALS-1 dropped)."""
    d = evaluated(curve)
    return d.assign(test_accuracy=d["test_accuracy"].rolling(SMOOTH_EVALS).mean()).dropna(subset=["test_accuracy"])


def sweep_time(runs: pd.DataFrame, who: str) -> pd.Series:
    """A sensitivity or fleet sweep's time to target for who (local, comdml, deadline): on the smoothed curve where
    the sweep recorded it (`WHO_time_smoothed_s`), else the raw first crossing (`WHO_time_s`, sweeps made before)."""
    col = f"{who}_time_smoothed_s"
    return runs[col] if col in runs else runs[f"{who}_time_s"]


def reduction(time: float, local_time: float) -> str:
    """How much less time than local's, in whole percent ("33%"; "-33%" when longer; never "-0%")."""
    return f"{round(100 * (1 - time / local_time))}%"


def bootstrap_ci(values, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (seeds resampled with replacement; NaN for fewer than 2 values)."""
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if len(v) < 2:
        return math.nan, math.nan
    means = np.random.default_rng(seed).choice(v, size=(resamples, len(v)), replace=True).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def accuracy_at(curve: pd.DataFrame, t: float) -> float:
    """The last evaluated accuracy at or before virtual time t (NaN if none)."""
    d = evaluated(curve)
    d = d[d["virtual_time_s"] <= t + 1e-9]
    return float(d["test_accuracy"].iloc[-1]) if len(d) else math.nan


def plateau_round(curve: pd.DataFrame) -> int:
    """Rounds until the curve first comes within PLATEAU_PP points of its best (1-based)."""
    d = evaluated(curve)
    best = d["test_accuracy"].max()
    return int(d[d["test_accuracy"] >= best - PLATEAU_PP / 100 - 1e-12]["round"].iloc[0]) + 1


def score_runs(seed: int, setting: str, curves: dict[str, pd.DataFrame], summaries: dict[str, dict], targets: list[str]) -> list[dict]:
    """One row per (method, target) of one seed and setting; curves are the runs' rounds.csv."""
    local = curves.get("local")
    common_t = min(float(c["virtual_time_s"].iloc[-1]) for c in curves.values())
    plateau = plateau_round(local) if local is not None else None
    rows = []
    for label in targets:
        level = target_level(label, local)
        base = time_to(local, level) if local is not None else math.nan
        base_smooth = time_to(smoothed(local), level) if local is not None else math.nan
        for method, curve in curves.items():
            d, s = evaluated(curve), summaries[method]
            ttt, smooth = time_to(curve, level), time_to(smoothed(curve), level)
            budget = (s.get("config") or {}).get("time_budget_s")
            at_budget = {
                f"accuracy_at_{name}": accuracy_at(curve, share * budget) if budget else math.nan
                for name, share in BUDGET_FRACTIONS.items()
            }
            rows.append(
                {
                    "seed": seed,
                    "setting": setting,
                    "method": method,
                    "target": label,
                    "target_accuracy": level,
                    "time_to_target_s": ttt,
                    "ratio_vs_local": ttt / base if base > 0 else math.nan,
                    "time_to_target_smoothed_s": smooth,
                    "ratio_vs_local_smoothed": smooth / base_smooth if base_smooth > 0 else math.nan,
                    "time_budget_s": float(budget) if budget else math.nan,
                    **at_budget,
                    "final_accuracy": float(d["test_accuracy"].iloc[-1]),
                    "best_accuracy": float(d["test_accuracy"].max()),
                    "final_consensus_accuracy": float(d["consensus_accuracy"].iloc[-1]) if "consensus_accuracy" in d else math.nan,
                    "common_time_s": common_t,
                    "accuracy_at_common_time": accuracy_at(curve, common_t),
                    "rounds": len(curve),
                    "virtual_time_s": float(curve["virtual_time_s"].iloc[-1]),
                    "wall_time_s": float(s["wall_time_s"]),
                    "bytes_sent": int(s["bytes_sent"]),
                    "local_plateau_round": plateau,
                    "local_rounds": len(local) if local is not None else None,
                    "local_long_enough": bool(len(local) >= LONG_RUN_FACTOR * plateau) if local is not None else None,
                }
            )
    return rows


SUMMARY_VALUES = (
    "target_accuracy",
    "time_to_target_s",
    "ratio_vs_local",
    "final_accuracy",
    "accuracy_at_common_time",
    "virtual_time_s",
    "wall_time_s",
    "rounds",
)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (setting, method, target); `reached` = seeds that reached the target."""
    keys = ["setting", "method", "target"]
    g = runs.groupby(keys, sort=False)
    out = g.size().rename("seeds").to_frame()
    out["reached"] = g["time_to_target_s"].apply(lambda s: int(s.notna().sum()))
    for col in SUMMARY_VALUES:
        out[f"{col}_mean"] = g[col].mean()
        out[f"{col}_std"] = g[col].std(ddof=1)
    return out.reset_index()


def plot_bands(curves: dict[str, list[pd.DataFrame]], path: str, targets: dict[str, float] | None = None) -> None:
    """Accuracy against virtual time: mean over seeds (line) and +-1 std (band), per method.

    Each seed's curve is read as a step function (last evaluation so far) on a common grid
    that ends at the shortest seed's end, so every point averages all seeds.
    """
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    for method, runs in curves.items():
        ds = [evaluated(c) for c in runs]
        end = min(float(d["virtual_time_s"].iloc[-1]) for d in ds)
        start = max(float(d["virtual_time_s"].iloc[0]) for d in ds)
        grid = np.linspace(start, end, 200)
        ys = np.array([[accuracy_at(d, t) for t in grid] for d in ds]) * 100
        mean, std = ys.mean(axis=0), ys.std(axis=0, ddof=1) if len(ds) > 1 else np.zeros(len(grid))
        (line,) = ax.plot(grid, mean, lw=1.4, label=f"{method} ({len(ds)} seeds)")
        ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    for label, level in (targets or {}).items():
        if not math.isnan(level):
            ax.axhline(100 * level, color="grey", ls="--", lw=0.8)
            ax.annotate(label, (ax.get_xlim()[0], 100 * level), fontsize=7, color="grey", va="bottom")
    finish_log_x_plot(fig, ax, path, "virtual training time (s, log scale)", "test accuracy (%), mean over the scored agents")


def finish_log_x_plot(fig, ax, path, xlabel: str, ylabel: str) -> None:
    """Log x axis, labels, grid and legend; save the figure to `path` and close it."""
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
