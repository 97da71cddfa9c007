"""Ray's side of losing an agent actor or a whole node: fault injection, waiting for restarts, rebuilding the group; mixed into `run.Run`.

Owns
- `ACTOR_OPTIONS`: agent actors are created with `max_restarts=-1` (Ray restarts a dead
  one in its placement-group bundle; the driver, not Ray, stops a run whose actor keeps
  dying: `recovery.RunGuard`) and `max_task_retries=0`: a training step is not
  idempotent, so a call that was running when its actor died is never replayed blindly;
  the round is redone from a checkpoint instead;
- `RunRecovery`, the methods `Run` gains:
  - `inject_faults(r)`: for each pending `--kill-actor` pair of round r, the actor is
    told to SIGKILL its own process (`AgentHost.crash`), just before the round's
    training calls reach it; each pair fires once per run;
  - `await_actors()`: wait until every actor answers a call queued behind everything
    it was given (survivors finish or fail their calls of the broken round; a dead
    actor answers once Ray has restarted it, and one that Ray reports dead for good is
    re-created in its bundle); returns the groups whose process changed, which, with
    the group named by Ray's error, are the ones to rebuild;
  - a whole node lost (its raylet and workers): Ray marks the node dead, and the run's
    placement group (PACK or SPREAD, both best-effort: nothing pins a bundle to a
    node) re-places that node's bundles, where the surviving nodes have room, so the
    actors restart there; without room the group stays RESCHEDULING until a node
    joins.  `await_actors` records the lost node of each group (`lost_nodes`); a
    bundle whose node is gone and that Ray has not re-placed within REPLACE_GRACE_S
    (read from the bundle's own node in the GCS's placement-group table) waits for
    room: a progress line every PROGRESS_EVERY_S, and past `--node-timeout` `NoRoom`
    (exit 2: the cluster is too small, as at start-up);
  - `rebuild(groups)`: set those processes up again (dataset ref, setting, profile);
  - `join_collective()`: every actor leaves its collective group (a member is gone)
    and joins a new one under a new name, with the backend the actors' devices allow
    (`devices.choose_backend`, in `collective`);
  - `reset_agents()`: every group rebuilds its agents, i.e. the run's state before round 0
    (used when no checkpoint exists yet).
Which actor died is read from Ray's error (`actors.RayBackend.fetch`), never probed; a
result lost with its node (the call had finished) names no actor, and the groups whose
node is gone are the ones rebuilt.
"""

from __future__ import annotations

import time
import uuid

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError
from ray.util.placement_group import placement_group_table

from comdml_ray.config import ConfigError
from comdml_ray.runtime.actors import AgentFailure
from comdml_ray.runtime.devices import CollectiveChoice, RankDevice, choose_backend

ACTOR_OPTIONS = {"max_restarts": -1, "max_task_retries": 0}


class RunStopped(AgentFailure):
    """A failure the run does not recover from; the message is one sentence saying what to do."""


class NoRoom(RunStopped):
    """A lost node's actors found no node with room within --node-timeout: the cluster is too small, exit 2 (`cli.run.exit_code_of`)."""

    exit_code = 2

    def __init__(self, message: str, group: int | None = None, node: str = "", need: str = "", waited_s: float = 0.0):
        super().__init__(message, group)
        self.node, self.need, self.waited_s = node, need, waited_s


