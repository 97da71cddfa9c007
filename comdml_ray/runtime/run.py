"""The experiment on Ray: place the agent actors, drive synchronous rounds (`cluster.start_ray` starts or joins Ray).

Owns
- `Run`: the actors (in a placement group: `pack`, `spread`, or `slots`: actor g's bundle
  also asks for the custom resource `comdml_slot_<g>`, so it lands on the one node that
  offers it, e.g. a test bed node shaped to agent g's link; sized by
  `layout.plan_layout`), the dataset put once in the object store, the split profile,
  the run's `Setting`, the collective group, and one round of `local` or `comdml`:
  train (for ComDML: plan, offload, help, finish), average (one collective, or
  one gossip step), then the rows of results (`rows.sync_round_rows`);
- `MemoryWatch`: the run's peak memory.
Actors are created with restarts (`faults.ACTOR_OPTIONS`); `faults.RunRecovery`, mixed
into `Run`, injects faults, waits for a restarted actor and rebuilds the group.
Under `--clock wall` the actors are `actors.WallHost`s that know each other, round 0
starts after a measured warm-up, a round is `rounds.wall_round` (overlapped, no
barrier), and its wall time runs from its start to the end of the averaging
(the rows and the evaluation after it are timed apart, `eval_wall_s`).
The driver talks to the agents only through `backend.Backend` (here `actors.RayBackend`)
and only moves ObjectRefs: weights, activations and data never pass through it.
Per round it makes O(actors) calls; it receives the groups' small reports.
`comdml_ray.experiment.run_experiment` drives a `Run` round by round; the
asynchronous baselines run on the event clock in `comdml_ray.baselines`.
"""

from __future__ import annotations

import contextlib
import pickle
import tempfile
import threading
import time

import numpy as np
import psutil
import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from comdml_ray.config import RunConfig
from comdml_ray.learning.costmodel import SplitProfile
from comdml_ray.learning.data import load_dataset
from comdml_ray.results.rows import ClockSplits, RoundRow
from comdml_ray.runtime.actors import AgentFailure, AgentHostActor, RayBackend, WallHostActor  # noqa: F401  (AgentFailure re-exported)
from comdml_ray.runtime.cluster import autoscaler_view, wait_for_placement
from comdml_ray.runtime.faults import ACTOR_OPTIONS, RunRecovery
from comdml_ray.runtime.layout import check_nodes_fit, plan_layout
from comdml_ray.runtime.reducer import RoundReducerActor
from comdml_ray.runtime.rounds import average, train_round, wall_round
from comdml_ray.runtime.telemetry import with_idle_share
from comdml_ray.storage import OutDir
from comdml_ray.timing.emulation import now
from comdml_ray.timing.setting import Setting


def _pss(p: psutil.Process) -> int:
    """A process's PSS in bytes: the kernel's one-line rollup where it has one, else psutil's (which
    parses all of /proc/PID/smaps: sampled every second, that was most of the driver's CPU time)."""
    try:
        with open(f"/proc/{p.pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        if not psutil.pid_exists(p.pid):
            raise ProcessLookupError(p.pid) from None
    except PermissionError:
        raise psutil.AccessDenied(p.pid) from None
    return p.memory_full_info().pss


class MemoryWatch:
    """Peak memory of this run: proportional set size (PSS) summed over the driver and its process tree.

    A local Ray started by the driver (GCS, raylet, dashboard, the agent actors and
    their share of the object store's shared memory) lives in that tree, so the peak
    is the run's own footprint, unaffected by other programs on the machine.  With
    --address only the driver is counted.  Sampled once a second, or less often when a
    sample is costly: the kernel walks every page of a process to sum its PSS (at 10,000
    agents ~0.1 s a sample, which at once a second was most of the driver's CPU and a
    tenth of a core taken from the actors), so the watch waits `COST_FACTOR` times what
    the last sample took, at most `MAX_INTERVAL_S`.
    """

    COST_FACTOR = 25.0  # at most ~4% of one core
    MAX_INTERVAL_S = 5.0

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @staticmethod
    def sample() -> int:
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ProcessLookupError):
                total += _pss(p)
        return total

    def _loop(self) -> None:
        while True:
            t0 = time.thread_time()
            self.peak = max(self.peak, self.sample())
            cost = time.thread_time() - t0
            if self._stop.wait(min(max(self.interval_s, self.COST_FACTOR * cost), self.MAX_INTERVAL_S)):
                return

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


