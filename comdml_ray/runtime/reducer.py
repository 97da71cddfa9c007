"""The round's reducer: the groups' reports become rows without passing through the driver.

Owns `RoundReducer`, a small Ray actor (no CPU reserved) pinned to the driver's node.
It imports no torch and holds no agent actor's handle (receiving one would make Ray
import the actors' module, torch included: 2-3 s of CPU and ~300 MB per run).  Every
synchronous round the driver hands it the refs of the groups' reports (and of the
plan, for ComDML); Ray moves those reports from the actors to it, it runs the virtual
clock (`rows.sync_round_rows`), appends the round's rows to agents.csv and plan.csv in
the output folder (`storage.RowFile`: flushed, so they survive an aborted run; any
pyarrow filesystem), and returns the round's one `RoundRow` plus, as one more return
value per actor, that actor's agents' dashboard metrics, which the driver forwards
by ref (`RayBackend.record_metrics`) without fetching them.  After a lost actor
or on resume, `rewind(r)` cuts both files back to the rounds before r.  So what the driver receives per round does not grow with
the number of agents: it is O(actors) digests and one row.  Under `--clock wall` it
is called after the averaging and also writes what the agents measured (when each
model was whole, device seconds per batch, the observed finish beside the plan's).
Being on the driver's node, it is also the writer and reader of checkpoint files in
a local output folder (`write_files`, `read_files`; `recovery.Checkpointer`): the
actors' files reach it through the object store, and a path that exists only on the
driver's node works on any cluster.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ray

from comdml_ray.method.messages import PhaseReport
from comdml_ray.results.rows import AgentRow, ClockSplits, PlanRow, RoundRow, sync_round_rows
from comdml_ray.runtime.telemetry import with_idle_share
from comdml_ray.storage import OutDir, RowFile
from comdml_ray.timing.setting import Setting

SYNC_AGENT_COLUMNS = [f.name for f in dataclasses.fields(AgentRow) if f.name not in ("steps", "test_accuracy")]
PLAN_COLUMNS = [f.name for f in dataclasses.fields(PlanRow)]
WALL_AGENT_COLUMNS = ["whole_s", "observed_sec_per_batch"]  # --clock wall only
WALL_PLAN_COLUMNS = ["observed_finish_s"]


class RoundReducer:
    """Turns one round's reports into rows, appends them to the output folder, returns the round's row.

    Created bare, then given the run (`start`) before any round: its process starts while the
    agent actors' do, not after them.  `reduce` has 1 + (number of actors) return values.
    """

    def start(
        self, setting: Setting, splits: ClockSplits, aggregation: str, out: OutDir, keep_before: int | None = None, clock: str = "virtual"
    ) -> None:
        """The run: setting, clock splits, output folder."""
        self.setting, self.splits, self.aggregation = setting, splits, aggregation
        self.wall = clock == "wall"
        extra = (WALL_AGENT_COLUMNS, WALL_PLAN_COLUMNS) if self.wall else ([], [])
        self.owner = setting.owner
        self.files = {
            "agents.csv": RowFile(out, "agents.csv", SYNC_AGENT_COLUMNS + extra[0]),
            "plan.csv": RowFile(out, "plan.csv", PLAN_COLUMNS + extra[1]),
        }
        # Opened at the first round: the event loops write agents.csv themselves and never call `reduce`.
        self.keep_before, self.opened = keep_before, False

    def rewind(self, before_round: int | None) -> None:
        """Start the files anew (None), or keep only their rows of rounds before `before_round`."""
        self.keep_before = before_round
        if self.opened:
            for f in self.files.values():
                f.start(before_round)

    def reduce(
        self, r: int, round_start: float, plan: Any, *reports: PhaseReport, wall: tuple[float, float] | None = None
    ) -> tuple[RoundRow | list[dict], ...]:
        """(the round's row, actor 0's agents' metric rows, actor 1's, ...): call with num_returns = 1 + actors.

        `wall` (--clock wall): the round's seconds and the seconds before the agents' calls
        started, both measured by the driver on its own clock.
        """
        row, agent_rows, plan_rows = sync_round_rows(r, self.setting, self.splits, self.aggregation, list(reports), plan)
        if not self.opened:
            self.opened = True
            self.rewind(self.keep_before)
        # the driver's round start (same node, same clock), or on the wall clock the driver's own measurement
        secs = wall[0] if wall is not None else time.time() - round_start
        for a in agent_rows:
            a.wall_time_s = secs
        xa, xp = self._observed(list(reports), secs, wall[1] if wall is not None else 0.0) if self.wall else ({}, {})
        self.files["agents.csv"].append(dataclasses.asdict(a) | xa.get(a.agent, {}) for a in agent_rows)
        self.files["plan.csv"].append(dataclasses.asdict(p) | xp.get(p.agent, {}) for p in plan_rows)
        by_group: dict[int, list[dict]] = {}
        rows = [{k: v for k, v in dataclasses.asdict(a).items() if v is not None} for a in agent_rows]
        for a in with_idle_share(rows):
            by_group.setdefault(self.owner[a["agent"]], []).append(a)
        return (row, *(by_group.get(g, []) for g in range(self.setting.num_groups)))

    def _observed(self, reports: list[PhaseReport], wall: float, lead: float) -> tuple[dict, dict]:
        """--clock wall: per agent, when its model was whole, its device seconds per batch, and its observed finish.

        `whole_s` counts from the round's start: the driver's `lead` seconds (planning, the
        calls) plus the agent's own seconds from its call's start to its model whole.  The
        observed finish is comparable with the plan's predicted one: the time until the
        model was whole plus the averaging step as it really lasted (the round's seconds
        minus the last agent's whole time).
        """
        whole = {k: lead + v for rep in reports for k, v in rep.whole_s.items()}
        spb = {k: v for rep in reports for k, v in rep.observed_spb.items()}
        avg = wall - max(whole.values(), default=0.0)
        agents = {k: {"whole_s": whole.get(k), "observed_sec_per_batch": spb.get(k)} for k in whole}
        return agents, {k: {"observed_finish_s": whole[k] + avg} for k in whole}

    def write_files(self, folder: OutDir, *files: dict[str, bytes]) -> int:
        """Write every group's checkpoint files (name -> bytes) into `folder` on this node; returns the bytes written."""
        total = 0
        for group_files in files:
            for name, data in group_files.items():
                folder.write_bytes(name, data)
                total += len(data)
        return total

    def read_files(self, folder: OutDir, names: list[str]) -> dict[str, bytes]:
        """Checkpoint files of `folder` on this node, for an actor anywhere to restore from."""
        return {name: folder.read_bytes(name) for name in names}

    def close(self) -> None:
        if not self.opened:
            return
        for f in self.files.values():
            f.close()
        plan = self.files["plan.csv"]
        if plan.rows_written == 0:
            plan.delete()


RoundReducerActor = ray.remote(num_cpus=0)(RoundReducer)
