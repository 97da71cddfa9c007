"""Rows of results, built in one place for the synchronous rounds and the event loops.

Owns the three row types of a run's output folder -- `RoundRow` (rounds.csv),
`AgentRow` (agents.csv), `PlanRow` (plan.csv) -- `ClockSplits` (what the clock needs of
the split profile) and `sync_round_rows`, which turns one synchronous round's reports
into rows through the virtual clock (`clock.round_finish_times`), from what the agents
did, never from the plan.  The event loops (`baselines.recorder`) build the same
dataclasses from their periods.  No torch, no Ray (the round's reducer runs it in a
process that never imports torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from comdml_ray.method.messages import PhaseReport
from comdml_ray.timing.clock import AgentWork, aux_exchange, round_finish_times
from comdml_ray.timing.setting import Setting


@dataclass
class RoundRow:
    round: int
    train_loss: float
    bytes_sent: int
    round_virtual_s: float
    round_wall_s: float = 0.0
    virtual_time_s: float = 0.0  # cumulative
    wall_time_s: float = 0.0  # cumulative
    test_accuracy: float = math.nan  # the yardstick: mean over the --eval-agents sample's own models
    consensus_accuracy: float = math.nan  # the one model all agents hold (exact all-reduce); NaN where there is none
    eval_images: int = 0  # test images test_accuracy is measured on (the fixed subset, or the whole test set); 0: not evaluated
    # wall seconds the evaluation took: inside round_wall_s, but for --clock wall, where they come after the round
    # (its rows, the evaluation) and are not in round_wall_s
    eval_wall_s: float | None = None
    bytes_offloaded: int = 0
    pairs: int = 0
    steps: int | None = None  # local steps finished (event-driven methods)
    driver_calls: int = 0  # remote calls the driver made in this round
    driver_bytes: int = 0  # bytes of results the driver received in this round
    driver_cpu_s: float = 0.0  # CPU seconds the driver process spent in this round (all its threads)
    checkpoint_s: float = 0.0  # wall seconds of the checkpoint written after this round (or row)
    failures: int = 0  # actor deaths while this round (or row) was run
    failed_agents: str = ""  # the agents those actors hosted, e.g. "2-3"; ";" between failures
    lost_wall_s: float = 0.0  # wall seconds lost to them: discarded work since the checkpoint, restart, restore
    lost_nodes: str = ""  # nodes (IPs) lost in this round with those actors; ";" between them


@dataclass
class AgentRow:
    round: int
    agent: int
    virtual_finish_s: float
    wall_time_s: float
    train_loss: float
    bytes_sent: int
    partner: int = -1
    split: int = -1
    bytes_offloaded: int = 0
    steps: int | None = None
    test_accuracy: float = math.nan


@dataclass
class PlanRow:
    round: int
    agent: int
    partner: int
    split: int
    predicted_finish_s: float
    simulated_finish_s: float
    bytes_offloaded: int
    method: str
    note: str


@dataclass(frozen=True)
class ClockSplits:
    """The split profile's figures the clock charges, per split row, plus each split's aux-head bytes."""

    split_ids: tuple[int, ...]
    rho_s: np.ndarray
    rho_f: np.ndarray
    suffix_bytes: np.ndarray
    aux_bytes: np.ndarray

    @staticmethod
    def of(prof, aux_bytes) -> ClockSplits:
        """From a `costmodel.SplitProfile` (duck-typed: this module never imports torch)."""
        return ClockSplits(
            tuple(int(m) for m in prof.split_ids),
            np.asarray(prof.rho_s, dtype=float),
            np.asarray(prof.rho_f, dtype=float),
            np.asarray(prof.suffix_bytes, dtype=float),
            np.asarray(aux_bytes, dtype=float),
        )


def averaging_bytes(st: Setting, aggregation: str) -> np.ndarray:
    """Bytes each agent sends in the averaging step, (N,): its model to every neighbour, or its ring share."""
    if aggregation == "gossip":
        return np.array([len(st.nbrs[k]) * st.model_bytes for k in range(st.n)], dtype=float)
    # Charged as a ring all-reduce: 2(N-1) steps, each moving ~model/N floats per agent.
    return np.full(st.n, 2 * (st.n - 1) * st.model_bytes / st.n)


@dataclass
class Merged:
    """Every agent's work and statistics of one round, merged over the groups' reports."""

    work: list[AgentWork]
    loss_sum: np.ndarray  # (N,)
    batches: np.ndarray  # (N,)
    sent: np.ndarray = field(default=None)  # (N,) bytes

    @staticmethod
    def of(n: int, reports: list[PhaseReport]) -> Merged:
        work = [AgentWork(k) for k in range(n)]
        loss_sum, batches, sent = np.zeros(n), np.zeros(n), np.zeros(n)
        for rep in reports:
            for k, w in rep.work.items():
                m = work[k]
                m.own_batches += w.own_batches
                m.prefix_batches += w.prefix_batches
                if w.partner >= 0:
                    m.partner, m.split_row, m.bytes_offloaded = w.partner, w.split_row, w.bytes_offloaded
                m.suffix_batches.update(w.suffix_batches)
            for k, v in rep.loss_sum.items():
                loss_sum[k] += v
            for k, v in rep.batches.items():
                batches[k] += v
            for k, v in rep.bytes_sent.items():
                sent[k] += v
        return Merged(work, loss_sum, batches, sent)


def sync_round_rows(
    r: int, st: Setting, prof: ClockSplits, aggregation: str, reports: list[PhaseReport], plan=None
) -> tuple[RoundRow, list[AgentRow], list[PlanRow]]:
    """One synchronous round's rows: the clock's finish times from what every agent did."""
    mg = Merged.of(st.n, reports)
    partner = np.array([w.partner for w in mg.work])
    split_row = np.array([w.split_row for w in mg.work])
    aux_s, aux_sent = aux_exchange(partner, split_row, prof.aux_bytes, st.agent_bw, st.agent_lat)
    sent = mg.sent + averaging_bytes(st, aggregation) + aux_sent
    finish = round_finish_times(
        mg.work, st.sec_per_batch(r), prof.rho_s, prof.rho_f, prof.suffix_bytes, st.link_bw, st.link_lat, st.agent_bw, st.exchange_s + aux_s
    )
    split_of = [int(prof.split_ids[s]) if s >= 0 else -1 for s in split_row]
    agents = [
        AgentRow(
            r,
            k,
            float(finish[k]),
            0.0,
            float(mg.loss_sum[k] / max(mg.batches[k], 1)),
            int(sent[k]),
            int(partner[k]),
            split_of[k],
            int(mg.work[k].bytes_offloaded),
        )
        for k in range(st.n)
    ]
    row = RoundRow(
        r,
        float(mg.loss_sum.sum() / max(mg.batches.sum(), 1)),
        int(sent.sum()),
        float(finish.max()),
        bytes_offloaded=int(sum(w.bytes_offloaded for w in mg.work)),
        pairs=int((partner >= 0).sum()),
    )
    plans = []
    if plan is not None:
        # The solver scores an offloader by its own side; its model is whole when its helper is done too.
        predicted = np.where(plan.partner >= 0, np.maximum(plan.finish, plan.finish[np.maximum(plan.partner, 0)]), plan.finish)
        plans = [
            PlanRow(
                r,
                k,
                int(plan.partner[k]),
                int(prof.split_ids[plan.split[k]]) if plan.split[k] >= 0 else -1,
                float(predicted[k]),
                float(finish[k]),
                int(mg.work[k].bytes_offloaded),
                plan.method,
                plan.note,
            )
            for k in range(st.n)
        ]
    return row, agents, plans
