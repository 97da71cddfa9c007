"""One experiment from start to results: the loop `benchmarks/run.py` calls.

Owns `run_experiment(cfg)`: validate, start or join Ray, place the agent actors
(`run.Run`), profile the model's splits, then for every round: train (and,
for ComDML, plan + offload), average, evaluate every `--eval-every` rounds, add the
round's virtual time to the clock and its wall time to the stopwatch; finally write
the output folder (`results/report.py`; with a `--smashed-*` option also `privacy.csv`,
`leakage.py`) and return the summary.  Asynchronous baselines
(`adpsgd`, `swift`, `divshare`, `dpsgd`) go to `comdml_ray.baselines`.
Rows are written as they happen and checkpoints taken through `recovery.RunGuard`,
which also brings a lost actor back and redoes its round; `--resume OUT` continues a
stopped run from its last checkpoint.  On an abort (an actor that keeps dying,
Ctrl-C) summary.json and accuracy.png of the rounds so far are written too.
A driver that joined a cluster watches its head (`cluster.HeadWatch`): a head gone while
the run starts or runs ends it with one sentence and exit 2.
`stop_ray(cfg)` ends the Ray that runs made with `keep_ray=True` left up (a comparison's).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from datetime import datetime

import pandas as pd
import ray

from comdml_ray.config import ONE_MODEL_ALGORITHMS, SYNC_ALGORITHMS, RunConfig
from comdml_ray.learning.data import require_dataset
from comdml_ray.learning.leakage import report_privacy
from comdml_ray.results.report import format_summary, read_rounds, time_to_target, write_summary
from comdml_ray.runtime.cluster import HeadWatch, release_capacity_request, start_ray
from comdml_ray.runtime.recovery import RunGuard, StartPoint, resumed_config
from comdml_ray.runtime.run import AgentFailure, MemoryWatch, Run
from comdml_ray.storage import OutDir
from comdml_ray.timing.profiles import make_profiles


def default_out_dir() -> str:
    return os.path.join("results", datetime.now().strftime("%Y%m%d-%H%M%S"))


def _aggregation_rule(cfg: RunConfig) -> str:
    """How this run averages, in words: --aggregation applies to local and comdml only."""
    rules = {
        "dpsgd": f"gossip on {cfg.topology}",
        "adpsgd": f"pairwise on {cfg.topology}",
        "swift": f"last models of {cfg.topology} neighbours",
        "divshare": f"{cfg.fragments} fragments to {cfg.fanout} agents",
        "local-deadline": f"allreduce, FedNova-normalised (deadline: quantile {cfg.deadline_quantile:g} of the round times)",
    }
    return rules.get(cfg.algorithm, cfg.aggregation)


def _evaluated_models(cfg: RunConfig) -> str:
    """Which models the reported test accuracy is the mean over (the same sample for every method)."""
    n = len(cfg.eval_agent_ids())
    return f"mean over {n} agents' models (all one averaged model)" if cfg.one_model else f"mean over {n} agents' models"


def run_experiment(cfg: RunConfig, log=print, keep_ray: bool = False, privacy_splits: list[int] | None = None) -> dict:
    """Run cfg to the end (with --resume: from its last checkpoint); returns the summary dict (also written to summary.json).

    privacy_splits: measure the final model's leakage at these splits into privacy.csv
    (default: only a ComDML run with a --smashed-* option set, at the splits it used).
    """
    cfg.validate()
    resume = None
    if cfg.resume:
        cfg, resume = resumed_config(cfg)
        log(f"resuming {cfg.out} at round {resume.at.next_round}")
    require_dataset(cfg.dataset, cfg.data_dir, cfg.download)  # a missing dataset fails before Ray starts
    make_profiles(cfg.heterogeneity, cfg.agents, cfg.seed, cfg.slow_link_share)  # so does a bad heterogeneity CSV row
    log(f"model {cfg.model} on {cfg.dataset}; {cfg.optimizer_line()}")
    out = OutDir(cfg.out or default_out_dir()).check_writable()
    watch = MemoryWatch()
    t_start = time.perf_counter()
    start_ray(cfg, log)
    head = HeadWatch.of_cluster()  # a joined cluster's head gone: one sentence, exit 2
    run = guard = None
    try:
        run = Run(
            cfg,
            log=log,
            out_dir=out,
            split_profile=resume.profile if resume else None,
            keep_before=resume.at.next_round if resume else None,
        )
        _write_profile(run, out)
        log(run.split_profile.format())
        startup = time.perf_counter() - t_start
        log(f"start-up: {startup:.1f} s ({len(run.hosts)} actors, {cfg.agents} agents)")
        guard = RunGuard(run, cfg, out, log, resume)
        if head is not None:
            head.hint = (
                f"during the run, so it stops; its finished rounds and last checkpoint are in {out.uri}: bring the head back and continue with --resume {out.uri}."
                if guard.ckpt.every
                else f"during the run, so it stops; its finished rounds are in {out.uri}: bring the head back and rerun."
            )
        if cfg.algorithm in SYNC_ALGORITHMS and cfg.algorithm != "dpsgd":
            _sync_loop(run, cfg, log, guard)  # rounds.csv by the guard, agents.csv and plan.csv by the reducer
        else:
            from comdml_ray.baselines import run_event_driven

            run_event_driven(run, cfg, log, guard)
        summary = _finish(cfg, run, guard, out, startup, watch, t_start)
        log(format_summary(summary))
        if out.is_local:  # the leakage probe writes privacy.csv next to the run's files
            be = run.backend
            report_privacy(
                cfg, _plans_on_disk(out.uri), lambda: be.fetch([be.flat_model(run.owner[0], 0)])[0], out.uri, privacy_splits, log
            )
        return summary
    except (AgentFailure, KeyboardInterrupt) as e:
        if guard is not None:  # a clean abort: what was computed is on disk
            _finish(cfg, run, guard, out, startup, watch, t_start, aborted=str(e) or type(e).__name__)
        raise
    finally:
        if head is not None:
            head.stop()
        watch.stop()
        release_capacity_request()  # a run that failed before placing its actors must not keep nodes up
        if guard is not None:
            guard.close()
        if run is not None:
            run.shutdown()
        if not keep_ray:
            stop_ray(cfg)


def stop_ray(cfg: RunConfig) -> None:
    """End the Ray of cfg's runs (one started with keep_ray=True, e.g. by a comparison); a cluster joined with --address stays up."""
    if not cfg.address:
        ray.shutdown()


