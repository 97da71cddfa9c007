"""Surviving failures on Ray, end to end on tiny runs (one local Ray for the module).

Covers: a 4-agent, 2-actor, 4-round run whose actor 1 kills
itself in round 2 completes with the uninterrupted run's rounds.csv (deterministic
columns, so the same final accuracy, exactly) and records the failure, and so does
an AD-PSGD run (its event loop restored from the checkpoint); `--resume`
after the driver is SIGKILLed in round 3 of a 6-round run gives the uninterrupted
rounds.csv; so does a resume after an abort for `comdml` and `adpsgd`; an actor that
dies 3 times in a row stops the run with one sentence and its results on disk; flag
mistakes are one sentence.  Results go to a file:// URI in one test (pyarrow.fs).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest

from benchmarks.run import main
from comdml_ray.config import ConfigError, RunConfig
from comdml_ray.experiment import run_experiment
from comdml_ray.results.report import DETERMINISTIC_COLUMNS
from comdml_ray.runtime.actors import AgentFailure
from tests.conftest import StopAt, quiet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# eval_samples 0: every evaluation on the whole test set, so a 4-round run's last row compares with a 6-round reference's 4th.
TINY = {"agents": 4, "agents_per_actor": 2, "train_samples": 1000, "progress": False, "num_gpus": 0, "eval_samples": 0}


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local):
    yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """rounds.csv of uninterrupted 6-round runs, one per algorithm, made once for the module."""
    made: dict[str, pd.DataFrame] = {}

    def get(algorithm: str) -> pd.DataFrame:
        if algorithm not in made:
            out = tmp_path_factory.mktemp(f"ref-{algorithm}")
            run_experiment(RunConfig(**TINY, algorithm=algorithm, rounds=6, out=str(out)), log=quiet, keep_ray=True)
            made[algorithm] = pd.read_csv(out / "rounds.csv")
        return made[algorithm]

    return get


def same_deterministic_columns(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert len(got) == len(want)
    pd.testing.assert_frame_equal(
        got[DETERMINISTIC_COLUMNS].reset_index(drop=True), want[DETERMINISTIC_COLUMNS].reset_index(drop=True), check_exact=True
    )


def test_actor_killed_in_round_2_recovers_exactly(reference, tmp_path):
    out = f"file://{tmp_path}/killed"  # results and checkpoints through pyarrow.fs
    summary = run_experiment(RunConfig(**TINY, rounds=4, kill_actor="2:1", out=out), log=quiet, keep_ray=True)
    rounds = pd.read_csv(tmp_path / "killed" / "rounds.csv")
    want = reference("local").iloc[:4]
    same_deterministic_columns(rounds, want)
    assert summary["final_accuracy"] == want["test_accuracy"].iloc[-1]  # exact: recovery restores bit for bit
    assert rounds["failures"].tolist() == [0, 0, 1, 0]
    assert rounds["failed_agents"].iloc[2] == "2-3" and rounds["lost_wall_s"].iloc[2] > 0
    (failure,) = summary["failures"]
    assert (failure["round"], failure["actor"], failure["agents"]) == (2, 1, "2-3")
    assert summary["time_lost_s"] == failure["lost_wall_s"] > 0
    agents = pd.read_csv(tmp_path / "killed" / "agents.csv")
    assert agents.groupby("round").size().tolist() == [4, 4, 4, 4]  # the broken round's rows were not kept twice
    assert json.loads((tmp_path / "killed" / "summary.json").read_text())["aborted"] is None


def test_adpsgd_actor_killed_recovers_exactly(reference, tmp_path):
    out = tmp_path / "adpsgd"
    summary = run_experiment(RunConfig(**TINY, algorithm="adpsgd", rounds=4, kill_actor="2:0", out=str(out)), log=quiet, keep_ray=True)
    rounds = pd.read_csv(out / "rounds.csv")
    same_deterministic_columns(rounds, reference("adpsgd").iloc[:4])
    assert rounds["failures"].sum() == 1 and [f["actor"] for f in summary["failures"]] == [0]
    assert pd.read_csv(out / "agents.csv").groupby("round").size().tolist() == [4, 4, 4, 4]


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the driver we started, then whatever of its own Ray it left behind (by PID)."""
    kids = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(2)
    for k in kids:
        with contextlib.suppress(psutil.NoSuchProcess):
            k.kill()


