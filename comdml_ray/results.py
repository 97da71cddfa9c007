"""Results as data: the files of a run's output folder and the summary a user reads.

Owns the output folder's files -- `rounds.csv` (one row per round), `agents.csv`
(per round and agent), `plan.csv` (ComDML: partner, split, predicted and simulated
finish, bytes offloaded), `profile.csv` (the split profile), `summary.json` and
`accuracy.png` (test accuracy against virtual time) -- plus `time_to_target` and
the short table printed at the end of a run.  pandas and matplotlib only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

ROUND_COLUMNS = [
    "round", "virtual_time_s", "wall_time_s", "train_loss", "test_accuracy", "consensus_accuracy", "bytes_sent",
    "round_virtual_s", "round_wall_s", "bytes_offloaded", "pairs", "driver_calls", "driver_bytes", "driver_cpu_s",
]


def frame(rows: list) -> pd.DataFrame:
    """A DataFrame of result rows (dataclasses of `comdml_ray.rows`); columns with no value (None) dropped."""
    df = pd.DataFrame([dataclasses.asdict(r) for r in rows])
    return df.dropna(axis=1, how="all") if len(df) else df


def time_to_target(rounds: pd.DataFrame, target: float | None) -> float | None:
    """Virtual seconds at the end of the first evaluated round whose accuracy reaches target."""
    if target is None:
        return None
    hit = rounds[rounds["test_accuracy"] >= target - 1e-12]
    return None if hit.empty else float(hit["virtual_time_s"].iloc[0])


def write_outputs(out_dir: str, rounds: pd.DataFrame, agents: pd.DataFrame | None, plan: pd.DataFrame | None, summary: dict, title: str) -> None:
    """Write the run's files; agents/plan None: already written round by round (the synchronous reducer)."""
    os.makedirs(out_dir, exist_ok=True)
    rounds.reindex(columns=ROUND_COLUMNS).to_csv(os.path.join(out_dir, "rounds.csv"), index=False)
    if agents is not None:
        agents.to_csv(os.path.join(out_dir, "agents.csv"), index=False)
    if plan is not None and not plan.empty:
        plan.to_csv(os.path.join(out_dir, "plan.csv"), index=False)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=_json_default)
    plot_accuracy({title: rounds}, os.path.join(out_dir, "accuracy.png"), summary.get("target_acc"))


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(type(o).__name__)


def plot_accuracy(curves: dict[str, pd.DataFrame], path: str, target: float | None = None) -> None:
    """Test accuracy against virtual time, one line per run."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, df in curves.items():
        d = df.dropna(subset=["test_accuracy"])
        ax.plot(d["virtual_time_s"], 100 * d["test_accuracy"], marker="o", ms=3, label=label)
    if target:
        ax.axhline(100 * target, color="grey", ls="--", lw=1, label=f"target {100 * target:.1f}%")
    ax.set_xlabel("virtual training time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_summary(summary: dict) -> str:
    def fmt(v, unit=""):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.1f}{unit}" if isinstance(v, float) else f"{v}{unit}"

    acc = summary.get("final_accuracy")
    tgt = summary.get("target_acc")
    lines = [
        f"algorithm            {summary['algorithm']} ({summary['agents']} agents, {summary['rounds']} rounds, {summary['aggregation']})",
        f"final test accuracy  {fmt(None if acc is None else 100 * acc, '%')}  ({summary.get('evaluated', 'averaged model')}, {summary['dataset']} test set)",
        f"virtual time         {fmt(summary['virtual_time_s'], ' s')}  (simulated training time under the heterogeneity profile)",
        f"wall time            {fmt(summary['wall_time_s'], ' s')}  (real time of the rounds on this cluster)",
        f"start-up             {fmt(summary['startup_s'], ' s')}  (Ray start, actors, data, profiling)",
        f"peak memory          {fmt(summary['peak_memory_mb'], ' MB')}  (PSS of the driver and its local Ray processes)",
        f"driver per round     {summary['driver_calls_per_round']:.0f} remote calls, {summary['driver_bytes_per_round'] / 1024:.1f} KB received, "
        f"{summary['driver_cpu_s_per_round']:.2f} s CPU  (its work grows with actors, not agents)",
    ]
    if tgt is not None:
        lines.append(f"time to {100 * tgt:.1f}%        {fmt(summary.get('time_to_target_s'), ' s')}  (virtual; '-' = not reached)")
    lines.append(f"results              {summary['out']}")
    return "\n".join(lines)