def _write_profile(run: Run, out: OutDir) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "profile.csv")
        run.split_profile.to_csv(path)
        with open(path, "rb") as f:
            out.write_bytes("profile.csv", f.read())


def _finish(
    cfg: RunConfig, run: Run, guard: RunGuard, out: OutDir, startup: float, watch: MemoryWatch, t_start: float, aborted: str | None = None
) -> dict:
    """summary.json and accuracy.png from rounds.csv as it stands (the whole run, resumed parts included)."""
    rounds = read_rounds(out)
    summary = _summary(cfg, run, rounds, out.uri, startup, watch.stop(), time.perf_counter() - t_start)
    summary |= {
        "checkpoint_every": guard.ckpt.every,
        "checkpoint_s_per_round": float(rounds["checkpoint_s"].mean()) if len(rounds) else None,
        "failures": [dataclasses.asdict(f) for f in guard.failures],
        "time_lost_s": float(sum(f.lost_wall_s for f in guard.failures)),
        "lost_nodes": sorted({f.node for f in guard.failures if f.node_lost}),
        "resumed_from_round": guard.start.next_round if guard.start else None,
        "aborted": aborted,
    }
    write_summary(out, rounds, summary, cfg.algorithm)
    return summary


def _summary(cfg: RunConfig, run: Run, rounds: pd.DataFrame, out: str, startup: float, peak_mb: float, total_wall: float) -> dict:
    """The run's summary (summary.json and the lines printed at the end)."""
    evaluated = rounds.dropna(subset=["test_accuracy"])
    wall = float(rounds["round_wall_s"].sum())
    # Async methods evaluate while their steps run (not timed); a run resumed from an older rounds.csv may lack the columns.
    eval_wall = float(rounds["eval_wall_s"].fillna(0).sum()) if cfg.algorithm in ONE_MODEL_ALGORITHMS and "eval_wall_s" in rounds else None
    return {
        "algorithm": cfg.algorithm,
        "agents": cfg.agents,
        "rounds": len(rounds),
        "dataset": cfg.dataset,
        "model": cfg.model,
        "aggregation": _aggregation_rule(cfg),
        "evaluated": _evaluated_models(cfg),
        "heterogeneity": cfg.heterogeneity,
        "final_accuracy": float(evaluated["test_accuracy"].iloc[-1]) if len(evaluated) else None,
        "final_accuracy_images": int(evaluated["eval_images"].iloc[-1])
        if len(evaluated) and "eval_images" in evaluated
        else None,  # the whole test set
        "eval_subset_images": min(cfg.eval_samples or run.test_size, run.test_size),
        "eval_wall_s": eval_wall,
        "eval_share": None if eval_wall is None or wall <= 0 else eval_wall / wall,
        "best_accuracy": float(evaluated["test_accuracy"].max()) if len(evaluated) else None,
        "virtual_time_s": float(rounds["virtual_time_s"].iloc[-1]) if len(rounds) else 0.0,
        "wall_time_s": wall,
        "startup_s": startup,
        "total_wall_s": total_wall,
        "mean_round_wall_s": float(rounds["round_wall_s"].mean()),
        "target_acc": cfg.target_acc,
        "time_to_target_s": time_to_target(rounds, cfg.target_acc, cfg.clock),
        "peak_memory_mb": peak_mb,
        "actors": len(run.hosts),
        "agents_per_actor": max(len(g) for g in run.layout.groups),
        **run.devices(),
        "bytes_sent": int(rounds["bytes_sent"].sum()),
        "bytes_offloaded": int(rounds["bytes_offloaded"].sum()),
        "split_profile": run.split_profile.source,
        "out": out,
        "driver_calls_per_round": float(rounds["driver_calls"].mean()),
        "driver_bytes_per_round": float(rounds["driver_bytes"].mean()),
        "driver_cpu_s_per_round": float(rounds["driver_cpu_s"].mean()),
        "config": dataclasses.asdict(cfg),
    } | ({"clock": "wall", "emulate": cfg.emulate, "warm_up_s_per_batch": run.warm_up_s} if cfg.clock == "wall" else {})


