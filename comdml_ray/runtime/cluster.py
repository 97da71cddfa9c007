"""The run's Ray cluster as the user sees it: start or join it, grow it, and point at a dead actor's log.

Owns
- `start_ray(cfg, log)`: start a Ray of the run's own, or join the cluster of a
  `ray job submit` job / `--address` (an address that takes no TCP connection is
  refused in one sentence within `CONNECT_TIMEOUT_S`, `check_reachable`, where Ray
  itself would retry for minutes).  `log_to_driver` is on, so what the agent
  actors log (one line per round per actor, warnings; see `comdml_ray.runtime.telemetry`)
  reaches the driver's output and therefore `ray job logs`.  A Ray of the run's
  own starts its dashboard (http://127.0.0.1:8265) unless `COMDML_DASHBOARD=0`:
  the test suite sets that, because the dashboard's processes cost about 7 s of
  CPU per start here and nothing in a run needs them (state comes from the GCS).
- `request_capacity(cfg, log)`: on a cluster with an autoscaler (`min_workers: 0` in
  clusters/*.yaml), ask it for the CPU/GPU bundles the run's layout needs
  (`ray.autoscaler.sdk.request_resources`, which launches them all at once, unlike
  the pending-task path that `upscaling_speed` throttles), and wait with a progress
  line until they have joined, the autoscaler stops adding nodes, or
  `--scale-timeout` passes.  The request stands until the run's placement group
  holds the nodes (else nodes that joined early could count as idle and go back
  first); `release_capacity_request()` then drops it, so the nodes go back once
  the run has ended (`idle_timeout_minutes`).
- `wait_for_placement(pg, log, timeout_s)`: wait for the agents' placement group,
  with a progress line, instead of a silent `pg.wait`; then drop the request.
- `HeadWatch`: a driver that joined a cluster watches its head; a head gone (no
  connection for `CONNECT_TIMEOUT_S`), while the run starts or later, ends the driver
  with one sentence and exit 2 instead of Ray's 60 s of retries and its own lines.
- `failure_message(who, actor, err)`: the sentence a user reads when an agent
  actor died: the agents it hosted, its node's IP and the command (or, for a Ray of
  the run's own, the file) that shows its log.
- `exit_process(code)`: leave a process that started more than one Ray session
  (the test suite, benchmarks/realtime.py) without the crash Ray 2.60 can give it
  at exit (see there).

The layout itself (agents per actor) stays in `comdml_ray.runtime.run.plan_layout`; this
module only makes sure the resources it plans from are there.
"""

from __future__ import annotations

import atexit
import glob
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import ray
from ray.util.placement_group import PlacementGroup

from comdml_ray.config import ConfigError, RunConfig

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # comdml_ray/runtime/ -> the checkout
PROGRESS_EVERY_S = 15.0  # one progress line this often while waiting for nodes
POLL_S = 2.0
STALL_S = 90.0  # no node pending or joining for this long: the autoscaler has given what it can
CONNECT_TIMEOUT_S = 10.0  # --address: how long a head may take to accept a connection before the run gives up


# ----------------------------------------------------------------------------- start or join


def start_ray(cfg: RunConfig, log: Callable[[str], None] = print) -> None:
    """Start or join Ray for cfg; on a cluster that can grow, wait for the nodes the run needs."""
    if ray.is_initialized():
        return
    if cfg.address:
        check_reachable(cfg.address)
        try:
            ray.init(address=cfg.address, log_to_driver=True)
        except ConnectionError:
            raise ConfigError(
                f"no Ray cluster found at --address {cfg.address}; start one with `ray up` / `ray start --head`, or drop --address to run locally."
            ) from None
        request_capacity(cfg, log)
    elif os.environ.get("RAY_ADDRESS"):
        # Inside `ray job submit` (or with RAY_ADDRESS exported): the cluster that runs the job.
        ray.init(log_to_driver=True)
        request_capacity(cfg, log)
    else:
        # A Ray of this run's own ("local"), never one another user or session started on
        # this machine. Workers import this project from its root, wherever the driver ran.
        path = os.pathsep.join(p for p in (PROJECT_ROOT, os.environ.get("PYTHONPATH", "")) if p)
        ray.init(
            address="local",
            num_cpus=cfg.num_cpus,
            num_gpus=cfg.num_gpus,
            log_to_driver=True,
            include_dashboard=os.environ.get("COMDML_DASHBOARD", "1") != "0",
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )


