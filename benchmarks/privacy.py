"""Privacy against accuracy: ComDML with noise on the smashed data, and how much of the input still leaks.

    python benchmarks/privacy.py                                   # 20 agents, 30 rounds, SIGMA 0,0.1,0.3,1.0, splits 1,2
    python benchmarks/privacy.py --smashed-dtype int8              # the same with int8 activations
    python benchmarks/privacy.py --sigmas 0,1 --rounds 3 --train-samples 20000 --out results/privacy-quick
    python benchmarks/privacy.py --sigmas 0 --leakage-sigmas 0,0.1,0.3,1.0    # one run; noise's effect alone, on its model

Every flag of benchmarks/run.py applies to each run (the algorithm is always comdml;
the defaults here are 20 agents and 30 rounds).  For each SIGMA of `--sigmas` it runs
ComDML once with `--smashed-noise SIGMA` (same seed, data and heterogeneity), then
measures the final averaged model at each split of `--splits` (comdml_ray/learning/leakage.py):
- dCor: bias-corrected distance correlation between 512 fixed training images and
  what would leave an offloader for them at that split (clip, noise, encoding applied);
- decoder MSE: test error of a small decoder the helper could train on images of its
  own to reconstruct x from z, beside the error of guessing the mean image.
It writes `privacy.csv` in --out (one row per SIGMA and split, with the run's final
accuracy, its cost in points against the smallest SIGMA, and how often the plans used
that split) and prints the table.  Each run's own folder holds its other outputs.
Each run is measured on its own final model, so two SIGMAs differ by the noise and by
the model the run ended with.  To see the noise alone, it also measures every SIGMA of
`--leakage-sigmas` (default: --sigmas) on the smallest SIGMA's final model and writes
`privacy-same-model.csv`.
"""

from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = _ROOT  # benchmarks/solvers.py must not shadow the solvers package
elif _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pandas as pd  # noqa: E402

from benchmarks.run import build_parser, exit_code_of  # noqa: E402
from comdml_ray.config import ConfigError, RunConfig  # noqa: E402


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated numbers, e.g. 0,0.1,0.3,1.0; got '{text}'.") from None


def parse(argv: list[str] | None) -> tuple[RunConfig, list[float], list[int]]:
    p = build_parser()
    p.prog = "benchmarks/privacy.py"
    p.description = "ComDML at several noise levels on the smashed data: accuracy against measured leakage (dCor, reconstruction)."
    p.set_defaults(agents=20, rounds=30, algorithm="comdml", out=os.path.join("results", "privacy"))
    p.add_argument("--sigmas", default="0,0.1,0.3,1.0", help="comma-separated SIGMA values of --smashed-noise, one ComDML run each")
    p.add_argument("--splits", default="1,2", help="comma-separated split points to measure leakage at")
    p.add_argument("--leakage-sigmas", default=None, help="SIGMAs to measure on the smallest SIGMA's final model (default: --sigmas)")
    a = p.parse_args(argv)
    sigmas = _floats(a.sigmas, "--sigmas")
    splits = [int(v) for v in _floats(a.splits, "--splits")]
    same_model = sigmas if a.leakage_sigmas is None else _floats(a.leakage_sigmas, "--leakage-sigmas")
    if not sigmas or min(sigmas + same_model) < 0:
        raise ConfigError(f"--sigmas and --leakage-sigmas need at least one value, all >= 0; got '{a.sigmas}' and '{a.leakage_sigmas}'.")
    fields = {k: v for k, v in vars(a).items() if k not in ("no_progress", "sigmas", "splits", "leakage_sigmas")}
    cfg = RunConfig(**fields, progress=not a.no_progress).replace(algorithm="comdml")
    return cfg, sigmas, splits, same_model


def check_splits(cfg: RunConfig, splits: list[int]) -> None:
    from comdml_ray.learning.models import build_model

    points = build_model(cfg.model, 1, 28, 10).split_points()  # the split points depend on the model only
    bad = [m for m in splits if m not in points]
    if not splits or bad:
        raise ConfigError(
            f"--splits {','.join(map(str, splits))}: {cfg.model} has split points {','.join(map(str, points))}; pick from those."
        )