def _plans_on_disk(out: str) -> pd.DataFrame:
    """plan.csv as the round reducer wrote it (empty when no round planned)."""
    path = os.path.join(out, "plan.csv")
    return pd.read_csv(path) if os.path.exists(path) and os.path.getsize(path) > 0 else pd.DataFrame()


def _sync_loop(run: Run, cfg: RunConfig, log, guard: RunGuard) -> None:
    """Rounds from the guard's start to the end; after a lost actor, on from where `guard.recover` puts the run."""
    bar = _progress(cfg)
    at = guard.start or StartPoint()
    while True:
        try:
            _rounds(run, cfg, log, guard, at, bar)
            break
        except AgentFailure as f:
            at = guard.recover(f, guard.round)
    if bar is not None:
        bar.close()


def _rounds(run: Run, cfg: RunConfig, log, guard: RunGuard, at: StartPoint, bar) -> None:
    virtual, wall = at.virtual_time_s, at.wall_time_s
    if bar is not None:
        bar.n = at.next_round
        bar.refresh()
    for r in range(at.next_round, cfg.rounds):
        guard.round = r
        row = run.run_round(r, virtual)
        virtual, wall = row.virtual_time_s, wall + row.round_wall_s
        row.wall_time_s = wall
        last = cfg.is_last(r, virtual)
        if not last:
            row.checkpoint_s = guard.checkpoint(StartPoint(r + 1, virtual, wall), last_row=row)
            wall += row.checkpoint_s
        guard.record(row)
        acc = row.test_accuracy
        if bar is not None:
            bar.set_postfix(acc=f"{100 * acc:.1f}%" if not math.isnan(acc) else "-", vtime=f"{virtual:.0f}s", pairs=row.pairs)
            bar.update(1)
        else:
            log(f"round {r + 1}/{cfg.rounds}: acc {acc:.4f} virtual {virtual:.1f}s wall {wall:.1f}s")
        if last:
            break


def _progress(cfg: RunConfig):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.rounds, desc=f"{cfg.algorithm} rounds", unit="round")
