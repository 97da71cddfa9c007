"""The driver's side of surviving failures: durable rows, checkpoints, --resume, recovery from a lost actor.

Owns
- `StartPoint`: where a loop (re)starts: the next round (or row), the virtual clock,
  the cumulative wall time, and an event loop's own state;
- `DriverState`: what a checkpoint holds besides the agents: its start point, the
  split profile, the run's configuration (what `--resume` continues), which group file
  holds each agent, whether the model is stored once, the failures so far, and the row
  of the round just finished (rows are written after the checkpoint; a resume adds it
  if the driver died in between);
- `Checkpointer`: every `--checkpoint-every` rounds each actor's group file goes into
  `checkpoints/round-NNNNN/` of the output folder, then the driver writes `driver.pkl`
  there and points `checkpoints/latest.json` at it (replaced whole, so a reader sees
  the previous checkpoint or the new one, never half of one), then deletes the older
  folders.  A local output folder exists on the driver's node only: the actors hand
  their files (`checkpoint_files`) through the object store to the round's reducer,
  which lives on that node and writes them, and a restore reads them there and hands
  them back the same way.  A folder every node reaches (s3://, gs://, ...) is written
  and read by the actors themselves (`save_state`, `load_state`);
- `resumed_config`: `--resume OUT`: the saved configuration, with the flags that say
  where and how to run (address, CPUs, GPUs, progress bar, fault injection, node
  timeout) from the command line;
- `RunGuard`: rounds.csv as it happens (one flushed row per round; the failures of a
  round on its row), checkpoints, and `recover`: after `AgentFailure` it waits for
  the actor to come back (`faults.RunRecovery`: on another node when its own is
  gone), gives it a new collective group, puts every agent back to the last
  checkpoint (or to the start, without one), cuts the result files back to that round
  and returns where to go on.  Each failure is recorded with the node its actor ran
  on and whether that node was lost (rounds.csv `lost_nodes`, summary.json
  `failures` and `lost_nodes`).  The same actor dying `MAX_DEATHS_IN_A_ROW` times
  without a finished round between, or a lost node's actor finding no room within
  `--node-timeout`, stops the run; its last checkpoint then takes the failures since
  it was written, so a `--resume` records them too.
Checkpoints are written for `local`, `comdml`, `local-deadline` and `adpsgd` (whose event loop holds no
payload in flight: its pairwise averages are single events), not for the others
(Swift's and DivShare's links carry models and fragments; D-PSGD: not done yet); a
lost actor there restarts the run from round 0.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import time
from dataclasses import dataclass, field
from typing import Any

from comdml_ray.config import ConfigError, RunConfig
from comdml_ray.learning.costmodel import SplitProfile
from comdml_ray.method.checkpoint import SHARED_MODEL_FILE
from comdml_ray.results.report import ROUND_COLUMNS, WALL_ROUND_COLUMNS
from comdml_ray.results.rows import RoundRow
from comdml_ray.runtime.actors import AgentFailure
from comdml_ray.runtime.faults import NoRoom, RunStopped, agent_span
from comdml_ray.storage import OutDir, RowFile

CHECKPOINTABLE = ("local", "comdml", "local-deadline", "adpsgd")
MAX_DEATHS_IN_A_ROW = 3
LATEST = "checkpoints/latest.json"
RUNTIME_FIELDS = ("address", "num_cpus", "num_gpus", "progress", "kill_actor", "node_timeout_s")


@dataclass
class StartPoint:
    next_round: int = 0
    virtual_time_s: float = 0.0
    wall_time_s: float = 0.0
    loop: Any = None  # an event loop's state at a row boundary


@dataclass
class Failure:
    round: int
    actor: int
    agents: str
    lost_wall_s: float
    node: str = ""  # IP of the node the actor ran on
    node_lost: bool = False  # that node was gone (every process of it), not only the actor


@dataclass
class DriverState:
    at: StartPoint
    profile: SplitProfile
    config: dict
    shared: bool
    files: dict[int, str] = field(default_factory=dict)  # agent -> group file holding it
    failures: list[Failure] = field(default_factory=list)
    last_row: RoundRow | None = None
    # failures of rounds not finished yet (a run stopped by one): the resumed run puts them on those rounds' rows
    pending: dict[int, list[Failure]] = field(default_factory=dict)
    folder: str = ""


class Checkpointer:
    """Writes and reads checkpoints in `OUT/checkpoints/` (see the module docstring)."""

    def __init__(self, run, cfg: RunConfig, out: OutDir, log):
        self.run, self.cfg, self.out = run, cfg, out
        self.every = cfg.checkpoint_interval() if cfg.algorithm in CHECKPOINTABLE else 0
        if cfg.algorithm not in CHECKPOINTABLE and cfg.checkpoint_every:
            log(
                f"checkpoints: not available for {cfg.algorithm} (only {', '.join(CHECKPOINTABLE)}); a lost actor restarts the run from round 0."
            )
        self.last: DriverState | None = None

    def due(self, row: int) -> bool:
        return self.every > 0 and (row + 1) % self.every == 0

    def save(self, state: DriverState) -> float:
        """Write a checkpoint; returns its wall seconds."""
        t0 = time.perf_counter()
        be = self.run.backend
        state.folder = f"round-{state.at.next_round:05d}"
        folder = self.out.child(f"checkpoints/{state.folder}")
        folder.makedirs()
        if self.out.is_local:  # on the driver's node only: the files go to the reducer beside the driver
            outs = [be.checkpoint_files(g, state.shared) for g in range(be.num_groups)]
            written = self.run.reducer.write_files.remote(folder, *(files for _, files in outs))
            parts = be.fetch([part for part, _ in outs] + [written])[:-1]
        else:
            parts = be.fetch([be.save_state(g, folder, state.shared) for g in range(be.num_groups)])
        state.files = {k: p.file for p in parts for k in p.agents}
        folder.write_bytes("driver.pkl", pickle.dumps(state, protocol=5))
        self.out.replace(LATEST, json.dumps({"folder": state.folder, "next_round": state.at.next_round}).encode())
        for name in self.out.listdir("checkpoints"):
            if name.startswith("round-") and name != state.folder:
                self.out.delete(f"checkpoints/{name}")
        self.last = state
        return time.perf_counter() - t0

    def restore(self, state: DriverState) -> None:
        """Every group's agents back to the checkpoint (each reads the files that hold its agents)."""
        be, folder = self.run.backend, self.out.child(f"checkpoints/{state.folder}")
        names = [sorted({state.files[k] for k in ids}) for ids in self.run.layout.groups]
        if self.out.is_local:  # read on the driver's node by the reducer, handed to each actor through the object store
            reader = self.run.reducer.read_files
            model = [reader.remote(folder, [SHARED_MODEL_FILE])] if state.shared else []
            be.fetch([be.restore_files(g, state.shared, reader.remote(folder, files), *model) for g, files in enumerate(names)])
        else:
            be.fetch([be.load_state(g, folder, files, state.shared) for g, files in enumerate(names)])
        self.last = state

    @staticmethod
    def load_latest(out: OutDir) -> DriverState | None:
        if not out.exists(LATEST):
            return None
        folder = json.loads(out.read_text(LATEST))["folder"]
        return pickle.loads(out.read_bytes(f"checkpoints/{folder}/driver.pkl"))


