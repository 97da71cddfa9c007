"""benchmarks/gpu_check.py: its CPU mode end to end (logical GPUs, results exact), and the comparison it judges runs by."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.gpu_check import argv_without, compare, main

ROOT = Path(__file__).resolve().parents[1]


def rounds(loss: list[float], acc: list[float]) -> pd.DataFrame:
    n = len(loss)
    return pd.DataFrame(
        {
            "round": range(n),
            "virtual_time_s": np.arange(1, n + 1) * 2.5,
            "train_loss": loss,
            "test_accuracy": acc,
            "bytes_sent": [100] * n,
            "round_virtual_s": [2.5] * n,
            "bytes_offloaded": [0] * n,
            "pairs": [0] * n,
        }
    )


def test_compare_is_exact_on_the_cpu_and_loose_on_a_gpu() -> None:
    ref = rounds([2.0, 1.5], [float("nan"), 0.7])
    assert compare(ref.copy(), ref, exact=True, loss_rtol=0.01, acc_atol=0.01) == (True, "exact")
    nudged = rounds([2.0, np.nextafter(1.5, 2.0)], [float("nan"), 0.7])  # one float step
    ok, words = compare(nudged, ref, exact=True, loss_rtol=0.01, acc_atol=0.01)
    assert not ok and "train_loss" in words
    assert compare(rounds([2.001, 1.5], [float("nan"), 0.705]), ref, exact=False, loss_rtol=0.01, acc_atol=0.01)[0]
    ok, words = compare(rounds([2.1, 1.5], [float("nan"), 0.7]), ref, exact=False, loss_rtol=0.01, acc_atol=0.01)
    assert not ok and words.startswith("NO: loss rel 5.0e-02")
    other = rounds([2.0, 1.5], [float("nan"), 0.7]).assign(bytes_sent=[100, 101])  # the clock's columns never get a tolerance
    assert not compare(other, ref, exact=False, loss_rtol=0.01, acc_atol=0.01)[0]
    assert not compare(ref.iloc[:1], ref, exact=False, loss_rtol=0.01, acc_atol=0.01)[0]


def test_the_checks_own_flags_do_not_reach_run_py() -> None:
    argv = ["--agents", "4", "--fractions", "1", "0.25", "--verbose", "--loss-rtol=0.1", "--algorithm", "comdml"]
    assert argv_without(argv, ("--verbose",), ("--fractions", "--loss-rtol", "--acc-atol")) == ["--agents", "4", "--algorithm", "comdml"]


def test_a_bad_fraction_is_one_sentence_and_exit_2(capsys) -> None:
    assert main(["--fractions", "0.5", "1.5"]) == 2  # refused before Ray starts
    err = capsys.readouterr().err.strip()
    assert err == "error: --fractions 1.5 is not a share of one GPU; give values in (0, 1]."


def test_cpu_mode_runs_and_matches_exactly(tmp_path: Path) -> None:
    """4 agents, one round: the CPU run (2 actors here), one actor on a whole logical GPU, actors on quarters of it."""
    argv = ["--agents", "4", "--rounds", "1", "--train-samples", "400", "--fractions", "1", "0.25", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", *argv],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),  # this checkout's package, whatever is installed
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "CPU mode" in out and "all runs match the CPU run" in out
    table = {line.split("  ")[0]: line for line in out.splitlines() if line.startswith(("cpu ", "--gpus-per-agent"))}
    assert set(table) == {"cpu", "--gpus-per-agent 1", "--gpus-per-agent 0.25"}
    assert "(the reference)" in table["cpu"]
    assert " exact" in table["--gpus-per-agent 1"] and " none " in table["--gpus-per-agent 1"]  # one actor: no collective group
    assert " exact" in table["--gpus-per-agent 0.25"] and " gloo " in table["--gpus-per-agent 0.25"]
    assert "collective of --gpus-per-agent 0.25: gloo (no rank trains on a GPU" in out
    assert (tmp_path / "gpu-0.25" / "rounds.csv").exists()