def privacy_table(cfg: RunConfig, sigmas: list[float], splits: list[int], same_model: list[float] | None = None, log=print) -> pd.DataFrame:
    import numpy as np
    import ray

    from comdml_ray.experiment import run_experiment
    from comdml_ray.learning.leakage import leakage_table
    from comdml_ray.learning.smashed import SmashedSpec

    frames = []
    try:
        for sigma in sorted(sigmas):
            run_cfg = cfg.replace(smashed_noise=sigma, out=os.path.join(cfg.out, f"sigma-{sigma:g}")).validate()
            log(f"\n=== comdml, --smashed-noise {sigma:g} ({cfg.smashed_dtype}) ===")
            summary = run_experiment(run_cfg, log=log, keep_ray=True, privacy_splits=splits)
            rows = pd.read_csv(os.path.join(run_cfg.out, "privacy.csv"))
            plan = pd.read_csv(os.path.join(run_cfg.out, "plan.csv"))
            used = plan.loc[plan["partner"] >= 0, "split"].value_counts()
            rows["final_accuracy"] = summary["final_accuracy"]
            rows["offloads_at_split"] = [int(used.get(m, 0)) for m in rows["split"]]
            rows["bytes_offloaded"] = summary["bytes_offloaded"]
            rows["run"] = run_cfg.out
            frames.append(rows)
    finally:
        if not cfg.address:
            ray.shutdown()
    table = pd.concat(frames, ignore_index=True)
    base = table.loc[table["sigma"] == table["sigma"].min(), "final_accuracy"].iloc[0]
    table["accuracy_cost_pp"] = 100 * (base - table["final_accuracy"])
    table.to_csv(os.path.join(cfg.out, "privacy.csv"), index=False)
    log("\n" + format_table(table))
    written = [os.path.join(cfg.out, "privacy.csv")]
    if same_model:
        # Noise alone: every SIGMA on one model, the smallest SIGMA's final one.
        base_run = table.loc[table["sigma"] == table["sigma"].min(), "run"].iloc[0]
        flat = np.load(os.path.join(base_run, "final_model.npy"))
        specs = [SmashedSpec(cfg.smashed_dtype, s, cfg.smashed_clip) for s in sorted(same_model)]
        fixed = leakage_table(cfg, flat, splits, specs)
        fixed["model"] = os.path.join(base_run, "final_model.npy")
        fixed.to_csv(os.path.join(cfg.out, "privacy-same-model.csv"), index=False)
        log(f"\nthe same model ({fixed['model'].iloc[0]}) at every SIGMA:")
        log(format_same_model(fixed))
        written.append(os.path.join(cfg.out, "privacy-same-model.csv"))
    log(f"\nwritten: {', '.join(written)}")
    return table


def format_table(t: pd.DataFrame) -> str:
    lines = [
        f"{'SIGMA':>5} {'split':>5} {'dtype':>7} {'final acc':>9} {'cost':>7} {'dCor':>6} {'decoder MSE':>11} {'mean-image MSE':>14} {'offloads':>8}"
    ]
    for r in t.sort_values(["split", "sigma"]).itertuples():
        lines.append(
            f"{r.sigma:5.2f} {r.split:5d} {r.dtype:>7} {100 * r.final_accuracy:8.1f}% {r.accuracy_cost_pp:+6.1f}p "
            f"{r.dcor:6.3f} {r.recon_mse:11.4f} {r.mean_image_mse:14.4f} {r.offloads_at_split:8d}"
        )
    lines.append(
        "cost: points of final accuracy lost against the smallest SIGMA (one run per SIGMA, all splits together); "
        "dCor: bias-corrected distance correlation of 512 fixed training images and what leaves for them (1 = a copy); "
        "decoder MSE: reconstruction error of a decoder trained by the helper on its own images (normalised pixels; "
        "mean-image MSE = a decoder that learned nothing); offloads: plan decisions that used the split."
    )
    return "\n".join(lines)


def format_same_model(t: pd.DataFrame) -> str:
    lines = [f"{'SIGMA':>5} {'split':>5} {'dtype':>7} {'dCor':>6} {'decoder MSE':>11} {'mean-image MSE':>14}"]
    for r in t.sort_values(["split", "sigma"]).itertuples():
        lines.append(f"{r.sigma:5.2f} {r.split:5d} {r.dtype:>7} {r.dcor:6.3f} {r.recon_mse:11.4f} {r.mean_image_mse:14.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    def job() -> None:
        cfg, sigmas, splits, same_model = parse(argv)
        cfg.validate()
        check_splits(cfg, splits)
        privacy_table(cfg, sigmas, splits, same_model)

    return exit_code_of(job)


if __name__ == "__main__":
    sys.exit(main())