def resumed_config(given: RunConfig) -> tuple[RunConfig, DriverState]:
    """--resume OUT: the run's saved configuration (placement flags from the command line) and its last checkpoint."""
    out = OutDir(given.resume)
    try:
        state = Checkpointer.load_latest(out)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError) as e:
        raise ConfigError(f"--resume {given.resume}: its last checkpoint cannot be read ({e}); rerun without --resume.") from None
    if state is None:
        raise ConfigError(
            f"--resume {given.resume} holds no checkpoint ({LATEST}); rerun without --resume, with --checkpoint-every 1 or more."
        )
    cfg = RunConfig.from_saved(state.config).replace(
        out=given.resume, resume=given.resume, **{k: getattr(given, k) for k in RUNTIME_FIELDS}
    )
    return cfg.validate(), state


class RunGuard:
    """rounds.csv, checkpoints and recovery for one run's loop (see the module docstring)."""

    def __init__(self, run, cfg: RunConfig, out: OutDir, log, resume: DriverState | None = None):
        self.run, self.cfg, self.out, self.log = run, cfg, out, log
        self.ckpt = Checkpointer(run, cfg, out, log)
        self.start = resume.at if resume else None
        keep = resume.at.next_round if resume else None
        self.rounds = RowFile(out, "rounds.csv", ROUND_COLUMNS + (WALL_ROUND_COLUMNS if cfg.clock == "wall" else [])).start(keep)
        self.agent_file: RowFile | None = None
        self.failures: list[Failure] = list(resume.failures) if resume else []
        self.pending: dict[int, list[Failure]] = {r: list(fs) for r, fs in getattr(resume, "pending", {}).items()} if resume else {}
        self.streak: dict[int, int] = {}
        self.round = self.start.next_round if self.start else 0  # the round (or row) being run, set by the loops
        if resume is not None:
            self.ckpt.restore(resume)
            if resume.last_row is not None and self.rounds.rows_written < resume.at.next_round:
                self.rounds.append([vars(resume.last_row)])  # the driver died between checkpoint and row
        self.mark = (time.perf_counter(), self.start.wall_time_s if self.start else 0.0)  # (clock, cumulative wall) at the restore point

    def close(self) -> None:
        for rf in (self.rounds, self.agent_file):
            if rf is not None:
                rf.close()

    def agents_csv(self, columns: list[str]) -> RowFile:
        """agents.csv of the event loops (the synchronous rounds' reducer writes its own)."""
        if self.agent_file is None:
            self.agent_file = RowFile(self.out, "agents.csv", columns).start(self.start.next_round if self.start else None)
        return self.agent_file

    def record(self, row: RoundRow) -> None:
        """Append the round's row (with its failures), flushed; a finished round ends every death streak."""
        for f in self.pending.pop(row.round, []):
            row.failures += 1
            row.failed_agents = ";".join(a for a in (row.failed_agents, f.agents) if a)
            row.lost_wall_s += f.lost_wall_s
            if f.node_lost and f.node not in row.lost_nodes.split(";"):
                row.lost_nodes = ";".join(n for n in (row.lost_nodes, f.node) if n)
        self.rounds.append([vars(row)])
        self.streak.clear()

    def checkpoint(self, at: StartPoint, last_row: RoundRow | None = None) -> float:
        """A checkpoint if one is due before `at.next_round`; returns its wall seconds (0 if none)."""
        if not self.ckpt.due(at.next_round - 1):
            return 0.0
        state = DriverState(
            at, self.run.split_profile, dataclasses.asdict(self.cfg), self.cfg.one_model, failures=list(self.failures), last_row=last_row
        )
        sec = self.ckpt.save(state)
        self.mark = (time.perf_counter(), at.wall_time_s + sec)
        return sec

    def recover(self, f: AgentFailure, r: int) -> StartPoint:
        """After an actor died in round (or row) r: actors back, agents restored, files cut back; where to go on.

        A death during the recovery itself counts as one more and starts it over;
        `RunStopped` (3 in a row, an actor that does not come back) ends the run.
        """
        while True:
            try:
                return self._recover_once(f, r)
            except RunStopped:
                raise
            except AgentFailure as again:
                f = again

    def _recover_once(self, f: AgentFailure, r: int) -> StartPoint:
        run = self.run
        self.log(f"round {r}: {f} Recovering.")
        ips = run.node_ips()
        where = {p["group"]: ips.get(p["node_id"], "") for p in run.placements}  # each actor's node before the recovery
        try:
            dead = run.await_actors() | ({f.group} if f.group is not None else set())
        except NoRoom as e:
            self._note(r, {e.group} | set(run.lost_nodes), where)
            self._keep_failures()
            at = self.ckpt.last.at.next_round if self.ckpt.last else 0
            raise NoRoom(
                f"node {e.node} was lost in round {r} with agents {agent_span(run.layout.groups[e.group])}, and no node with room "
                f"for their actor ({e.need}) joined within {e.waited_s:.0f} s (--node-timeout), so the run stops; the results of its "
                f"rounds before round {at} are in {self.out.uri}: add a node and continue with --resume {self.out.uri}.",
                e.group,
                e.node,
                e.need,
                e.waited_s,
            ) from None
        if not dead:
            raise RunStopped(str(f))  # not an agent actor (the reducer?): nothing to restart
        for g in sorted(dead):
            self.streak[g] = self.streak.get(g, 0) + 1
        worst = max(sorted(dead), key=lambda g: self.streak[g])
        if self.streak[worst] >= MAX_DEATHS_IN_A_ROW:
            self._note(r, dead, where)
            self._keep_failures()
            raise RunStopped(
                f"the actor hosting agents {agent_span(run.layout.groups[worst])} died {self.streak[worst]} times in a row "
                f"(last in round {r}), so the run stops; its results so far are in {self.out.uri}: see the actor's log "
                f"under /tmp/ray/session_latest/logs, then continue with --resume {self.out.uri}.",
                worst,
            )
        run.rebuild(dead)
        run.join_collective()
        state = self.ckpt.last
        if state is None:
            run.reset_agents()
        else:
            self.ckpt.restore(state)
        at = dataclasses.replace(state.at) if state else StartPoint()
        run.backend.fetch([run.reducer.rewind.remote(at.next_round)])
        for rf in (self.rounds, self.agent_file):
            if rf is not None:
                rf.start(at.next_round)
        lost = self._note(r, dead, where)
        at.wall_time_s = self.mark[1]
        if run.lost_nodes:
            now = run.node_ips()
            moved = "; ".join(
                f"node {ip} lost with agents {agent_span(run.layout.groups[g])}, whose actor now runs on {now.get(run.placements[g]['node_id'], '?')}"
                for g, ip in sorted(run.lost_nodes.items())
            )
            self.log(f"round {r}: {moved}; {lost:.1f} s lost; going on from round {at.next_round}")
        else:
            self.log(f"round {r}: actors {sorted(dead)} back after {lost:.1f} s lost; going on from round {at.next_round}")
        return at

    def _note(self, r: int, dead: set[int], where: dict[int, str]) -> float:
        """Record the failure of round r (the time lost goes to its first actor); returns the seconds lost.

        where: group -> IP of the node its actor ran on before the recovery.
        """
        now = time.perf_counter()
        lost = now - self.mark[0]
        run = self.run
        for i, g in enumerate(sorted(dead)):
            ip = run.lost_nodes.get(g) or where.get(g, "")
            fl = Failure(r, g, agent_span(run.layout.groups[g]), lost if i == 0 else 0.0, ip, g in run.lost_nodes)
            self.failures.append(fl)
            self.pending.setdefault(r, []).append(fl)
        self.mark = (now, self.mark[1] + lost)
        return lost

    def _keep_failures(self) -> None:
        """The run stops: its last checkpoint takes the failures since it was written, so a --resume records them too."""
        state = self.ckpt.last
        if state is None:
            return
        state.failures, state.pending = list(self.failures), {r: list(fs) for r, fs in self.pending.items()}
        self.out.replace(f"checkpoints/{state.folder}/driver.pkl", pickle.dumps(state, protocol=5))