def check_reachable(address: str, timeout_s: float | None = None) -> None:
    """ConfigError (one sentence) when `--address HOST:PORT` accepts no TCP connection within timeout_s; `auto` and URIs pass.

    Retried once a second until timeout_s (a head that is still starting comes up),
    but never as long as Ray's own retries (over 120 s for a port nobody listens on).
    """
    if address in ("auto", "local") or "://" in address:
        return
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--address {address} is not HOST:PORT; give the head's GCS address (e.g. 10.0.0.5:6379) or auto.")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=max(0.5, min(5.0, deadline - time.monotonic()))):
                return
        except socket.gaierror as e:
            raise ConfigError(
                f"--address {address}: the host name {host} does not resolve ({e.strerror}); give the head's IP address and port."
            ) from None
        except OSError as e:
            reason = e.strerror or type(e).__name__
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"no Ray cluster answers at --address {address} ({reason} for {timeout_s:.0f} s); "
                f"check the head's address and port (`ray status` on the head prints them), or drop --address to run locally."
            )
        time.sleep(1.0)


class HeadWatch:
    """A joined cluster's head, tried once a second: no TCP connection to its GCS for CONNECT_TIMEOUT_S ends the driver.

    Without it, a driver whose head has gone waits in Ray's own retries for 60 s and
    then exits 1 with Ray's lines.  With it: one sentence on stderr (`hint` says what
    was computed and what to do) and exit status 2, at once, from this thread: the
    main thread is blocked inside Ray.  Rows and checkpoints are flushed as they are
    written, so what was computed stays on disk.
    """

    STARTING = (
        "while the run was starting, so it stops with nothing computed: start the head again (`ray start --head`, or `ray up`) and rerun."
    )

    def __init__(self, gcs_address: str, poll_s: float = 1.0, timeout_s: float = CONNECT_TIMEOUT_S):
        self.address, self.poll_s, self.timeout_s = gcs_address, poll_s, timeout_s
        self.hint = self.STARTING
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="comdml-head-watch", daemon=True)
        self._thread.start()

    @staticmethod
    def of_cluster() -> HeadWatch | None:
        """A watch of the cluster this driver joined (None for a Ray of the run's own, which lives and dies with it)."""
        node = ray._private.worker._global_node
        if node is None or node.is_head():
            return None
        return HeadWatch(ray.get_runtime_context().gcs_address)

    def _answers(self) -> bool:
        host, _, port = self.address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=min(2.0, self.timeout_s)):
                return True
        except OSError:
            return False

    def _loop(self) -> None:
        silent_since = None
        while not self._stop.wait(self.poll_s):
            if self._answers():
                silent_since = None
                continue
            silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since >= self.timeout_s and not self._stop.is_set():
                sys.stderr.write(
                    f"error: the Ray head at {self.address} stopped answering (no connection for {self.timeout_s:.0f} s) {self.hint}\n"
                )
                sys.stderr.flush()
                sys.stdout.flush()
                os._exit(2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def exit_process(code: int) -> NoReturn:
    """End this process with exit status `code`: Python's exit handlers run, C++ static destructors do not.

    For a process that started Ray more than once.  Ray 2.60's driver shuts its
    OpenTelemetry metric reader down only at the end of a process's first Ray session
    (the meter provider under it can be shut down once); each later session leaves its
    reader thread running, exporting to that session's metrics agent, long gone, and
    logging a warning every `metrics_report_interval_ms`.  When such a warning is
    written while the exiting process runs its C++ static destructors (Ray's logger
    registry among them), the process dies with SIGSEGV after all its work is done:
    in the core dumps, OpenTelemetryMetricExporter::Export -> RayLog::~RayLog ->
    spdlog registry, with the main thread in torch's static destructors.  The test
    suite, which starts Ray once per module, ended that way in about half its runs.
    So: run the atexit handlers (Ray's own shutdown, logging's flush, finalizers) as a
    normal exit would, flush, and leave with `os._exit`, which skips only the C++
    teardown.  A process with one Ray session does not need this (its reader is shut
    down with the session).
    """
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))


# ----------------------------------------------------------------------------- elastic clusters


@dataclass
class Demand:
    """What the run's actors ask Ray for: one bundle per actor."""

    bundles: list[dict[str, float]]

    @property
    def cpus(self) -> float:
        return sum(b.get("CPU", 0.0) for b in self.bundles)

    @property
    def gpus(self) -> float:
        return sum(b.get("GPU", 0.0) for b in self.bundles)

    def met_by(self, resources: dict) -> bool:
        return resources.get("CPU", 0.0) >= self.cpus - 1e-9 and resources.get("GPU", 0.0) >= self.gpus - 1e-9


