"""The `comdml-ray` command: the installed console script runs a run, and a user's mistake is one sentence and exit 2.

The console script is the one `pip install -e .` puts beside this interpreter
(`make test` reinstalls the project when pyproject.toml changes, so .venv/bin/comdml-ray
is there); its tests are skipped, saying so, only where it is not installed.  The same
commands are also checked in process (`comdml_ray.cli.main`), which needs no install.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from comdml_ray.cli import main
from comdml_ray.cli.tables import render

ROOT = Path(__file__).resolve().parents[1]


def console_script() -> str:
    path = Path(sys.executable).with_name("comdml-ray")
    if not path.exists():
        pytest.skip(f"no comdml-ray console script beside {sys.executable}: install the project (`pip install -e .`, as `make test` does)")
    return str(path)


def comdml_ray(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The console script with args, on this checkout's code (as its Ray workers), without the dashboard."""
    env = dict(os.environ, COMDML_DASHBOARD="0", PYTHONPATH=str(ROOT))
    return subprocess.run([console_script(), *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_the_console_script_runs_a_run(tmp_path):
    out = tmp_path / "run"
    # --train-samples and --no-progress keep it small and its output short; the flags are benchmarks/run.py's.
    done = comdml_ray("run", "--agents", "4", "--rounds", "2", "--train-samples", "600", "--no-progress", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"results              {out}" in done.stdout
    assert len(pd.read_csv(out / "rounds.csv")) == 2 and (out / "summary.json").is_file() and (out / "agents.csv").is_file()


def test_the_console_script_answers_a_mistake_in_one_sentence_and_lists_its_commands(tmp_path):
    bad = comdml_ray("run", "--agents", "0", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr == "error: --agents must be a positive number of agents, got 0.\n"
    none = comdml_ray(cwd=tmp_path)
    assert none.returncode == 2 and none.stderr.startswith("usage: comdml-ray") and "required: COMMAND" in none.stderr
    helped = comdml_ray("--help", cwd=tmp_path)
    assert helped.returncode == 0 and all(f"\n    {c} " in helped.stdout for c in ("run", "compare", "results"))


def test_main_dispatches_to_the_commands_of_the_benchmark_scripts(capsys):
    assert main([]) == 2 and "required: COMMAND" in capsys.readouterr().err
    assert main(["train"]) == 2 and "invalid choice: 'train'" in capsys.readouterr().err
    assert main(["--help"]) == 0
    helped = capsys.readouterr().out
    assert all(f"\n    {c} " in helped for c in ("run", "compare", "results"))
    with pytest.raises(SystemExit) as e:  # argparse's own answer, as `python benchmarks/run.py --help`
        main(["run", "--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("usage: comdml-ray run [-h] [--algorithm ALGORITHM]")
    assert main(["run", "--agents", "0"]) == 2
    assert capsys.readouterr().err == "error: --agents must be a positive number of agents, got 0.\n"
    assert main(["compare", "--algorithms", "local,fedavg"]) == 2 and "choose from" in capsys.readouterr().err
    assert main(["results", "--render", "headline-iid"]) == 0 and capsys.readouterr().out == render("headline-iid") + "\n"
    assert main(["results", "--score-only", "--render", "headline-iid"]) == 2 and "drop --score-only" in capsys.readouterr().err
    assert main(["results", "--help"]) == 0 and capsys.readouterr().out.startswith("usage: comdml-ray results [--score-only] NAME")


def test_a_mistyped_flag_is_one_sentence_naming_the_help(capsys):
    """Not the run's 35 lines of usage: the mistake, and where the flags are listed."""
    with pytest.raises(SystemExit) as e:  # argparse's own exit, as for --help
        main(["run", "--algoritm", "comdml"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == "comdml-ray run: error: unrecognized arguments: --algoritm comdml; `comdml-ray run --help` lists the flags.\n"