class _RoomWait:
    """The wait for a node with room for a lost node's actor: when it began, the last progress line, the limit."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.last_line = 0.0

    def tick(self, run: RunRecovery, g: int, ip: str, timeout_s: float) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        waited = now - self.since
        need = _resources(run._bundle())
        if waited < REPLACE_GRACE_S:
            return  # where a survivor has room, Ray re-places the bundle within this
        if self.last_line == 0.0 or now - self.last_line >= PROGRESS_EVERY_S:
            free = ray.available_resources()
            run.log(
                f"node {ip} is gone with agents {agent_span(run.layout.groups[g])} and no other node has room for their actor "
                f"({need}; {free.get('CPU', 0.0):g} CPUs free): waiting for a node to join "
                f"({waited:.0f} s of at most {timeout_s:.0f} s, --node-timeout)"
            )
            self.last_line = now
        if waited >= timeout_s:
            raise NoRoom(f"node {ip} is gone and no node has room for its actor ({need})", g, ip, need, waited)


def dead_nodes() -> dict[str, str]:
    """Node id -> IP of every node Ray has marked dead."""
    return {n["NodeID"]: n.get("NodeManagerAddress") or "?" for n in ray.nodes() if not n.get("Alive")}


def _resources(bundle: dict) -> str:
    return ", ".join(f"{v:g} {k}{'s' if k in ('CPU', 'GPU') and v != 1 else ''}" for k, v in bundle.items())


SETTLE_TIMEOUT_S = 900.0  # a survivor may be midway through a round of 50 agents on a loaded host
POLL_S = 1.0  # how often a wait for actors looks at the cluster (a lost node, a re-placed bundle)
PROGRESS_EVERY_S = 15.0  # one progress line this often while a lost node's actors wait for room
REPLACE_GRACE_S = 5.0  # a lost bundle unplaced this long has no room (nor --node-timeout 0 stops sooner)


class RunRecovery:
    """Methods `run.Run` gains to survive a lost actor (see the module docstring)."""

    def init_faults(self) -> None:
        self.collective: CollectiveChoice | None = None  # the backend of the group the actors are in (join_collective)
        kills, n = self.cfg.kills(), len(self.layout.groups)
        bad = [g for _, g in kills if g >= n]
        if bad:
            raise ConfigError(f"--kill-actor names actor {bad[0]}, but this run has {n} actors (0-{n - 1}); pick one of those.")
        self.pending_kills = list(kills)
        self.lost_nodes: dict[int, str] = {}  # group -> IP of its node, gone (set by await_actors)

    def inject_faults(self, r: int) -> None:
        """Kill the actors that --kill-actor names for round r (each pair once per run)."""
        for pair in [p for p in self.pending_kills if p[0] == r]:
            self.pending_kills.remove(pair)
            self.log(
                f"fault injection: actor {pair[1]} (agents {agent_span(self.layout.groups[pair[1]])}) kills itself at the start of round {r}"
            )
            self.hosts[pair[1]].crash.remote()
            break  # one death per attempt: a second pair of this round fires when the round is redone

    def join_collective(self) -> None:
        """Every actor joins one new collective group (a per-run, per-incarnation unique name).

        The backend is chosen here, from every actor's placement (`devices.choose_backend`),
        and the same one is given to all: a restarted actor may land on another device.
        """
        choice = choose_backend([RankDevice.of(p) for p in self.placements])
        if choice != self.collective:
            self.log(f"collective: {choice.backend} ({choice.reason})")
        self.collective = choice
        name = f"comdml-{uuid.uuid4().hex[:12]}"
        self.backend.fetch([h.join_collective.remote(name, len(self.hosts), choice.backend) for h in self.hosts])

    def await_actors(self, timeout_s: float = SETTLE_TIMEOUT_S, node_timeout_s: float | None = None) -> set[int]:
        """Wait until every actor answers; re-create any that Ray gave up on.  Returns the groups with a new process.

        An actor whose node is gone (`lost_nodes`) comes back once Ray has re-placed its
        placement-group bundle: on a surviving node with room, else on a node that joins.
        While the group waits for room, a progress line every PROGRESS_EVERY_S, and
        `NoRoom` once node_timeout_s (default `--node-timeout`) has passed.
        """
        node_timeout_s = self.cfg.node_timeout_s if node_timeout_s is None else node_timeout_s
        deadline = time.monotonic() + timeout_s
        before = {p["group"]: p for p in self.placements}
        self.lost_nodes = {}
        changed: set[int] = set()
        wait = _RoomWait()
        for g in range(len(self.hosts)):
            ref = None
            while True:
                if ref is None:
                    ref = self.hosts[g].placement.remote()
                try:
                    self.placements[g] = ray.get(ref, timeout=POLL_S)
                    break
                except ActorDiedError:
                    self._recreate(g)
                    changed.add(g)
                    ref = None
                except RayActorError:  # restarting: Ray answers once the new process is up
                    ref = None
                    time.sleep(0.2)
                except GetTimeoutError:
                    pass
                dead = dead_nodes()
                ip = dead.get(before[g]["node_id"]) if g in before else None
                if ip is not None:
                    self.lost_nodes[g] = ip
                if ip is not None and self._bundle_unplaced(g, dead):
                    wait.tick(self, g, ip, node_timeout_s)  # the bundle has no node: waiting for one to join
                    deadline = time.monotonic() + timeout_s
                elif time.monotonic() > deadline:
                    raise RunStopped(
                        f"the actor hosting agents {agent_span(self.layout.groups[g])} did not come back within {timeout_s:.0f} s; "
                        "check `ray status` for free resources and resume with --resume."
                    )
            was = before.get(g, {})
            if (self.placements[g]["pid"], self.placements[g]["node_id"]) != (was.get("pid"), was.get("node_id")):
                changed.add(g)  # a new process (PIDs alone may repeat across nodes)
        dead = dead_nodes()  # also the nodes of actors that Ray had re-placed before this wait looked at them
        self.lost_nodes |= {g: dead[p["node_id"]] for g, p in before.items() if p["node_id"] in dead}
        changed |= set(self.lost_nodes)
        if wait.since is not None:
            self.log(f"a node with room joined after {time.monotonic() - wait.since:.0f} s: going on")
        return changed

    def _bundle_unplaced(self, g: int, dead: dict[str, str]) -> bool:
        """Whether actor g's placement-group bundle has no live node (it waits for room), as the GCS reports it.

        Read from the bundle's own node, not only the group's state: a group whose lost
        bundle waits is RESCHEDULING, but Ray may report it otherwise for a while after
        the node's death is declared.
        """
        table = placement_group_table(self.pg)
        node = (table.get("bundles_to_node_id") or {}).get(g, "")
        return table.get("state") == "RESCHEDULING" or not node.strip("0") or node in dead

    def node_ips(self) -> dict[str, str]:
        """Node id -> IP of every node the cluster has known (the dead ones too)."""
        return {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in ray.nodes()}

    def _recreate(self, g: int) -> None:
        self.log(f"actor {g} is dead for good; creating a new one in its place")
        self.hosts[g] = self._host(g, self.layout.groups[g])
        self.backend.hosts[g] = self.hosts[g]

    def rebuild(self, groups: set[int]) -> None:
        """Set up these (new) processes as at start-up: agents on the shared dataset, the setting, the profile."""
        be = self.backend
        be.fetch([self.hosts[g].setup.remote(self.data_ref) for g in sorted(groups)])
        be.fetch([be.set_setting(g, self.setting_ref, self.split_profile) for g in sorted(groups)])
        if self.cfg.clock == "wall":
            self.meet_peers(groups)

    def meet_peers(self, groups: set[int]) -> list[float]:
        """--clock wall: every actor learns every agent's actor handle; these groups run round 0's warm-up (s per batch)."""
        be = self.backend
        be.fetch([h.set_peers.remote(self.hosts, self.owner) for h in self.hosts])
        return be.fetch([be.warm_up(g) for g in sorted(groups)])

    def reset_agents(self) -> None:
        """Every group's agents as before round 0 (seeded: the same as at start-up)."""
        self.rebuild(set(range(len(self.hosts))))


def agent_span(ids) -> str:
    ids = list(ids)
    return str(ids[0]) if len(ids) == 1 else f"{ids[0]}-{ids[-1]}"
