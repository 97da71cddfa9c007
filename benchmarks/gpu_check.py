"""The GPU check: `run.py --agents 16` at --gpus-per-agent 1, 0.5 and 0.25 against the same run on the CPU.

    python benchmarks/gpu_check.py                             # on a GPU machine: the CPU run, then the three GPU runs
    python benchmarks/gpu_check.py --algorithm comdml          # any run.py flag applies to every run
    python benchmarks/gpu_check.py --agents 4 --rounds 2 --train-samples 800 --fractions 1 0.25   # the test suite's (CPU mode)

For each run it prints the layout (actors), the device the actors trained on, the
collective backend the run chose (`runtime/devices.py`) and why, the wall time per
round (median of the rounds after the first, which pays for CUDA's and the caches'
warm-up; all rounds when there is one), its ratio to the CPU run's, the peak GPU memory
per actor (torch's allocator, max and mean over the actors), and whether the results
match the CPU run: rounds.csv's deterministic columns equal, train_loss and
test_accuracy within --loss-rtol and --acc-atol on a GPU (float32 sums run in
another order there), bit for bit on the CPU.

CPU mode (where torch finds no CUDA device): the same runs on one *logical* GPU (Ray's
`--num-gpus 1`): Ray places the actors by GPU fractions as on a GPU machine and they
train on the CPU, so every run must match the CPU run exactly.  That checks the
placement, the backend choice and the comparison itself on any machine.
All runs share one local Ray (started here, as run.py would start it); their output
folders go under --out (default: a temporary folder).  Exit 0: every run matched;
1: a run did not; 2: a bad flag (one sentence).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile

import pandas as pd

GPU_FRACTIONS = (1.0, 0.5, 0.25)
LOSS_RTOL = 1e-2  # train_loss on a GPU vs the CPU run: relative
ACC_ATOL = 0.01  # test_accuracy on a GPU vs the CPU run: absolute (10 of 1,000 test images)


@dataclasses.dataclass
class Outcome:
    """One run of the check: its label, summary.json's fields and rounds.csv."""

    label: str
    summary: dict
    rounds: pd.DataFrame

    @property
    def wall_per_round(self) -> float:
        walls = self.rounds["round_wall_s"].tolist()
        return statistics.median(walls[1:] or walls)

    @property
    def gpu_mb(self) -> str:
        peaks = [p for p in (self.summary.get("device_peak_mb_per_actor") or []) if p is not None]
        return f"{max(peaks):.0f} / {statistics.mean(peaks):.0f}" if peaks else "-"


def compare(run: pd.DataFrame, ref: pd.DataFrame, exact: bool, loss_rtol: float, acc_atol: float) -> tuple[bool, str]:
    """(matches, in words): rounds.csv's deterministic columns against the CPU run's."""
    from comdml_ray.results.report import DETERMINISTIC_COLUMNS

    cols = [c for c in DETERMINISTIC_COLUMNS if c in ref.columns]
    if len(run) != len(ref):
        return False, f"{len(run)} rounds against {len(ref)}"
    if exact:
        same = run[cols].equals(ref[cols])
        return same, "exact" if same else "DIFFERS: " + ", ".join(c for c in cols if not run[c].equals(ref[c]))
    loose = ("train_loss", "test_accuracy")
    wrong = [c for c in cols if c not in loose and not run[c].equals(ref[c])]
    loss = float(((run["train_loss"] - ref["train_loss"]).abs() / ref["train_loss"].abs()).max())
    acc = float((run["test_accuracy"] - ref["test_accuracy"]).abs().max())  # NaN where a round was not evaluated: ignored by max
    ok = not wrong and loss <= loss_rtol and (acc != acc or acc <= acc_atol)
    words = f"loss rel {loss:.1e}, acc {acc:.4f}" + (f"; other columns differ: {', '.join(wrong)}" if wrong else "")
    return ok, ("within tolerance: " if ok else "NO: ") + words