def demand_of(cfg: RunConfig) -> Demand:
    """Bundles of the layout the run prefers: one actor per agent under `auto`, else ceil(agents / k) actors."""
    actors = cfg.agents if cfg.agents_per_actor == "auto" else math.ceil(cfg.agents / int(cfg.agents_per_actor))
    bundle = {"CPU": float(cfg.cpus_per_agent)} | ({"GPU": float(cfg.gpus_per_agent)} if cfg.gpus_per_agent > 0 else {})
    return Demand([dict(bundle) for _ in range(actors)])


@dataclass
class AutoscalerView:
    """What the autoscaler last reported (None when the cluster has no autoscaler)."""

    pending: int  # nodes being launched or set up
    failed: int


def autoscaler_view(wait_s: float = 0.0) -> AutoscalerView | None:
    """What the cluster's autoscaler reports now; None on a fixed cluster (`ray start` without --autoscaling-config).

    Autoscaler v1 (the default of `ray up`): Ray's monitor runs on every head and
    publishes a status every few seconds; wait_s covers a head so new that it has not
    published yet.  On a cluster started by hand the monitor reports too, but through a
    read-only provider that launches nothing (`_read_only`): that is a fixed cluster.
    Autoscaler v2 (RAY_enable_autoscaler_v2=1): its own cluster status.
    """
    import json

    from ray._private import ray_constants
    from ray.autoscaler.v2.utils import is_autoscaler_v2
    from ray.experimental.internal_kv import _internal_kv_get

    if is_autoscaler_v2(fetch_from_server=True):
        from ray.autoscaler.v2.sdk import get_cluster_status

        st = get_cluster_status(ray.get_runtime_context().gcs_address)
        pending = len(st.pending_nodes) + sum(int(getattr(r, "count", 1)) for r in st.pending_launches)
        return AutoscalerView(pending=pending, failed=len(st.failed_nodes))
    deadline = time.monotonic() + wait_s
    while True:
        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        if raw or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    report = json.loads(raw).get("autoscaler_report") if raw else None
    if not report or _read_only(report):
        return None
    pending = len(report.get("pending_nodes") or []) + sum(int(n) for n in (report.get("pending_launches") or {}).values())
    return AutoscalerView(pending=pending, failed=len(report.get("failed_nodes") or []))


def _read_only(report: dict) -> bool:
    """True for the report of Ray's read-only provider (a cluster of `ray start` nodes): every node is a type of its own, `node_<id>`.

    Without this check a run on such a cluster asked it for nodes and waited STALL_S
    (90 s) for an autoscaler that can launch none.
    """
    mapping = report.get("node_type_mapping") or {}
    return bool(mapping) and all(node_type == f"node_{node_id}" for node_id, node_type in mapping.items())


def request_capacity(cfg: RunConfig, log: Callable[[str], None] = print, timeout_s: float | None = None) -> dict:
    """Ask an autoscaler for the run's bundles and wait for them; returns the cluster's resources then.

    A fixed cluster, or one that already holds the run, returns at once: `plan_layout`
    then packs agents into fewer actors or refuses, as before.
    """
    need = demand_of(cfg)
    have = ray.cluster_resources()
    if need.met_by(have):
        return have
    timeout_s = cfg.scale_timeout_s if timeout_s is None else timeout_s
    if timeout_s <= 0:
        return have
    view = autoscaler_view(wait_s=15.0)
    if view is None:
        return have
    from ray.autoscaler.sdk import request_resources

    global _request_open  # noqa: PLW0603 -- one standing autoscaler request per driver process
    request_resources(bundles=need.bundles)
    _request_open = True
    t0 = last_line = last_change = time.monotonic()
    seen = (have.get("CPU", 0.0), have.get("GPU", 0.0))
    log(_progress_line(need, have, view, 0.0, timeout_s))
    while True:
        time.sleep(POLL_S)
        now = time.monotonic()
        have = ray.cluster_resources()
        view = autoscaler_view() or AutoscalerView(0, 0)
        if need.met_by(have):
            log(f"cluster ready after {(now - t0) / 60:.1f} min: {_count(have, need)}")
            return have
        if (have.get("CPU", 0.0), have.get("GPU", 0.0)) != seen or view.pending:
            seen, last_change = (have.get("CPU", 0.0), have.get("GPU", 0.0)), now
        if now - last_change > STALL_S:
            log(f"the autoscaler adds no more nodes (max_workers reached, or quota): going on with {_count(have, need)}")
            return have
        if now - t0 > timeout_s:
            log(f"--scale-timeout {timeout_s:.0f} s passed: going on with {_count(have, need)}")
            return have
        if now - last_line >= PROGRESS_EVERY_S:
            log(_progress_line(need, have, view, now - t0, timeout_s))
            last_line = now


