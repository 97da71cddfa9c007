"""The Python API (`comdml_ray.run`, `comdml_ray.compare`): the README's example runs as printed, and the results are typed.

- The example after `<!-- api-example -->` in README.md (a ```python block of at most 15
  lines) runs verbatim in a fresh interpreter, in an empty folder, and writes its output
  folder there; a README.md without the marker, or without the block right after it, fails.
- `RunResult.load` reads that run's folder back: every figure is summary.json's and rounds.csv's.
- `run(config, **fields)`: the fields replace the config's in a copy; a bad setting or an
  unknown field is a ConfigError before anything starts.
- `compare(...)` on a tiny problem: the scored tables, every run's folder, one run read back;
  then score-only on the same folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from comdml_ray import CompareResult, ConfigError, RunConfig, RunResult, compare, run
from comdml_ray.api import with_fields

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- api-example -->"
MAX_LINES = 15


def fenced_block_after(text: str, marker: str) -> str:
    """The code of the ```python block that follows the marker's line (blank lines between allowed)."""
    lines = text[text.index(marker) + len(marker) :].splitlines()[1:]
    while lines and not lines[0].strip():
        lines.pop(0)
    assert lines and lines[0].strip() == "```python", f"the line after {marker} (blank lines aside) must open a ```python block"
    end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "```"), None)
    assert end is not None, f"the ```python block after {marker} is never closed"
    return "\n".join(lines[1:end]) + "\n"


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    assert MARKER in text, (
        f"README.md has no {MARKER} line followed by the ```python example of the API: put it back (tests/test_api.py runs it)"
    )
    return fenced_block_after(text, MARKER)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The README's example, run once in an empty folder by a fresh interpreter (no dashboard, as every test run)."""
    code = readme_example()
    cwd = tmp_path_factory.mktemp("readme-example")
    env = dict(os.environ, COMDML_DASHBOARD="0", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    return done, cwd


def test_the_readme_example_is_short():
    code = readme_example()
    assert len(code.splitlines()) <= MAX_LINES, f"the README's API example has {len(code.splitlines())} lines; keep it to {MAX_LINES}"
    assert "from comdml_ray import" in code


def run_folder_of(cwd: Path) -> Path:
    """The output folder the example wrote under its working folder (its one summary.json)."""
    found = sorted(cwd.rglob("summary.json"))
    assert len(found) == 1, f"the example should write one run's folder under its working folder, found {found}"
    return found[0].parent


def test_the_readme_example_runs_as_printed(readme_run):
    done, cwd = readme_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() and "Traceback" not in done.stderr
    assert len(pd.read_csv(run_folder_of(cwd) / "rounds.csv")) >= 1


def test_a_run_result_is_what_its_folder_holds(readme_run):
    out = run_folder_of(readme_run[1])
    summary = json.loads((out / "summary.json").read_text())
    rounds = pd.read_csv(out / "rounds.csv")
    for where in (str(out), f"file://{out}"):  # a URI is read through comdml_ray.storage
        r = RunResult.load(where)
        assert r.out == where
        assert isinstance(r.config, RunConfig) and r.config == RunConfig(**summary["config"])
        assert (r.config.algorithm, r.config.agents, r.config.rounds) == (summary["algorithm"], summary["agents"], len(rounds))
        assert r.summary == summary
        pd.testing.assert_frame_equal(r.rounds, rounds)
        assert r.final_accuracy == summary["final_accuracy"] == rounds["test_accuracy"].iloc[-1]
        assert r.best_accuracy == rounds["test_accuracy"].max()
        assert r.virtual_time_s == rounds["virtual_time_s"].iloc[-1] and r.wall_time_s == summary["wall_time_s"]
        assert r.time_to_target_s == summary["time_to_target_s"]
        assert summary["kernels"] == [
            f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"
        ]  # what the run's floats depend on
        assert all(isinstance(v, float) for v in (r.final_accuracy, r.best_accuracy, r.virtual_time_s, r.wall_time_s))
        agents = r.agents()
        assert len(agents) == r.config.agents * len(rounds) and sorted(agents["agent"].unique()) == list(range(r.config.agents))
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.final_accuracy = 1.0


def test_the_results_have_the_fields_the_readme_names():
    names = [f.name for f in dataclasses.fields(RunResult)]
    assert names == [
        "out",
        "config",
        "rounds",
        "final_accuracy",
        "best_accuracy",
        "virtual_time_s",
        "wall_time_s",
        "time_to_target_s",
        "summary",
    ]
    assert callable(RunResult.agents) and callable(RunResult.load)
    assert {"out", "config", "plan", "runs", "summary", "run_folders"} <= {f.name for f in dataclasses.fields(CompareResult)}


def test_keyword_fields_replace_the_config_s_in_a_copy():
    cfg = RunConfig(agents=8, algorithm="comdml")
    changed = with_fields(cfg, {"rounds": 3, "agents": 4})
    assert (changed.agents, changed.rounds, changed.algorithm) == (4, 3, "comdml")
    assert (cfg.agents, cfg.rounds) == (8, 20) and changed is not cfg
    assert with_fields(None, {"agents": 5}) == RunConfig(agents=5)
    assert with_fields(cfg, {}) == cfg and with_fields(cfg, {}) is not cfg


def test_a_bad_setting_is_a_config_error_before_anything_starts(tmp_path):
    cfg = RunConfig(agents=8, out=str(tmp_path / "never"))
    with pytest.raises(ConfigError, match="--agents must be a positive number of agents, got 0"):
        run(cfg, agents=0)
    assert cfg.agents == 8 and not (tmp_path / "never").exists()
    with pytest.raises(ConfigError, match="did you mean 'agents'"):
        run(agentz=8)
    with pytest.raises(ConfigError, match="unknown --algorithm 'fedavg'"):
        run(algorithm="fedavg")
    with pytest.raises(TypeError, match="expected a RunConfig"):
        run({"agents": 8})
    with pytest.raises(ConfigError, match=r"no summary\.json"):
        RunResult.load(str(tmp_path))
    with pytest.raises(ConfigError, match="choose from"):
        compare(methods="local,fedavg", out=str(tmp_path / "never"))
    with pytest.raises(ConfigError, match="--seeds repeats"):
        compare(seeds=[1, 1], out=str(tmp_path / "never"))
    with pytest.raises(ConfigError, match="needs the local method"):
        compare(methods=["comdml"], targets=["local-best-0.5"], out=str(tmp_path / "never"))
    with pytest.raises(ConfigError, match="--agents must be a positive"):
        compare(agents=0, out=str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()


def test_compare_returns_its_scored_tables_and_every_run_s_folder(tmp_path, capsys):
    out = tmp_path / "cmp"
    tiny = dict(agents=4, rounds=2, train_samples=600, lr=0.05, num_gpus=0, progress=False, out=str(out))
    result = compare(RunConfig(**tiny), methods=["comdml", "local"], targets=[20], rounds_factor=2)
    assert result.out == str(out) and result.plan.methods == ("local", "comdml") and result.plan.targets == ("20",)
    assert isinstance(result.summary, pd.DataFrame) and isinstance(result.runs, pd.DataFrame)
    written = pd.read_csv(out / "runs.csv")
    assert written["method"].tolist() == result.runs["method"].tolist()
    assert written["final_accuracy"].tolist() == result.runs["final_accuracy"].tolist()
    assert result.summary[["setting", "method", "target"]].values.tolist() == [["compute", "local", "20"], ["compute", "comdml", "20"]]
    assert result.run_folders == {(0, "compute", m): str(out / "compute" / m) for m in ("local", "comdml")}
    comdml = result.run_result("comdml")
    row = result.runs.set_index("method").loc["comdml"]
    assert comdml.config.algorithm == "comdml" and comdml.virtual_time_s == row["virtual_time_s"] and len(comdml.rounds) == row["rounds"]
    with pytest.raises(ConfigError, match="no run for seed 0, setting links"):
        result.run_result("comdml", setting="links")
    assert "time to target" in capsys.readouterr().out
    again = compare(RunConfig(**tiny), methods="local,comdml", targets="20", rounds_factor=2, score_only=True)
    pd.testing.assert_frame_equal(again.runs, result.runs)
    assert "=== seed" not in capsys.readouterr().out  # score-only: nothing ran
