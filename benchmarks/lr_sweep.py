"""Learning-rate sweep for a model: where the per-model defaults of `config.MODEL_DEFAULTS` come from.

    python benchmarks/lr_sweep.py --model resnet56 --agents 4 --train-samples 1000 --rounds 4

Each grid point is a `local` run (exact all-reduce after every round) of a few agents on a
training subset, run in process on `backend.LocalBackend` (no Ray: the agents, shards,
initial weights and rounds are the ones `benchmarks/run.py` uses), two grid points at a time.
It prints, per point, the mean train loss of every round (the first round shows a divergence
at once) and the test accuracy on a fixed subset of `--eval-samples` test images after every
round, in one table at the end (and a line per point and round as it goes).  `zi` says
whether the last BN of every residual block starts at zero (the default of
`models.build_model`); `zi 0` rebuilds the model without it, to show what that init buys.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# lr, warm-up rounds, schedule, zero-init residual
DEFAULT_GRID = "0.2:0:constant:0,0.2:0:constant:1,0.1:1:cosine:1,0.05:1:cosine:1,0.05:0:constant:0,0.02:1:cosine:1"


def run_point(args: argparse.Namespace, point: str) -> dict:
    import torch

    torch.set_num_threads(1)
    import comdml_ray.method.agent as agent_module
    from comdml_ray.config import RunConfig
    from comdml_ray.learning.models import build_model
    from comdml_ray.runtime.backend import LocalBackend
    from comdml_ray.runtime.rounds import average, train_round

    lr, warm, sched, zi = point.split(":")
    # The one knob without a flag: the sweep rebuilds the model with or without the zero init.
    agent_module.build_model = functools.partial(build_model, zero_init_residual=zi == "1")
    cfg = RunConfig(
        model=args.model,
        agents=args.agents,
        rounds=args.rounds,
        train_samples=args.train_samples,
        dataset=args.dataset,
        lr=float(lr),
        warmup_rounds=float(warm),
        lr_schedule=sched,
        seed=args.seed,
        progress=False,
    ).validate()
    t0 = time.perf_counter()
    be = LocalBackend(cfg, [list(range(args.agents))])
    losses, accs = [], []
    for r in range(args.rounds):
        reports, _ = train_round(be, r, comdml=False)
        average(be, be.setting, "allreduce", aux=False)
        losses.append(sum(sum(rep.loss_sum.values()) for rep in reports) / max(1, sum(sum(rep.batches.values()) for rep in reports)))
        accs.append(be.groups[0].evaluate([0], args.eval_samples)[0])
        # A point at the acceptance run's budget takes minutes a round: say where it stands.
        print(f"{point}: round {r + 1}/{args.rounds} train loss {losses[-1]:.2f}, test acc {100 * accs[-1]:.1f}%", flush=True)
    return {"point": point, "losses": losses, "accs": accs, "wall_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="resnet56")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--train-samples", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--eval-samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", default=DEFAULT_GRID, help="comma-separated lr:warmup_rounds:schedule:zero_init points")
    p.add_argument("--procs", type=int, default=2, help="grid points run at once (one thread each)")
    args = p.parse_args(argv)
    points = args.grid.split(",")
    with mp.get_context("spawn").Pool(args.procs) as pool:
        results = pool.map(functools.partial(run_point, args), points)
    print(
        f"{args.model} on {args.dataset}: {args.agents} agents, {args.train_samples} training samples, {args.rounds} rounds, local + all-reduce, batch 32"
    )
    print(
        f"| lr | warm-up rounds | schedule | zero-init | train loss per round | test acc per round ({args.eval_samples} images) | wall s |"
    )
    print("|---|---|---|---|---|---|---|")
    for res in results:
        lr, warm, sched, zi = res["point"].split(":")
        loss = " ".join(f"{v:.2f}" for v in res["losses"])
        acc = " ".join(f"{100 * v:.1f}" for v in res["accs"])
        print(f"| {lr} | {warm} | {sched} | {'yes' if zi == '1' else 'no'} | {loss} | {acc} | {res['wall_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