# ----------------------------------------------------------------------------- the run

SLOT_RESOURCE = "comdml_slot_{}"  # `--placement slots`: the custom resource only actor g's node offers


class Run(RunRecovery):
    """Actors of one experiment and the steps of a synchronous round.

    `split_profile`: a resumed run's saved profile (else profiled now); `keep_before`:
    a resumed run keeps the rows of rounds before this one in agents.csv and plan.csv.
    """

    def __init__(
        self,
        cfg: RunConfig,
        log=print,
        out_dir: OutDir | str | None = None,
        split_profile: SplitProfile | None = None,
        keep_before: int | None = None,
    ):
        self.cfg = cfg
        self.log = log
        self.received = 0  # bytes of results the driver received (reset every round)
        self.layout = plan_layout(cfg, ray.cluster_resources())
        view = autoscaler_view()
        if view is None or view.pending == 0:  # no node on its way: an actor no node can hold would wait for placement in vain
            check_nodes_fit(self.layout, [n["Resources"] for n in ray.nodes() if n.get("Alive")])
        self.log(f"layout: {len(self.layout.groups)} actors, {self.layout.reason}")
        self.init_faults()
        groups = self.layout.groups
        self.owner = {k: g for g, ids in enumerate(groups) for k in ids}
        # The round's reducer lives beside the driver (same node, same output folder); its process starts now, beside
        # the agent actors', and `start` gives it the run once that is set up.
        self.reducer = RoundReducerActor.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        ).remote()
        self.pg = placement_group([self._bundle(g) for g in range(len(groups))], strategy="PACK" if cfg.placement == "pack" else "SPREAD")
        wait_for_placement(self.pg, self.log, timeout_s=120)
        self.hosts = [self._host(g, ids) for g, ids in enumerate(groups)]
        self.backend = be = RayBackend(self.hosts, groups)
        # The uint8 dataset goes into the object store once; every actor on a node maps that one copy.
        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
        self.test_size = len(data.test_y)
        self.data_ref = ray.put(data)
        del data
        self.infos = sorted(
            (i for lst in be.fetch([h.setup.remote(self.data_ref) for h in self.hosts]) for i in lst), key=lambda i: i.agent
        )
        self.placements = be.fetch([h.placement.remote() for h in self.hosts])
        self.split_profile: SplitProfile = split_profile or be.fetch([be.profile_splits(0)])[0]
        self.setting = Setting.build(
            cfg,
            groups,
            np.array([i.num_samples for i in self.infos]),
            np.array([i.batches_per_round for i in self.infos]),
            self.split_profile.base_sec_per_batch,
            self.split_profile.model_bytes,
        )
        self.setting_ref = setting_ref = ray.put(self.setting)
        be.fetch([be.set_setting(g, setting_ref, self.split_profile) for g in range(be.num_groups)])
        self.join_collective()
        aux_bytes = 4 * np.array(be.fetch([be.aux_sizes(0)])[0])  # float32 aux head of each split row
        self.warm_up_s: list[float] = []
        if cfg.clock == "wall":  # peers message each other; round 0's estimates come from a short measured warm-up
            self.warm_up_s = self.meet_peers(set(range(be.num_groups)))
        self.profiles = [i.profile for i in self.infos]
        self.out = out_dir if isinstance(out_dir, OutDir) else OutDir(out_dir or tempfile.mkdtemp(prefix="comdml-run-"))
        self.out_dir = self.out.uri
        self.reducer.start.remote(
            setting_ref, ClockSplits.of(self.split_profile, aux_bytes), cfg.aggregation, self.out, keep_before, cfg.clock
        )

    def devices(self) -> dict:
        """Where the agents trained (summary.json): the actors' devices and kernels (torch build, CPU instruction set), the collective's backend and why, and on GPUs the peak memory per actor.

        The peak is read from the actors now (the end of the run); an actor that cannot
        answer within a few seconds (a run ending on a failure) leaves it out.
        """
        out = {
            "devices": sorted({p["device"] for p in self.placements}),
            "kernels": sorted({p["kernels"] for p in self.placements}),
            "collective": self.collective.backend if self.collective else None,
            "collective_reason": self.collective.reason if self.collective else None,
            "device_peak_mb_per_actor": None,
        }
        if any(p["device"] != "cpu" for p in self.placements):
            with contextlib.suppress(Exception):
                now = ray.get([h.placement.remote() for h in self.hosts], timeout=10)
                out["device_peak_mb_per_actor"] = [p["device_peak_mb"] for p in now]
        return out

    def _bundle(self, g: int | None = None) -> dict:
        """Actor g's bundle: its CPUs and GPUs, and under `--placement slots` one unit of `comdml_slot_<g>` (its node)."""
        slot = {SLOT_RESOURCE.format(g): 1.0} if self.cfg.placement == "slots" and g is not None else {}
        return {"CPU": self.layout.cpus} | ({"GPU": self.layout.gpus} if self.layout.gpus > 0 else {}) | slot

    def _host(self, g: int, ids: list[int]):
        name = f"agent-{ids[0]:03d}" if len(ids) == 1 else f"agents-{ids[0]:03d}-{ids[-1]:03d}"
        cls = WallHostActor if self.cfg.clock == "wall" else AgentHostActor
        return cls.options(
            name=name,
            num_cpus=self.layout.cpus,
            num_gpus=self.layout.gpus,
            **ACTOR_OPTIONS,
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=g),
        ).remote(g, ids, self.cfg)

    def shutdown(self, timeout_s: float = 30.0, release_wait_s: float = 5.0) -> None:
        """Kill the actors and free their placement group before returning, so the next run finds the resources free.

        "REMOVED" comes before the bundles' CPUs/GPUs are back in the pool the scheduler
        sees; a PACK group created in that gap lands on other nodes. So also wait (at most
        release_wait_s: another job may take them) until the pool has grown by the group.
        """
        held: dict[str, float] = {}
        for b in self.pg.bundle_specs:
            for k, v in b.items():
                held[k] = held.get(k, 0.0) + v
        before = ray.available_resources()
        with contextlib.suppress(Exception):  # the reducer may be gone already; its files are flushed or lost either way
            ray.get(self.reducer.close.remote(), timeout=timeout_s)
        ray.kill(self.reducer)
        for h in self.hosts:
            ray.kill(h)
        remove_placement_group(self.pg)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and placement_group_table(self.pg).get("state") != "REMOVED":
            time.sleep(0.1)
        deadline = time.monotonic() + release_wait_s
        while time.monotonic() < deadline:
            now = ray.available_resources()
            if all(now.get(k, 0.0) >= before.get(k, 0.0) + v - 1e-6 for k, v in held.items()):
                break
            time.sleep(0.05)

    # ------------------------------------------------------------------ one round
    def run_round(self, r: int, virtual_before: float = 0.0) -> RoundRow:
        """One round, top to bottom: train (ComDML: plan, offload, help, finish), average, reduce, evaluate.

        The driver hands refs around and receives only digests, acks and the round's row:
        the reports go from the actors straight to the reducer.
        """
        t0, start, cpu0 = time.perf_counter(), time.time(), time.process_time()
        be = self.backend
        calls0, self.received = be.calls, 0
        self.inject_faults(r)
        comdml = self.cfg.algorithm == "comdml"
        if self.cfg.clock == "wall":
            t_start = now()  # the round's wall time: the driver's own clock, start to end of the averaging
            row = self._wall_round(r, start, t_start, comdml)
            wall_s = now() - t_start
        else:
            reports, plan = train_round(be, r, comdml=comdml, fetch=self._fetch)
            reduced, metrics = self._reduce_call(r, start, plan, reports)
            # The collective waits for the reports (a lost actor cancels it), not for the reducer, which runs beside it;
            # the actors record their agents' metrics after it (an actor runs its calls in the order they were made).
            acks = self.aggregate(after=reports)
            self._forward_metrics(metrics)
            row = self._fetch([reduced, *acks])[0]
        be.calls += 1
        row.virtual_time_s = virtual_before + row.round_virtual_s
        if self.cfg.evaluates(r, row.virtual_time_s):
            t_eval = time.perf_counter()
            images = self.cfg.eval_images(last=self.cfg.is_last(r, row.virtual_time_s))
            row.test_accuracy = self.evaluate(images)
            row.eval_images = self.test_size if images is None else min(images, self.test_size)
            row.eval_wall_s = time.perf_counter() - t_eval
            if self.cfg.one_model:
                row.consensus_accuracy = row.test_accuracy
            be.record_metrics(0, [], row.test_accuracy)
        row.round_wall_s = time.perf_counter() - t0
        if self.cfg.clock == "wall":
            row.round_wall_s, row.eval_wall_s = wall_s, row.round_wall_s - wall_s
        row.driver_calls, row.driver_bytes = be.calls - calls0, self.received
        row.driver_cpu_s = time.process_time() - cpu0
        return row

    def _wall_round(self, r: int, start: float, t_start: float, comdml: bool) -> RoundRow:
        """--clock wall: the overlapped round, the averaging as soon as every model is whole, then the rows.

        The collective waits for the reports themselves (a dead actor cancels it), not for
        the reducer, which is called after it with the round's seconds.  Every duration is
        read on one clock: the round's and the planning's on the driver's (`t_start`), each
        agent's `whole_s` on its own node from its call's start; the reducer adds the two.
        """
        reports, plan = wall_round(self.backend, r, comdml, fetch=self._fetch)
        lead_s = now() - t_start  # planning and the calls that start the round, before any agent's clock starts
        self._fetch(self.aggregate(after=reports))
        wall_s = now() - t_start
        return self._fetch([self._reduce(r, start, plan, reports, wall=(wall_s, lead_s))])[0]

    def _reduce(self, r: int, start: float, plan, reports: list, wall: tuple[float, float] | None = None):
        """The reducer's call for round r; forwards each actor its agents' metric rows (refs: the driver does not fetch them). Returns the row's ref."""
        row, metrics = self._reduce_call(r, start, plan, reports, wall)
        self._forward_metrics(metrics)
        return row

    def _reduce_call(self, r: int, start: float, plan, reports: list, wall: tuple[float, float] | None = None) -> tuple:
        """(the ref of round r's row, the refs of each actor's metric rows): the reducer's call, started."""
        row, *metrics = self.reducer.reduce.options(num_returns=1 + self.backend.num_groups).remote(r, start, plan, *reports, wall=wall)
        return row, metrics

    def _forward_metrics(self, metrics: list) -> None:
        for g, rows in enumerate(metrics):
            self.backend.record_metrics(g, rows, None)

    def _fetch(self, handles: list) -> list:
        values = self.backend.fetch(handles)
        self.received += len(pickle.dumps(values, protocol=5))
        return values

    def aggregate(self, after: list | tuple = ()) -> list:
        """Start the averaging step (see `rounds.average`); returns the acks to wait for.

        The collective waits for `after` (see `actors.AgentHost.allreduce`).
        """
        return average(self.backend, self.setting, self.cfg.aggregation, aux=self.cfg.algorithm == "comdml", fetch=self._fetch, after=after)

    def evaluate(self, images: int | None = None) -> float:
        """Mean test accuracy of the --eval-agents sample's models on `images` test images (None: all); under exact all-reduce they are one model, evaluated once."""
        be = self.backend
        if self.cfg.one_model and be.num_groups > 1:
            # All agents hold the one averaged model: every group evaluates its first agent's copy on
            # every G-th image, so the evaluation runs on all actors at once; the mean weighs by images.
            n, G = min(images or self.test_size, self.test_size), be.num_groups
            parts = self._fetch([be.evaluate(g, ids[:1], images, (g, G)) for g, ids in enumerate(self.setting.groups)])
            return float(sum(acc * len(range(g, n, G)) for g, d in enumerate(parts) for acc in d.values()) / n)
        accs = self._fetch([be.evaluate(g, ks, images) for g, ks in self.setting.groups_of(self.cfg.scored_agent_ids()).items()])
        return float(np.mean([a for d in accs for a in d.values()]))

    def record_metrics(self, agent_rows: list, accuracy: float | None) -> None:
        """Dashboard metrics of the event-driven baselines' rows (the reducer does this for synchronous rounds)."""
        by_group: dict[int, list[dict]] = {}
        for a in with_idle_share([vars(a) for a in agent_rows]):
            by_group.setdefault(self.owner[a["agent"]], []).append(a)
        for g in range(self.backend.num_groups):
            self.backend.record_metrics(g, by_group.get(g, []), accuracy if g == 0 else None)
