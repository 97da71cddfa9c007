"""Results as data: the files of a run's output folder and the summary a user reads.

Owns the output folder's files -- `rounds.csv` (one row per round), `agents.csv`
(per round and agent), `plan.csv` (ComDML: partner, split, predicted and simulated
finish, bytes offloaded), `profile.csv` (the split profile), `summary.json` and
`accuracy.png` (test accuracy against the run's clock: virtual, or wall under `--clock wall`) -- plus `time_to_target` and
the short table printed at the end of a run.  pandas and matplotlib only.
The CSVs grow row by row as the run goes (`storage.RowFile`: the driver appends
rounds.csv, the round's reducer or the event loops' recorder agents.csv and
plan.csv); `read_rounds` reads rounds.csv back and `write_summary` writes
summary.json and accuracy.png from it, at the end or on an abort.
Columns of rounds.csv: `DETERMINISTIC_COLUMNS` are the same for the same seed and
settings, however the run was stopped, resumed or recovered; the others measure
this machine (wall, driver, checkpoint, failure figures).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from comdml_ray.storage import OutDir, read_rows

ROUND_COLUMNS = [
    "round",
    "virtual_time_s",
    "wall_time_s",
    "train_loss",
    "test_accuracy",
    "consensus_accuracy",
    "bytes_sent",
    "round_virtual_s",
    "round_wall_s",
    "bytes_offloaded",
    "pairs",
    "driver_calls",
    "driver_bytes",
    "driver_cpu_s",
    "checkpoint_s",
    "failures",
    "failed_agents",
    "lost_wall_s",
    "lost_nodes",
    "eval_images",
    "eval_wall_s",  # test images test_accuracy is on (subset or whole set), and the evaluation's wall seconds
]
WALL_ROUND_COLUMNS = ["eval_wall_s"]  # --clock wall only (a virtual-clock run's rounds.csv keeps the columns above)
DETERMINISTIC_COLUMNS = [
    "round",
    "virtual_time_s",
    "train_loss",
    "test_accuracy",
    "bytes_sent",
    "round_virtual_s",
    "bytes_offloaded",
    "pairs",
]


def frame(rows: list) -> pd.DataFrame:
    """A DataFrame of result rows (dataclasses of `comdml_ray.results.rows`); columns with no value (None) dropped."""
    df = pd.DataFrame([dataclasses.asdict(r) for r in rows])
    return df.dropna(axis=1, how="all") if len(df) else df


def time_column(clock: str) -> str:
    """The cumulative-time column a run is judged by: the clock's (`--clock`)."""
    return "wall_time_s" if clock == "wall" else "virtual_time_s"


def time_to_target(rounds: pd.DataFrame, target: float | None, clock: str = "virtual") -> float | None:
    """Seconds on the run's clock at the end of the first evaluated round whose accuracy reaches target."""
    if target is None:
        return None
    hit = rounds[rounds["test_accuracy"] >= target - 1e-12]
    return None if hit.empty else float(hit[time_column(clock)].iloc[0])


def read_csv(out: OutDir, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    """One CSV of the output folder as written so far (an empty frame with `columns` if it is not there yet); empty cells are NaN."""
    data = read_rows(out, name)  # the file, or an object store's parts as one table
    if data is None:
        return pd.DataFrame(columns=columns)
    return pd.read_csv(io.BytesIO(data), keep_default_na=False, na_values=[""])


def read_rounds(out: OutDir) -> pd.DataFrame:
    """rounds.csv as written so far (empty frame if no round finished)."""
    return read_csv(out, "rounds.csv", ROUND_COLUMNS)


def write_summary(out: OutDir, rounds: pd.DataFrame, summary: dict, title: str) -> None:
    """summary.json, and accuracy.png from the rounds so far."""
    out.write_text("summary.json", json.dumps(summary, indent=2, default=_json_default))
    buf = io.BytesIO()
    plot_accuracy({title: rounds}, buf, summary.get("target_acc"), summary.get("clock", "virtual"))
    out.write_bytes("accuracy.png", buf.getvalue())


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(type(o).__name__)


def plot_accuracy(curves: dict[str, pd.DataFrame], path, target: float | None = None, clock: str = "virtual") -> None:
    """Test accuracy against the run's clock (virtual or wall time), one line per run."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, df in curves.items():
        d = df.dropna(subset=["test_accuracy"])
        ax.plot(d[time_column(clock)], 100 * d["test_accuracy"], marker="o", ms=3, label=label)
    if target:
        ax.axhline(100 * target, color="grey", ls="--", lw=1, label=f"target {100 * target:.1f}%")
    ax.set_xlabel("wall-clock training time (s)" if clock == "wall" else "virtual training time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def _eval_sets(summary: dict) -> str:
    """Which test images the evaluations used: a subset before the last, or the whole set every time (--eval-samples 0)."""
    sub, whole = summary.get("eval_subset_images"), summary.get("final_accuracy_images")
    if sub is not None and sub == whole:
        return f"every evaluation on the whole test set, {whole} images"
    return f"rounds before the last: a fixed subset of {sub if sub is not None else '?'} test images"


def format_summary(summary: dict) -> str:
    def fmt(v, unit=""):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.1f}{unit}" if isinstance(v, float) else f"{v}{unit}"

    acc = summary.get("final_accuracy")
    tgt = summary.get("target_acc")
    share = summary.get("eval_share")
    lines = [
        f"algorithm            {summary['algorithm']} ({summary['agents']} agents, {summary['rounds']} rounds, {summary['aggregation']})",
        f"final test accuracy  {fmt(None if acc is None else 100 * acc, '%')}  ({summary.get('evaluated', 'averaged model')}, {summary['dataset']} test set, {summary.get('final_accuracy_images', '?')} images)",
        f"evaluation           {fmt(summary.get('eval_wall_s'), ' s')} wall, {fmt(None if share is None else 100 * share, '%')} of the rounds' wall time  "
        f"({_eval_sets(summary)})",
        f"virtual time         {fmt(summary['virtual_time_s'], ' s')}  (simulated training time under the heterogeneity profile)",
        f"wall time            {fmt(summary['wall_time_s'], ' s')}  (real time of the rounds on this cluster)",
        f"start-up             {fmt(summary['startup_s'], ' s')}  (Ray start, actors, data, profiling)",
        f"peak memory          {fmt(summary['peak_memory_mb'], ' MB')}  (PSS of the driver and its local Ray processes)",
        f"driver per round     {summary['driver_calls_per_round']:.0f} remote calls, {summary['driver_bytes_per_round'] / 1024:.1f} KB received, "
        f"{summary['driver_cpu_s_per_round']:.2f} s CPU  (its work grows with actors, not agents)",
    ]
    if tgt is not None:
        lines.append(
            f"time to {100 * tgt:.1f}%        {fmt(summary.get('time_to_target_s'), ' s')}  ({summary.get('clock', 'virtual')}; '-' = not reached)"
        )
    lines.append(f"results              {summary['out']}")
    return "\n".join(lines)
