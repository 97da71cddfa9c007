"""One experiment from start to results: the loop `benchmarks/run.py` calls.

Owns `run_experiment(cfg)`: validate, start or join Ray, place the agent actors
(`runtime.Run`), profile the model's splits, then for every round: train (and,
for ComDML, plan + offload), average, evaluate every `--eval-every` rounds, add the
round's virtual time to the clock and its wall time to the stopwatch; finally write
the output folder (`results.py`; with a `--smashed-*` option also `privacy.csv`,
`leakage.py`) and return the summary.  Asynchronous baselines
(`adpsgd`, `swift`, `divshare`, `dpsgd`) go to `comdml_ray.baselines`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from datetime import datetime

import pandas as pd
import ray

from comdml_ray.cluster import release_capacity_request, start_ray
from comdml_ray.config import SYNC_ALGORITHMS, ConfigError, RunConfig
from comdml_ray.leakage import report_privacy
from comdml_ray.results import format_summary, frame, time_to_target, write_outputs
from comdml_ray.runtime import MemoryWatch, Run


def default_out_dir() -> str:
    return os.path.join("results", datetime.now().strftime("%Y%m%d-%H%M%S"))


def _aggregation_rule(cfg: RunConfig) -> str:
    """How this run averages, in words: --aggregation applies to local and comdml only."""
    rules = {
        "dpsgd": f"gossip on {cfg.topology}",
        "adpsgd": f"pairwise on {cfg.topology}",
        "swift": f"last models of {cfg.topology} neighbours",
        "divshare": f"{cfg.fragments} fragments to {cfg.fanout} agents",
    }
    return rules.get(cfg.algorithm, cfg.aggregation)


def _evaluated_models(cfg: RunConfig) -> str:
    """Which models the reported test accuracy is the mean over (the same sample for every method)."""
    n = len(cfg.eval_agent_ids())
    return f"mean over {n} agents' models (all one averaged model)" if cfg.one_model else f"mean over {n} agents' models"


def run_experiment(cfg: RunConfig, log=print, keep_ray: bool = False, privacy_splits: list[int] | None = None) -> dict:
    """Run cfg to the end; returns the summary dict (also written to summary.json).

    privacy_splits: measure the final model's leakage at these splits into privacy.csv
    (default: only a ComDML run with a --smashed-* option set, at the splits it used).
    """
    cfg.validate()
    out = check_writable(cfg.out or default_out_dir())
    watch = MemoryWatch()
    t_start = time.perf_counter()
    start_ray(cfg, log)
    run = None
    try:
        run = Run(cfg, log=log, out_dir=out)
        run.split_profile.to_csv(os.path.join(out, "profile.csv"))
        log(run.split_profile.format())
        startup = time.perf_counter() - t_start
        log(f"start-up: {startup:.1f} s ({len(run.hosts)} actors, {cfg.agents} agents)")
        if cfg.algorithm in SYNC_ALGORITHMS and cfg.algorithm != "dpsgd":
            rounds, agents, plans = _sync_loop(run, cfg, log), None, None  # the reducer wrote agents.csv, plan.csv
        else:
            from comdml_ray.baselines import run_event_driven

            rounds, agents, plans = run_event_driven(run, cfg, log)
        summary = _summary(cfg, run, rounds, out, startup, watch.stop(), time.perf_counter() - t_start)
        write_outputs(out, rounds, agents, plans, summary, cfg.algorithm)
        log(format_summary(summary))
        be = run.backend
        report_privacy(cfg, _plans_on_disk(out) if plans is None else plans, lambda: be.fetch([be.flat_model(run.owner[0], 0)])[0],
                       out, privacy_splits, log)
        return summary
    finally:
        watch.stop()
        release_capacity_request()  # a run that failed before placing its actors must not keep nodes up (issue 16)
        if run is not None:
            run.shutdown()
        if not keep_ray and not cfg.address:
            ray.shutdown()


def _summary(cfg: RunConfig, run: Run, rounds: pd.DataFrame, out: str, startup: float, peak_mb: float, total_wall: float) -> dict:
    """The run's summary (summary.json and the lines printed at the end)."""
    evaluated = rounds.dropna(subset=["test_accuracy"])
    return {
        "algorithm": cfg.algorithm,
        "agents": cfg.agents,
        "rounds": int(len(rounds)),
        "dataset": cfg.dataset,
        "model": cfg.model,
        "aggregation": _aggregation_rule(cfg),
        "evaluated": _evaluated_models(cfg),
        "heterogeneity": cfg.heterogeneity,
        "final_accuracy": float(evaluated["test_accuracy"].iloc[-1]) if len(evaluated) else None,
        "best_accuracy": float(evaluated["test_accuracy"].max()) if len(evaluated) else None,
        "virtual_time_s": float(rounds["virtual_time_s"].iloc[-1]),
        "wall_time_s": float(rounds["round_wall_s"].sum()),
        "startup_s": startup,
        "total_wall_s": total_wall,
        "mean_round_wall_s": float(rounds["round_wall_s"].mean()),
        "target_acc": cfg.target_acc,
        "time_to_target_s": time_to_target(rounds, cfg.target_acc),
        "peak_memory_mb": peak_mb,
        "actors": len(run.hosts),
        "agents_per_actor": max(len(g) for g in run.layout.groups),
        "bytes_sent": int(rounds["bytes_sent"].sum()),
        "bytes_offloaded": int(rounds["bytes_offloaded"].sum()),
        "split_profile": run.split_profile.source,
        "out": out,
        "driver_calls_per_round": float(rounds["driver_calls"].mean()),
        "driver_bytes_per_round": float(rounds["driver_bytes"].mean()),
        "driver_cpu_s_per_round": float(rounds["driver_cpu_s"].mean()),
        "config": dataclasses.asdict(cfg),
    }

def _plans_on_disk(out: str) -> pd.DataFrame:
    """plan.csv as the round reducer wrote it (empty when no round planned)."""
    path = os.path.join(out, "plan.csv")
    return pd.read_csv(path) if os.path.exists(path) and os.path.getsize(path) > 0 else pd.DataFrame()


def check_writable(out: str) -> str:
    """The output folder, created and writable, before Ray starts; else one sentence naming the fix."""
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"cannot write the output folder --out {out} ({e.strerror}); choose a folder you can write to.") from None
    return out


def _sync_loop(run: Run, cfg: RunConfig, log) -> pd.DataFrame:
    rows = []
    virtual, wall = 0.0, 0.0
    bar = _progress(cfg)
    for r in range(cfg.rounds):
        row = run.run_round(r, virtual)
        virtual, wall = row.virtual_time_s, wall + row.round_wall_s
        row.wall_time_s = wall
        rows.append(row)
        acc = row.test_accuracy
        if bar is not None:
            bar.set_postfix(acc=f"{100 * acc:.1f}%" if not math.isnan(acc) else "-", vtime=f"{virtual:.0f}s", pairs=row.pairs)
            bar.update(1)
        else:
            log(f"round {r + 1}/{cfg.rounds}: acc {acc:.4f} virtual {virtual:.1f}s wall {wall:.1f}s")
        if cfg.is_last(r, virtual):
            break
    if bar is not None:
        bar.close()
    return frame(rows)


def _progress(cfg: RunConfig):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.rounds, desc=f"{cfg.algorithm} rounds", unit="round")