def build_parser() -> argparse.ArgumentParser:
    from benchmarks.run import build_parser as run_parser

    ap = argparse.ArgumentParser(
        prog="benchmarks/gpu_check.py",
        description=__doc__.split("\n\n")[0],
        parents=[run_parser()],
        add_help=False,
        conflict_handler="resolve",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = ap.add_argument_group("the check")
    g.add_argument("-h", "--help", action="help", help="show this help message and exit")
    g.add_argument("--agents", type=int, default=16, help="agents of every run")
    g.add_argument("--rounds", type=int, default=3, help="rounds of every run (the first is warm-up)")
    g.add_argument(
        "--fractions", type=float, nargs="+", default=list(GPU_FRACTIONS), help="the --gpus-per-agent values to run against the CPU run"
    )
    g.add_argument("--loss-rtol", type=float, default=LOSS_RTOL, help="largest relative train_loss difference from the CPU run on a GPU")
    g.add_argument("--acc-atol", type=float, default=ACC_ATOL, help="largest test_accuracy difference from the CPU run on a GPU")
    g.add_argument("--verbose", action="store_true", help="print every run's own log")
    return ap


def main(argv: list[str] | None = None) -> int:
    from benchmarks.run import config_from_args, exit_code_of
    from comdml_ray.config import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    args, _ = build_parser().parse_known_args(argv)
    outcomes: list[Outcome] = []
    header: list[str] = []

    def job() -> None:
        import torch

        from comdml_ray.experiment import run_experiment
        from comdml_ray.runtime.cluster import start_ray

        bad = [f for f in args.fractions if not 0 < f <= 1]
        if bad:
            raise ConfigError(f"--fractions {bad[0]:g} is not a share of one GPU; give values in (0, 1].")
        on_gpu = torch.cuda.is_available()
        # The run.py flags the user gave, for every run; the check sets the GPU share, the rounds and the agents.
        base = config_from_args([*argv_without(argv, ("--verbose",), ("--fractions", "--loss-rtol", "--acc-atol")), "--no-progress"])
        base = base.replace(agents=args.agents, rounds=args.rounds, gpus_per_agent=0.0, num_gpus=None if on_gpu else 1.0)
        out = base.out or tempfile.mkdtemp(prefix="gpu-check-")
        if on_gpu:
            header.append(
                f"device: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, torch {torch.__version__} (CUDA {torch.version.cuda})"
            )
        else:
            header.append(
                "CPU mode (no CUDA device here): the GPU runs place actors on 1 logical GPU and train on the CPU; results must match exactly"
            )
        start_ray(base.validate(), print)  # one local Ray for every run (logical GPU in CPU mode)
        runs = [("cpu", 0.0)] + [(f"--gpus-per-agent {f:g}", f) for f in args.fractions]
        for label, frac in runs:
            cfg = base.replace(gpus_per_agent=frac, out=os.path.join(out, label.replace("--gpus-per-agent ", "gpu-"))).validate()
            summary = run_experiment(cfg, log=print if args.verbose else lambda *_a, **_k: None, keep_ray=True)
            outcomes.append(Outcome(label, summary, pd.read_csv(os.path.join(cfg.out, "rounds.csv"))))
        header.append(f"{args.agents} agents, {args.rounds} rounds, {base.algorithm}, {base.model} on {base.dataset}; runs in {out}")

    code = exit_code_of(job)
    if code:
        return code
    for line in header:
        print(line)
    ref = outcomes[0]
    rows, all_ok = [], True
    for o in outcomes:
        s = o.summary
        on_cpu = s.get("devices") == ["cpu"]
        if o is ref:
            ok, verdict = True, "(the reference)"
        else:
            ok, verdict = compare(o.rounds, ref.rounds, on_cpu, args.loss_rtol, args.acc_atol)
        all_ok &= ok
        rows.append(
            (
                o.label,
                f"{s['actors']} x {s['agents_per_actor']}",
                ",".join(s.get("devices") or ["?"]),
                str(s.get("collective")),
                f"{o.wall_per_round:.2f}",
                f"{o.wall_per_round / ref.wall_per_round:.2f}x",
                o.gpu_mb,
                verdict,
            )
        )
    head = (
        "run",
        "actors x agents",
        "device",
        "collective",
        "wall/round (s)",
        "vs cpu",
        "GPU MB/actor (max / mean)",
        "matches the CPU run",
    )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for o in outcomes:
        print(f"collective of {o.label}: {o.summary.get('collective')} ({o.summary.get('collective_reason')})")
    print("all runs match the CPU run" if all_ok else "a run does NOT match the CPU run (see above)")
    return 0 if all_ok else 1


def argv_without(argv: list[str], flags: tuple[str, ...], with_values: tuple[str, ...]) -> list[str]:
    """argv less the check's own flags (`flags` alone; `with_values` and the values after them)."""
    out, skip = [], False
    for a in argv:
        if skip and not a.startswith("--"):
            continue
        skip = False
        name = a.split("=", 1)[0]
        if name in flags:
            continue
        if name in with_values:
            skip = "=" not in a
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