def test_resume_after_the_driver_is_killed_in_round_3(reference, tmp_path):
    out = tmp_path / "resumed"
    argv = [
        sys.executable,
        "benchmarks/run.py",
        "--agents",
        "4",
        "--agents-per-actor",
        "2",
        "--train-samples",
        "1000",
        "--rounds",
        "6",
        "--num-cpus",
        "2",
        "--eval-samples",
        "0",
        "--no-progress",
        "--out",
        str(out),
    ]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "rounds.csv").exists() and len(pd.read_csv(out / "rounds.csv")) >= 3:
                break  # rounds 0-2 are done: the driver dies in round 3
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before round 3"
    finally:
        _kill_tree(proc)
    assert len(pd.read_csv(out / "rounds.csv")) < 6
    summary = run_experiment(RunConfig(resume=str(out), progress=False, num_gpus=0), log=quiet, keep_ray=True)
    assert summary["resumed_from_round"] in (2, 3, 4)  # the last checkpoint the driver finished
    same_deterministic_columns(pd.read_csv(out / "rounds.csv"), reference("local"))


@pytest.mark.parametrize("algorithm, line", [("comdml", "round 3/6"), ("adpsgd", "row 3:")])
def test_resume_after_an_abort_is_bit_identical(reference, tmp_path, algorithm, line):
    out = tmp_path / algorithm
    with pytest.raises(KeyboardInterrupt):
        run_experiment(RunConfig(**TINY, algorithm=algorithm, rounds=6, out=str(out)), log=StopAt(line), keep_ray=True)
    partial = json.loads((out / "summary.json").read_text())  # written on the abort
    assert partial["aborted"] == "KeyboardInterrupt" and 2 <= partial["rounds"] < 6
    assert (out / "accuracy.png").stat().st_size > 0
    summary = run_experiment(RunConfig(resume=str(out), progress=False, num_gpus=0), log=quiet, keep_ray=True)
    assert summary["resumed_from_round"] in (2, 3)
    want = reference(algorithm)
    same_deterministic_columns(pd.read_csv(out / "rounds.csv"), want)
    if algorithm == "comdml":
        assert want["pairs"].sum() > 0  # offloading happened, so prefix optimizers and aux heads were restored too


def test_three_deaths_in_a_row_stop_the_run(tmp_path):
    out = tmp_path / "dies"
    with pytest.raises(AgentFailure, match="3 times in a row") as err:
        run_experiment(RunConfig(**TINY, rounds=3, kill_actor="1:0,1:0,1:0", out=str(out)), log=quiet, keep_ray=True)
    assert "\n" not in str(err.value) and "--resume" in str(err.value)
    rounds = pd.read_csv(out / "rounds.csv")
    assert rounds["round"].tolist() == [0]  # round 0 is on disk, round 1 never finished
    summary = json.loads((out / "summary.json").read_text())
    assert "3 times in a row" in summary["aborted"] and [f["round"] for f in summary["failures"]] == [1, 1, 1]


def test_fault_flags_are_one_sentence(tmp_path, capsys):
    for argv, fragment in (
        (["--kill-actor", "2"], "ROUND:ACTOR"),
        (["--checkpoint-every", "-1"], "--checkpoint-every"),
        (["--node-timeout", "-1"], "--node-timeout"),
        (["--resume", str(tmp_path)], "holds no checkpoint"),
    ):
        assert main([*argv, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and fragment in err and "\n" not in err
    with pytest.raises(ConfigError, match="this run has 2 actors"):
        run_experiment(RunConfig(**TINY, rounds=1, kill_actor="0:5", out=str(tmp_path / "x")), log=quiet, keep_ray=True)
