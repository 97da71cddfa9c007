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

from comdml_ray.config import SYNC_ALGORITHMS, RunConfig
from comdml_ray.leakage import report_privacy
from comdml_ray.results import format_summary, time_to_target, write_outputs
from comdml_ray.runtime import MemoryWatch, Run, start_ray


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
    """Which model(s) the reported test accuracy is of: one when all agents hold the same model."""
    return "averaged model" if cfg.one_model else f"mean over {len(cfg.eval_agent_ids())} agents' models"


def run_experiment(cfg: RunConfig, log=print, keep_ray: bool = False, privacy_splits: list[int] | None = None) -> dict:
    """Run cfg to the end; returns the summary dict (also written to summary.json).

    privacy_splits: measure the final model's leakage at these splits into privacy.csv
    (default: only a ComDML run with a --smashed-* option set, at the splits it used).
    """
    cfg.validate()
    out = cfg.out or default_out_dir()
    watch = MemoryWatch()
    t_start = time.perf_counter()
    start_ray(cfg)
    run = None
    try:
        run = Run(cfg, log=log)
        os.makedirs(out, exist_ok=True)
        run.split_profile.to_csv(os.path.join(out, "profile.csv"))
        log(run.split_profile.format())
        startup = time.perf_counter() - t_start
        log(f"start-up: {startup:.1f} s ({len(run.hosts)} actors, {cfg.agents} agents)")
        if cfg.algorithm in SYNC_ALGORITHMS and cfg.algorithm != "dpsgd":
            rounds, agents, plans = _sync_loop(run, cfg, log)
        else:
            from comdml_ray.baselines import run_event_driven

            rounds, agents, plans = run_event_driven(run, cfg, log)
        train_wall = float(rounds["round_wall_s"].sum())
        peak = watch.stop()
        evaluated = rounds.dropna(subset=["test_accuracy"])
        summary = {
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
            "wall_time_s": train_wall,
            "startup_s": startup,
            "total_wall_s": time.perf_counter() - t_start,
            "mean_round_wall_s": float(rounds["round_wall_s"].mean()),
            "target_acc": cfg.target_acc,
            "time_to_target_s": time_to_target(rounds, cfg.target_acc),
            "peak_memory_mb": peak,
            "actors": len(run.hosts),
            "agents_per_actor": max(len(g) for g in run.layout.groups),
            "bytes_sent": int(rounds["bytes_sent"].sum()),
            "bytes_offloaded": int(rounds["bytes_offloaded"].sum()),
            "split_profile": run.split_profile.source,
            "out": out,
            "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "extra"},
        }
        write_outputs(out, rounds, agents, plans, summary, cfg.algorithm)
        log(format_summary(summary))
        report_privacy(cfg, plans, lambda: run.get(run.hosts[run.owner[0]].flat_model.remote(0)), out, privacy_splits, log)
        return summary
    finally:
        watch.stop()
        if run is not None:
            run.shutdown()
        if not keep_ray and not cfg.address:
            ray.shutdown()


def _sync_loop(run: Run, cfg: RunConfig, log) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rows, agent_rows, plan_rows = [], [], []
    virtual, wall = 0.0, 0.0
    bar = _progress(cfg)
    for r in range(cfg.rounds):
        res = run.run_round(r)
        virtual += res.row["round_virtual_s"]
        # The last round: --rounds done, or the virtual time budget spent (same-clock comparisons).
        last = r == cfg.rounds - 1 or (cfg.time_budget_s is not None and virtual >= cfg.time_budget_s)
        t0 = time.perf_counter()
        acc = run.evaluate() if (r + 1) % cfg.eval_every == 0 or last else math.nan
        res.row["round_wall_s"] += time.perf_counter() - t0
        wall += res.row["round_wall_s"]
        res.row.update(virtual_time_s=virtual, wall_time_s=wall, test_accuracy=acc)
        rows.append(res.row)
        agent_rows += res.agent_rows
        plan_rows += res.plan_rows
        run.record_metrics(res.agent_rows, None if math.isnan(acc) else acc)
        if bar is not None:
            bar.set_postfix(acc=f"{100 * acc:.1f}%" if not math.isnan(acc) else "-", vtime=f"{virtual:.0f}s", pairs=res.row["pairs"])
            bar.update(1)
        else:
            log(f"round {r + 1}/{cfg.rounds}: acc {acc:.4f} virtual {virtual:.1f}s wall {wall:.1f}s")
        if last:
            break
    if bar is not None:
        bar.close()
    return pd.DataFrame(rows), pd.DataFrame(agent_rows), pd.DataFrame(plan_rows)


def _progress(cfg: RunConfig):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.rounds, desc=f"{cfg.algorithm} rounds", unit="round")
