"""How the runtime scales with the number of agents on one machine: 100 to 10,000 agents, local and ComDML.

    python benchmarks/scale.py                               # 100, 1,000, 3,000, 10,000 agents; local and comdml; 3 rounds
    python benchmarks/scale.py --agents 100 1000             # a subset, piece by piece
    python benchmarks/scale.py --agents 10000 --algorithms local

For every number of agents and algorithm: the run's actors and reducer on a local Ray
(`run.Run`, as `run.py` builds them: the CNN on Fashion-MNIST, every agent one local
epoch of its shard a round), and beside them one plain process per actor without Ray,
hosting the same agents as an `AgentGroup` (the runtime's packing): the same local
epochs, the exact all-reduce in the same float32 order (its blocks passed through
pipes, as `overhead.py` does) and the same evaluation.  The two take turns, one round
each, so both see the same load on a shared machine (the plain processes sleep while
the runtime's round runs and the other way round), at the actors' niceness (Ray starts
its workers at 15: beside other users' work an actor gets a fraction of a core that a
process at niceness 0 would not).  ComDML is set against local's plain
round (the same agents train the same batches; ComDML splits some between offloader and
helper).  It prints one row per run:
- start-up (s): Ray, the actors and their agents, the profile, the setting, the collective;
- s/round: the runtime's mean wall per round after the first, the plain processes' for
  the same batches, and their ratio;
- peak PSS (GB) of the driver and its local Ray processes (the plain processes left out);
- driver and reducer CPU seconds per round (the reducer's process sampled every second);
- bytes of agents.csv after the rounds and of one checkpoint written after them.
The figures depend on the machine and on what else runs on it.  Exit code 2 with one
sentence on a bad flag.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time

import numpy as np
import psutil

AGENTS = (100, 1000, 3000, 10000)
ALGORITHMS = ("local", "comdml")


class Watch:
    """Peak PSS of this process and its children but `exclude` (and theirs), and the reducer's CPU seconds.

    Sampled as `run.MemoryWatch` samples: every second, or 25 times what a sample cost (at most 5 s).
    """

    def __init__(self) -> None:
        self.exclude: set[int] = set()
        self.peak = 0
        self.reducer_cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        from comdml_ray.runtime.run import _pss

        me = psutil.Process()
        while True:
            t0, total = time.thread_time(), 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error, ProcessLookupError):
                    if p.pid in self.exclude or p.ppid() in self.exclude or "multiprocessing" in " ".join(p.cmdline()):
                        continue
                    total += _pss(p)
                    if "RoundReducer" in " ".join(p.cmdline()):
                        t = p.cpu_times()
                        self.reducer_cpu_s = max(self.reducer_cpu_s, t.user + t.system)
            self.peak = max(self.peak, total)
            if self._stop.wait(min(max(1.0, 25 * (time.thread_time() - t0)), 5.0)):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _worker(cfg, ids: list[int], groups: list[list[int]], conn, niceness: int) -> None:
    """One actor's agents in a plain process: each round train, the ring all-reduce through the parent, the runtime's evaluation."""
    import torch

    os.nice(niceness - os.nice(0))  # the actors' (Ray starts its workers at niceness 15)
    torch.set_num_threads(max(1, int(cfg.cpus_per_agent)))
    from comdml_ray.runtime.backend import LocalBackend

    be = LocalBackend(cfg, groups)  # the same set-up as the runtime's; this process keeps only its own group
    g = groups.index(ids)
    grp = be.groups[g]
    be.groups = [grp]
    conn.send("ready")
    for r in range(cfg.rounds):
        conn.recv()
        grp.train_phase(r, [])
        conn.send(grp.ring_start())
        for _ in groups:  # one hop per group, as the actors' ring
            owner, block = conn.recv()
            conn.send(grp.ring_add(block, owner))
        grp.ring_finish(conn.recv())
        images = cfg.eval_images(last=r == cfg.rounds - 1)
        conn.send(grp.evaluate(ids[:1], images, (g, len(groups))))  # as `Run.evaluate` shares one model's evaluation
    conn.close()


class Plain:
    """One plain process per group, started and set up now; `round()` runs one round on all of them."""

    def __init__(self, cfg, groups: list[list[int]], niceness: int, exclude: set[int]):
        ctx = mp.get_context("spawn")
        self.pipes, self.procs = [], []
        for ids in groups:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(cfg, ids, groups, child, niceness))
            p.start()
            exclude.add(p.pid)  # left out of the run's memory from the start
            self.pipes.append(parent)
            self.procs.append(p)
        for c in self.pipes:
            assert c.recv() == "ready"

    def round(self) -> float:
        t0 = time.perf_counter()
        for c in self.pipes:
            c.send("go")
        blocks = [c.recv() for c in self.pipes]
        n = len(self.pipes)
        for h in range(n):
            owners = [(g - 1 - h) % n for g in range(n)]
            for g, c in enumerate(self.pipes):
                c.send((owners[g], blocks[owners[g]]))
            for g, c in enumerate(self.pipes):
                blocks[owners[g]] = c.recv()
        full = np.concatenate(blocks)
        for c in self.pipes:
            c.send(full)
        for c in self.pipes:
            c.recv()
        return time.perf_counter() - t0

    def close(self) -> None:
        for p in self.procs:
            p.join()


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def measure(n: int, algorithm: str, rounds: int) -> dict:
    """One run's figures, its rounds taking turns with the plain processes' rounds."""
    import ray

    from comdml_ray.config import RunConfig
    from comdml_ray.runtime.cluster import start_ray
    from comdml_ray.runtime.recovery import Checkpointer, DriverState, StartPoint
    from comdml_ray.runtime.run import Run
    from comdml_ray.storage import OutDir

    def quiet(*_a, **_k) -> None:
        return None

    out = tempfile.mkdtemp(prefix=f"scale-{algorithm}-{n}-")
    cfg = RunConfig(agents=n, algorithm=algorithm, rounds=rounds, checkpoint_every=0, progress=False, out=out).validate()
    watch = Watch()
    t0 = time.perf_counter()
    start_ray(cfg, quiet)
    run = Run(cfg, log=quiet, out_dir=OutDir(out))
    startup = time.perf_counter() - t0
    try:
        niceness = psutil.Process(run.placements[0]["pid"]).nice()
        plain = Plain(dataclasses.replace(cfg, algorithm="local"), run.layout.groups, niceness, watch.exclude)
        ray_s, plain_s, driver_cpu, virtual = [], [], [], 0.0
        for r in range(rounds):
            row = run.run_round(r, virtual)
            virtual = row.virtual_time_s
            ray_s.append(row.round_wall_s)
            driver_cpu.append(row.driver_cpu_s)
            plain_s.append(plain.round())
        plain.close()
        ckpt = Checkpointer(run, cfg, run.out, quiet)
        ckpt.save(DriverState(StartPoint(rounds, virtual, 0.0), run.split_profile, dataclasses.asdict(cfg), cfg.one_model))
        reducer_cpu = watch.reducer_cpu_s
    finally:
        run.shutdown()
        ray.shutdown()
        watch.stop()
    return {
        "startup_s": startup,
        "round_s": float(np.mean(ray_s[1:])),
        "plain_s": float(np.mean(plain_s[1:])),
        "peak_gb": watch.peak / 2**30,
        "driver_cpu_s": float(np.mean(driver_cpu)),
        "reducer_cpu_s": reducer_cpu / rounds,
        "agents_csv": os.path.getsize(os.path.join(out, "agents.csv")),
        "checkpoint": folder_bytes(os.path.join(out, "checkpoints")),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, nargs="+", default=list(AGENTS), help="numbers of agents (default: 100 1000 3000 10000)")
    ap.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), help="local and/or comdml")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every run (the first is warm-up)")
    args = ap.parse_args(argv)
    if any(a not in ALGORITHMS for a in args.algorithms) or args.rounds < 2 or min(args.agents) < 2:
        print(
            "benchmarks/scale.py: give --algorithms from local, comdml, --rounds of at least 2 and --agents of at least 2 each.",
            file=sys.stderr,
        )
        return 2
    print(
        f"{'agents':>6} {'method':>6} {'start-up s':>10} {'s/round':>8} {'plain s/round':>13} {'ratio':>6} {'peak PSS GB':>11} "
        f"{'driver CPU s/round':>18} {'reducer CPU s/round':>19} {'agents.csv MB':>13} {'checkpoint MB':>13}",
        flush=True,
    )
    for n in args.agents:
        for algorithm in args.algorithms:
            t0 = time.perf_counter()
            f = measure(n, algorithm, args.rounds)
            print(
                f"{n:>6} {algorithm:>6} {f['startup_s']:>10.1f} {f['round_s']:>8.2f} {f['plain_s']:>13.2f} {f['round_s'] / f['plain_s']:>5.2f}x "
                f"{f['peak_gb']:>11.2f} {f['driver_cpu_s']:>18.2f} {f['reducer_cpu_s']:>19.2f} {f['agents_csv'] / 1e6:>13.2f} "
                f"{f['checkpoint'] / 1e6:>13.1f}   ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    from comdml_ray.runtime.cluster import exit_process

    exit_process(main())  # several Ray sessions in one process: leave without C++ static destructors
