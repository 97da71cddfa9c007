"""The round's reducer: the groups' reports become rows without passing through the driver.

Owns `RoundReducer`, a small Ray actor (no CPU reserved, no torch imported) pinned to
the driver's node.  Every synchronous round the driver hands it the refs of the
groups' reports (and of the plan, for ComDML); Ray moves those reports from the
actors to it, it runs the virtual clock (`rows.sync_round_rows`), appends the round's
rows to agents.csv and plan.csv in the output folder (flushed, so they survive an
aborted run), forwards each actor its agents' dashboard metrics, and returns only the
round's one `RoundRow`.  So what the driver receives per round does not grow with
the number of agents: it is O(actors) digests and one row.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from typing import Any

import ray

from comdml_ray.messages import PhaseReport
from comdml_ray.rows import AgentRow, ClockSplits, PlanRow, RoundRow, sync_round_rows
from comdml_ray.setting import Setting
from comdml_ray.telemetry import with_idle_share

SYNC_AGENT_COLUMNS = [f.name for f in dataclasses.fields(AgentRow) if f.name not in ("steps", "test_accuracy")]
PLAN_COLUMNS = [f.name for f in dataclasses.fields(PlanRow)]


class RoundReducer:
    """Turns one round's reports into rows, appends them to the output folder, returns the round's row."""

    def __init__(self, setting: Setting, splits: ClockSplits, aggregation: str, out_dir: str, hosts: list):
        self.setting, self.splits, self.aggregation = setting, splits, aggregation
        self.hosts = hosts
        self.owner = setting.owner
        os.makedirs(out_dir, exist_ok=True)
        self.files = {name: open(os.path.join(out_dir, name), "w", newline="") for name in ("agents.csv", "plan.csv")}
        self.writers = {
            "agents.csv": csv.DictWriter(self.files["agents.csv"], SYNC_AGENT_COLUMNS, extrasaction="ignore"),
            "plan.csv": csv.DictWriter(self.files["plan.csv"], PLAN_COLUMNS),
        }
        self.headers: set[str] = set()

    def reduce(self, r: int, round_start: float, plan: Any, *reports: PhaseReport) -> RoundRow:
        row, agent_rows, plan_rows = sync_round_rows(r, self.setting, self.splits, self.aggregation, list(reports), plan)
        wall = time.time() - round_start  # the driver's round start: same node, same clock
        for a in agent_rows:
            a.wall_time_s = wall
        self._append("agents.csv", agent_rows)
        self._append("plan.csv", plan_rows)
        by_group: dict[int, list[dict]] = {}
        rows = [{k: v for k, v in dataclasses.asdict(a).items() if v is not None} for a in agent_rows]
        for a in with_idle_share(rows):
            by_group.setdefault(self.owner[a["agent"]], []).append(a)
        for g, rows in by_group.items():
            self.hosts[g].record_metrics.remote(rows, None)
        return row

    def _append(self, name: str, rows: list) -> None:
        if not rows:
            return
        w = self.writers[name]
        if name not in self.headers:
            w.writeheader()
            self.headers.add(name)
        w.writerows(dataclasses.asdict(x) for x in rows)
        self.files[name].flush()

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        if "plan.csv" not in self.headers:
            os.remove(self.files["plan.csv"].name)


RoundReducerActor = ray.remote(num_cpus=0)(RoundReducer)
