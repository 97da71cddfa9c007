"""What the Ray runtime costs: the same local-SGD rounds with and without it, in one invocation.

    python benchmarks/overhead.py --agents 100                  # 4 rounds; ratio over rounds 2-4
    python benchmarks/overhead.py --agents 1000 --rounds 3
    python benchmarks/overhead.py --agents 100 --algorithm comdml

Two ways, same agents, shards, model, batches and seeds:
1. without Ray: one plain process per core (multiprocessing, spawn), each hosting its
   share of the agents as an `AgentGroup` in the same packing the runtime chooses; a
   round is every agent's local epoch, the exact weighted average (the same ring-order
   sum as the runtime's, its blocks passed between the processes through pipes) and the
   evaluation of the one model on the same test images as the runtime's, split over the
   processes as the runtime splits it over its actors: what the runtime's round does,
   with nothing around it;
2. through `run.py`'s runtime (`run_experiment`: Ray actors, collective all-reduce,
   the virtual clock, rows of results), with the same flags.
It prints each way's seconds per round (mean of the rounds after the first, which
pays for warm-up in both) and their ratio; 1.00x would be a free runtime.  The
runtime's own figures (driver calls and bytes per round) come from its summary.
ComDML is timed only through the runtime (there is no Ray-free ComDML here).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time

import numpy as np
import pandas as pd


def _worker(cfg, ids: list[int], all_groups: list[list[int]], conn) -> None:
    """One core's agents as a plain AgentGroup: train, send the partial sum, apply the total, evaluate its part.

    The evaluation is the runtime's (`runtime.run.Run.evaluate` under one model): each
    process scores the one model on its share (g, G) of the round's test images, the
    fixed --eval-samples subset before the last round and the whole test set at the last.
    """
    import torch

    torch.set_num_threads(1)
    from comdml_ray.runtime.backend import LocalBackend

    be = LocalBackend(cfg, all_groups)  # builds every group's Setting the same way; keeps only ours below
    g = next(i for i, gr in enumerate(all_groups) if gr == ids)
    grp = be.groups[g]
    be.groups = [grp]  # the other groups' agents are dropped: this process trains only its own
    conn.send("ready")
    for r in range(cfg.rounds):
        conn.recv()  # start of round r
        grp.train_phase(r, [])
        conn.send(grp.ring_start())
        for _ in all_groups:  # one hop per group, as the actors' ring: add to the block the parent hands over
            owner, block = conn.recv()
            conn.send(grp.ring_add(block, owner))
        grp.ring_finish(conn.recv())
        images = cfg.eval_images(last=r == cfg.rounds - 1)
        conn.send(grp.evaluate([grp.ids[0]], images, (g, len(all_groups)))[grp.ids[0]])
    conn.close()


def without_ray(cfg, groups: list[list[int]]) -> list[float]:
    """Seconds per round with one plain process per group (no Ray at all)."""
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for ids in groups:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(cfg, ids, groups, child))
        p.start()
        pipes.append(parent)
        procs.append(p)
    for c in pipes:
        assert c.recv() == "ready"
    times = []
    for _ in range(cfg.rounds):
        t0 = time.perf_counter()
        for c in pipes:
            c.send("go")
        blocks = [c.recv() for c in pipes]  # blocks[o]: the running sums of group o's chunks
        n = len(pipes)
        for h in range(n):
            owners = [(g - 1 - h) % n for g in range(n)]
            for g, c in enumerate(pipes):
                c.send((owners[g], blocks[owners[g]]))
            for g, c in enumerate(pipes):
                blocks[owners[g]] = c.recv()
        full = np.concatenate(blocks)
        for c in pipes:
            c.send(full)
        for c in pipes:
            c.recv()
        times.append(time.perf_counter() - t0)
    for p in procs:
        p.join()
    return times


def main(argv: list[str] | None = None) -> int:
    from benchmarks.run import build_parser, config_from_args, exit_code_of

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[build_parser()], add_help=False, conflict_handler="resolve")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of each way (the first is warm-up)")
    args, _ = ap.parse_known_args(argv)
    out = {}

    def job() -> None:
        from comdml_ray.experiment import run_experiment

        cfg = config_from_args(argv if argv is not None else sys.argv[1:]).replace(rounds=args.rounds, progress=False)
        cfg = cfg.replace(out=cfg.out or tempfile.mkdtemp(prefix="overhead-")).validate()
        summary = run_experiment(cfg, log=lambda *_: None)
        rounds = pd.read_csv(os.path.join(cfg.out, "rounds.csv"))
        out["ray"] = rounds["round_wall_s"].tolist()
        out["summary"] = summary
        k, n = summary["agents_per_actor"], cfg.agents
        out["groups"] = [list(range(i, min(i + k, n))) for i in range(0, n, k)]  # the runtime's packing
        if cfg.algorithm == "local" and cfg.aggregation == "allreduce":
            out["plain"] = without_ray(cfg, out["groups"])

    code = exit_code_of(job)
    if code:
        return code
    s = out["summary"]
    ray_s = float(np.mean(out["ray"][1:] or out["ray"]))
    print(
        f"agents {s['agents']}, {s['actors']} actors x {s['agents_per_actor']} agents, {s['algorithm']}, {len(out['ray'])} rounds (first is warm-up)"
    )
    print(f"through the runtime : {ray_s:7.2f} s/round   (rounds: {', '.join(f'{t:.2f}' for t in out['ray'])})")
    print(f"driver per round    : {s['driver_calls_per_round']:.0f} remote calls, {s['driver_bytes_per_round'] / 1024:.1f} KB received")
    print(f"peak memory         : {s['peak_memory_mb'] / 1024:.2f} GB (PSS of the run's processes)")
    if "plain" in out:
        plain_s = float(np.mean(out["plain"][1:] or out["plain"]))
        print(
            f"without Ray         : {plain_s:7.2f} s/round   (rounds: {', '.join(f'{t:.2f}' for t in out['plain'])}; {len(out['groups'])} processes)"
        )
        print(f"ratio               : {ray_s / plain_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
