"""The baselines on one event-driven virtual clock: D-PSGD, AD-PSGD, Swift, DivShare (docs/method.md §6).

Owns the driver side of `--algorithm dpsgd|adpsgd|swift|divshare`, one concern per module:
- `events`: `EventClock`: a heap of (virtual time, seq, event) popped in time order (seq breaks
  ties in push order, so a run is deterministic);
- `events.Uplink`: one agent's outbound link, transfers one after the other at the link's
  bandwidth (+ latency on arrival), with DivShare's rule that transfers of an older
  step not yet started when a newer step finishes are dropped;
- `loops`: `ADPSGD`, `Swift`, `DivShare` (asynchronous, on `AsyncLoop`); `dpsgd`:
  `run_dpsgd` (synchronous: a round ends at a barrier event); `recorder`: the rows;
- the loops reach the agents only through `backend.Backend` (`actors.RayBackend` in a
  run, `backend.LocalBackend` in tests), and read the run's `setting.Setting`;
- `run_event_driven(run, cfg, log)`, what `experiment.run_experiment` calls.

Work unit: a local step is `--step-batches` S_k minibatches of agent k (each method's
default in `config.ASYNC_STEP_BATCHES`, 1 for AD-PSGD and Swift as in their papers;
0 = one round's work, `--local-epochs` passes over its shard, B_k batches), S_k * c_k
virtual seconds, c_k = base cost x slowdown, with `--drift` indexed by the
epochs-equivalent the run has completed.  A row of rounds.csv is one
epochs-equivalent: it closes at the step finish that brings the work done (S_k / B_k
per step of agent k) to N per row, and its virtual_time_s is that finish's time, with
the mean test accuracy of the `--eval-agents` sample's current models then (the one
yardstick; asynchronous models never agree).  A run of R rounds stops after R rows,
or at the row whose virtual time reaches `--time-budget` (same-clock comparisons).
agents.csv has, per row and agent: steps finished in that row, their mean loss, the
absolute virtual time of its last finish (asynchronous methods have no rounds), the
bytes it sent that were delivered, and its own test accuracy if it was evaluated.

Algorithms (time model of docs/method.md §3.3 and §3.5; links i->j at the slower end's bandwidth):
- dpsgd: every round all agents train, then one Metropolis-Hastings gossip step on
  `--topology`; an agent's round time is B_k c_k + sum over its neighbours j of
  (|w| / bw_kj + l_kj) (as the synchronous loop under `--aggregation gossip`); the round ends at a barrier.
- adpsgd: the topology is split into active and passive agents (its 2-colouring when
  bipartite, else even/odd ids; active agents average only with passive neighbours,
  so two averages never wait on each other).  An active agent that finishes a step
  picks a random neighbour j; its model reaches j after |w|/bw + l, j averages
  x_i = x_j = (x_i + x_j)/2 at that instant and sends the mean back: the active
  agent starts its next step 2 (|w|/bw + l) after its finish.  Passive agents only
  train; an average that lands mid-step is handled as in `async_steps`.
- swift: on finishing a step an agent queues its model to each neighbour on its link
  (dropping copies of its previous model not yet started: only the newest is worth
  sending, and a slow link would otherwise queue stale models without end), mixes
  with the last model it has received from each neighbour (Metropolis-Hastings
  weights over itself and those neighbours) and starts its next step at once.
- divshare: on finishing a step an agent cuts every tensor of its trained model into
  `--fragments` Omega fragments (seeded permutation per tensor), queues each to `--fanout` J random other
  agents (fragment after fragment on its link), drops what is still unsent of its
  previous step, and sets each parameter to the mean of its value and all copies
  received since its last step.
Sending never blocks a Swift or DivShare agent: its link works in the background.

Execution: the driver never waits for compute while it walks the clock.  Every
operation is submitted in virtual-time order; an actor runs the calls of one
submitter in submission order and Ray resolves ObjectRef arguments first, so each
operation sees exactly the state the event order implies, and every dependency
points to an earlier submission (no deadlock).  The driver fetches a row's reports
and accuracy one row late, so the actors stay busy.

May import: `runtime` (the backend and the run it drives), `results`, `method`,
`timing`, `comdml_ray.config`, numpy, networkx, pandas (the rule: `comdml_ray.LAYERS`).
No Ray and no torch here: both stay behind the backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from comdml_ray.baselines.dpsgd import run_dpsgd
from comdml_ray.baselines.events import EventClock, Uplink  # noqa: F401  (the package's public names)
from comdml_ray.baselines.loops import ADPSGD, LOOPS, AfterRow, AsyncLoop, DivShare, LoopState, Swift, active_passive  # noqa: F401
from comdml_ray.baselines.recorder import Recorder
from comdml_ray.config import RunConfig
from comdml_ray.runtime.backend import Backend
from comdml_ray.timing.setting import Setting

ASYNC_ALGORITHMS = ("adpsgd", "swift", "divshare")


def drive(
    algorithm: str,
    ex: Backend,
    st: Setting,
    cfg: RunConfig,
    log=print,
    on_row: Callable[[list[dict], float | None], None] | None = None,
    guard=None,
    start=None,
    after_row: AfterRow | None = None,
    rec: Recorder | None = None,
    test_size: int = 0,
) -> tuple[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame], Any]:
    """Run one baseline to the end; returns (rounds, agents, plans) frames and the loop (or clock) it used.

    `guard` (a run's `recovery.RunGuard`) receives every row as it is made; `start` (a
    `recovery.StartPoint`) continues from a checkpoint; `after_row` runs at every row boundary; test_size: images of the whole test set (rounds.csv's eval_images at the last evaluation).
    """
    rec = rec or Recorder(ex, st.n, cfg.rounds, log, cfg.progress, on_row, algorithm, guard, start, test_size)
    if algorithm == "dpsgd":
        loop: Any = run_dpsgd(ex, st, cfg, rec, after_row)
    elif algorithm in LOOPS:
        loop = LOOPS[algorithm](ex, st, cfg)
        loop.run(rec, start.loop if start is not None else None, after_row)
    else:
        raise ValueError(f"no event-driven loop for algorithm '{algorithm}'")
    return rec.frames(), loop


def run_event_driven(run, cfg: RunConfig, log=print, guard=None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """What `experiment.run_experiment` calls for dpsgd, adpsgd, swift and divshare.

    With a `guard`, rows go to the output folder as they happen, a checkpoint is taken
    at the row boundaries it asks for (after the rows so far are fetched and written),
    `--kill-actor` fires at the start of its row, and after a lost actor the loop goes
    on from the guard's last checkpoint (or from the start).
    """
    from comdml_ray.runtime.actors import AgentFailure
    from comdml_ray.runtime.recovery import StartPoint

    st = run.setting
    if cfg.algorithm == "divshare" and cfg.fanout > cfg.agents - 1:
        log(f"divshare: --fanout {cfg.fanout} is more than the {cfg.agents - 1} other agents; each fragment goes to all of them.")
    start = guard.start if guard is not None else None
    while True:
        rec = Recorder(run.backend, st.n, cfg.rounds, log, cfg.progress, run.record_metrics, cfg.algorithm, guard, start, run.test_size)

        def after_row(row: int, t: float, state, rec=rec) -> None:
            guard.round = row + 1
            if guard.ckpt.due(row):
                rec.settle()
                guard.checkpoint(StartPoint(row + 1, t, rec.wall(), state()))
            run.inject_faults(row + 1)

        if guard is not None:
            guard.round = start.next_round if start else 0
            run.inject_faults(guard.round)
        try:
            frames, _ = drive(
                cfg.algorithm, run.backend, st, cfg, log, run.record_metrics, guard, start, after_row if guard is not None else None, rec
            )
            return frames
        except AgentFailure as f:
            if guard is None:
                raise
            if rec.bar is not None:
                rec.bar.close()
            start = guard.recover(f, guard.round)
