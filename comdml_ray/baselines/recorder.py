"""Rows of results of the event-driven baselines: one row per N finished local steps (an epochs-equivalent).

Owns `Period` (one row of rounds.csv in the making), `Recorder` (turns periods into
`rows.RoundRow` / `rows.AgentRow`, fetching each one row late so that the actors stay
busy, and, in a run, hands each row to the run's `recovery.RunGuard`, which appends it
to rounds.csv and agents.csv at once, flushed), `evaluate_now` (submit the evaluation
of the evaluated agents' current models).  A recorder may start at a checkpoint's row,
virtual time and wall time.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from comdml_ray.method.async_steps import StepReport
from comdml_ray.results.report import frame
from comdml_ray.results.rows import AgentRow, RoundRow
from comdml_ray.runtime.backend import Backend
from comdml_ray.timing.setting import Setting

AGENT_COLUMNS = [f.name for f in dataclasses.fields(AgentRow)]


@dataclass
class Period:
    """One row of rounds.csv in the making: what happened between two evaluations."""

    index: int
    virtual_time_s: float = 0.0
    reports: list[Any] = field(default_factory=list)  # handles of StepReport (or of a PhaseReport for dpsgd)
    eval_handles: list[Any] = field(default_factory=list)
    eval_images: int | None = 0  # test images of its evaluation: 0 none, None the whole test set (`RunConfig.eval_images`)
    steps: np.ndarray | None = None  # (N,) steps finished in this period
    last_finish: np.ndarray | None = None  # (N,) absolute virtual time of each agent's last finish so far
    bytes_sent: np.ndarray | None = None  # (N,) bytes delivered from each agent in this period


class Recorder:
    """Turns periods into rows, fetching each one row late so the actors never idle on the driver."""

    def __init__(
        self,
        ex: Backend,
        n: int,
        rounds: int,
        log,
        progress: bool,
        on_row: Callable[[list[AgentRow], float | None], None] | None,
        label: str,
        guard=None,
        start=None,
        test_size: int = 0,
    ):
        self.ex = ex
        self.test_size = test_size
        self.n = n
        self.guard = guard  # recovery.RunGuard: where rows go as they happen (None in tests)
        self.pending: list[Period] = []
        self.rows: list[RoundRow] = []
        self.agent_rows: list[AgentRow] = []
        self.last_wall = start.wall_time_s if start else 0.0
        self.t0 = time.perf_counter() - self.last_wall
        self.last_virtual = start.virtual_time_s if start else 0.0
        self.last_calls = getattr(ex, "calls", 0)
        self.last_cpu = time.process_time()
        self.log = log
        self.on_row = on_row
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=rounds, initial=start.next_round if start else 0, desc=f"{label} epochs-equivalent", unit="round")

    def close(self, p: Period) -> None:
        self.pending.append(p)
        while len(self.pending) > 1:
            self._finish(self.pending.pop(0))

    def settle(self) -> None:
        """Fetch and write every closed row now (before a checkpoint)."""
        while self.pending:
            self._finish(self.pending.pop(0))

    def wall(self) -> float:
        return time.perf_counter() - self.t0

    def flush(self) -> None:
        self.settle()
        if self.bar is not None:
            self.bar.close()

    def _finish(self, p: Period) -> None:
        reports = self.ex.fetch(p.reports)
        accs = self.ex.fetch(p.eval_handles)
        received = len(pickle.dumps((reports, accs), protocol=5))
        wall = time.perf_counter() - self.t0
        loss_sum, batches = np.zeros(self.n), np.zeros(self.n)
        for rep in reports:
            if isinstance(rep, StepReport):
                loss_sum[rep.agent] += rep.loss_sum
                batches[rep.agent] += rep.batches
            else:  # a PhaseReport of a synchronous round
                for k, v in rep.loss_sum.items():
                    loss_sum[k] += v
                for k, v in rep.batches.items():
                    batches[k] += v
        per_agent = {k: a for d in accs for k, a in d.items()}
        acc = float(np.mean(list(per_agent.values()))) if per_agent else math.nan
        row = RoundRow(
            p.index,
            float(loss_sum.sum() / max(batches.sum(), 1)),
            int(p.bytes_sent.sum()),
            p.virtual_time_s - self.last_virtual,
            wall - self.last_wall,
            p.virtual_time_s,
            wall,
            acc,
            steps=int(p.steps.sum()),
            driver_calls=getattr(self.ex, "calls", 0) - self.last_calls,
            driver_bytes=received,
            eval_images=self.test_size if p.eval_images is None else p.eval_images,
        )  # eval_wall_s: overlaps the steps, not timed
        self.last_calls = getattr(self.ex, "calls", 0)
        now_cpu = time.process_time()
        row.driver_cpu_s, self.last_cpu = now_cpu - self.last_cpu, now_cpu
        agent_rows = [
            AgentRow(
                p.index,
                k,
                float(p.last_finish[k]),
                wall,
                float(loss_sum[k] / batches[k]) if batches[k] else math.nan,
                int(p.bytes_sent[k]),
                steps=int(p.steps[k]),
                test_accuracy=per_agent.get(k, math.nan),
            )
            for k in range(self.n)
        ]
        self.last_wall, self.last_virtual = wall, p.virtual_time_s
        self.rows.append(row)
        self.agent_rows += agent_rows
        if self.guard is not None:
            self.guard.record(row)
            self.guard.agents_csv(AGENT_COLUMNS).append(vars(a) for a in agent_rows)
        if self.on_row is not None:
            self.on_row(agent_rows, None if math.isnan(acc) else acc)
        if self.bar is not None:
            self.bar.set_postfix(acc=f"{100 * acc:.1f}%" if not math.isnan(acc) else "-", vtime=f"{p.virtual_time_s:.0f}s")
            self.bar.update(1)
        else:
            self.log(f"row {p.index + 1}: acc {acc:.4f} virtual {p.virtual_time_s:.1f}s wall {wall:.1f}s steps {row.steps}")

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        return frame(self.rows), frame(self.agent_rows), pd.DataFrame()


def evaluate_now(ex: Backend, st: Setting, p: Period, images: int | None) -> None:
    """Submit the evaluation of the eval agents' current models on `images` test images (None: all) into p's handles."""
    p.eval_images = images
    p.eval_handles = [ex.evaluate(g, ks, images) for g, ks in st.groups_of(st.eval_ids).items()]
