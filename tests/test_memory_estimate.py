"""The layout's memory estimate (`layout.run_mb`) against a measured run: within 30% of its peak PSS.

One `benchmarks/run.py` run in a process of its own (its own local Ray, as a user starts
it), 3,000 agents for 2 rounds: enough agents that their compact state is a third of the
footprint, so the per-agent figures are checked along with the bases.  The run's peak is
what its `MemoryWatch` reports in summary.json; the estimate is computed for the same
configuration and number of actors.
"""

import json
import os
import subprocess
import sys

from comdml_ray.config import RunConfig
from comdml_ray.runtime.layout import run_mb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_estimate_is_within_30_percent_of_a_measured_run(tmp_path):
    out = tmp_path / "run"
    argv = ["--agents", "3000", "--rounds", "2", "--checkpoint-every", "0", "--no-progress", "--out", str(out)]
    env = os.environ | {"PYTHONPATH": ROOT, "COMDML_DASHBOARD": "1"}
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", *argv], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    cfg = RunConfig(agents=3000, rounds=2).validate()
    estimate, measured = run_mb(cfg, summary["actors"]), summary["peak_memory_mb"]
    assert abs(estimate - measured) <= 0.3 * measured, f"estimated {estimate:.0f} MB, measured {measured:.0f} MB"
