"""The round's reducer: the groups' reports become rows without passing through the driver.

Owns `RoundReducer`, a small Ray actor (no CPU reserved, no torch imported) pinned to
the driver's node.  Every synchronous round the driver hands it the refs of the
groups' reports (and of the plan, for ComDML); Ray moves those reports from the
actors to it, it runs the virtual clock (`rows.sync_round_rows`), appends the round's
rows to agents.csv and plan.csv in the output folder (`storage.RowFile`: flushed, so
they survive an aborted run; any pyarrow filesystem), forwards each actor its agents'
dashboard metrics, and returns only the round's one `RoundRow`.  After a lost actor
or on resume, `rewind(r)` cuts both files back to the rounds before r.  So what the driver receives per round does not grow with
the number of agents: it is O(actors) digests and one row.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ray

from comdml_ray.messages import PhaseReport
from comdml_ray.rows import AgentRow, ClockSplits, PlanRow, RoundRow, sync_round_rows
from comdml_ray.setting import Setting
from comdml_ray.telemetry import with_idle_share
from comdml_ray.storage import OutDir, RowFile

SYNC_AGENT_COLUMNS = [f.name for f in dataclasses.fields(AgentRow) if f.name not in ("steps", "test_accuracy")]
PLAN_COLUMNS = [f.name for f in dataclasses.fields(PlanRow)]


class RoundReducer:
    """Turns one round's reports into rows, appends them to the output folder, returns the round's row."""

    def __init__(self, setting: Setting, splits: ClockSplits, aggregation: str, out: OutDir, hosts: list, keep_before: int | None = None):
        self.setting, self.splits, self.aggregation = setting, splits, aggregation
        self.hosts = hosts
        self.owner = setting.owner
        self.files = {"agents.csv": RowFile(out, "agents.csv", SYNC_AGENT_COLUMNS), "plan.csv": RowFile(out, "plan.csv", PLAN_COLUMNS)}
        # Opened at the first round: the event loops write agents.csv themselves and never call `reduce`.
        self.keep_before, self.opened = keep_before, False

    def rewind(self, before_round: int | None) -> None:
        """Start the files anew (None), or keep only their rows of rounds before `before_round`."""
        self.keep_before = before_round
        if self.opened:
            for f in self.files.values():
                f.start(before_round)

    def set_hosts(self, hosts: list) -> None:
        """The actors after one was re-created (for their dashboard metrics)."""
        self.hosts = hosts

    def reduce(self, r: int, round_start: float, plan: Any, *reports: PhaseReport) -> RoundRow:
        row, agent_rows, plan_rows = sync_round_rows(r, self.setting, self.splits, self.aggregation, list(reports), plan)
        if not self.opened:
            self.opened = True
            self.rewind(self.keep_before)
        wall = time.time() - round_start  # the driver's round start: same node, same clock
        for a in agent_rows:
            a.wall_time_s = wall
        self.files["agents.csv"].append(dataclasses.asdict(a) for a in agent_rows)
        self.files["plan.csv"].append(dataclasses.asdict(p) for p in plan_rows)
        by_group: dict[int, list[dict]] = {}
        rows = [{k: v for k, v in dataclasses.asdict(a).items() if v is not None} for a in agent_rows]
        for a in with_idle_share(rows):
            by_group.setdefault(self.owner[a["agent"]], []).append(a)
        for g, rows in by_group.items():
            self.hosts[g].record_metrics.remote(rows, None)
        return row

    def close(self) -> None:
        if not self.opened:
            return
        for f in self.files.values():
            f.close()
        plan = self.files["plan.csv"]
        if plan.rows_written == 0:
            plan.out.delete("plan.csv")


RoundReducerActor = ray.remote(num_cpus=0)(RoundReducer)