_request_open = False  # request_capacity asked the autoscaler for nodes and nobody has dropped the request yet


def release_capacity_request() -> None:
    """Drop this run's standing request to the autoscaler (no-op when there is none, or Ray is gone)."""
    global _request_open  # noqa: PLW0603 -- see request_capacity
    if not _request_open or not ray.is_initialized():
        return
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[])
    _request_open = False


def _count(have: dict, need: Demand) -> str:
    parts = [f"{have.get('CPU', 0.0):g}/{need.cpus:g} CPUs"]
    if need.gpus:
        parts.insert(0, f"{have.get('GPU', 0.0):g}/{need.gpus:g} GPUs")
    return ", ".join(parts)


def _progress_line(need: Demand, have: dict, view: AutoscalerView, elapsed_s: float, timeout_s: float) -> str:
    extra = f", {view.pending} nodes starting" if view.pending else ""
    extra += f", {view.failed} failed to start" if view.failed else ""
    return (
        f"waiting for the autoscaler: {_count(have, need)}{extra} "
        f"({elapsed_s / 60:.1f} of at most {timeout_s / 60:.0f} min; `ray status` on the head shows more)"
    )


def wait_for_placement(pg: PlacementGroup, log: Callable[[str], None] = print, timeout_s: float = 120.0) -> None:
    """Wait until the agents' placement group is placed, printing what it waits for; ConfigError at timeout_s."""
    t0 = time.monotonic()
    step = min(PROGRESS_EVERY_S, timeout_s)
    try:
        while not pg.wait(timeout_seconds=step):
            waited = time.monotonic() - t0
            if waited >= timeout_s:
                raise ConfigError(
                    f"the cluster could not place all agent actors within {timeout_s:.0f} s; check `ray status` for free CPUs/GPUs or lower --agents/--cpus-per-agent."
                )
            free = ray.available_resources()
            log(
                f"placing {len(pg.bundle_specs)} agent actors: waiting {waited:.0f} s for CPUs/GPUs "
                f"({free.get('CPU', 0.0):g} CPUs, {free.get('GPU', 0.0):g} GPUs free now)"
            )
    finally:
        release_capacity_request()  # placed: the group holds the nodes now


# ----------------------------------------------------------------------------- failures


@dataclass
class ActorWhere:
    """Where an actor ran, from the GCS actor table (kept after it died)."""

    actor_id: str
    name: str
    node_ip: str
    pid: int


def actor_where(actor: ray.actor.ActorHandle) -> ActorWhere:
    actor_id = actor._actor_id.hex()
    try:
        info = ray._private.state.actors(actor_id)  # GCS, so it works without the dashboard
    except Exception:
        info = {}
    return ActorWhere(actor_id, info.get("Name") or "?", (info.get("Address") or {}).get("IPAddress") or "?", int(info.get("Pid") or 0))


def failure_message(who: str, actor: ray.actor.ActorHandle, err: Exception) -> str:
    """One sentence: which agents died, on which node, and how to read the actor's log."""
    w = actor_where(actor)
    where = f"the actor hosting {who} ({w.name}, pid {w.pid}) died on node {w.node_ip} ({type(err).__name__})"
    return f"{where}; {log_hint(w)}; rerun."


def log_hint(w: ActorWhere) -> str:
    """The command that prints the actor's log on a cluster; the file itself for a Ray of the run's own (gone after the run)."""
    node = ray._private.worker._global_node
    if node is not None and node.is_head() and w.pid:  # this driver started the Ray (a local run): head=False when it joined one
        files = sorted(glob.glob(os.path.join(node.get_logs_dir_path(), f"worker-*-{w.pid}.err")))
        if files:
            return f"its log is {files[-1]} (and the .out beside it)"
    gcs = ray.get_runtime_context().gcs_address
    return f"show its log with `ray logs actor --id {w.actor_id} --address {gcs} --err` on a node of the cluster"
