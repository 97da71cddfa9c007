"""`make results` builds up run by run: a table runs only what is missing, and its committed runs alone rebuild it byte for byte.

A tiny table (4 agents, two methods, an equal-time budget of a few virtual seconds) is run
into a temporary checkout layout; then everything but the files committed under
benchmarks/results/runs/ (each run's rounds.csv, summary.json, profile.csv) is deleted,
as in a fresh clone, and the table is built again: no run may start, and the CSV and
plot must come out identical.  A run whose configuration changed is run again.
"""

import os

import comdml_ray.cli.tables as tables

KEEP = {"rounds.csv", "summary.json", "profile.csv"}
ARGS = ["--agents", "4", "--train-samples", "400", "--rounds", "100", "--rounds-factor", "1", "--eval-samples", "0", "--no-progress"]
ARGS += ["--algorithms", "local,local-deadline", "--seed", "0", "--num-cpus", "2"]


def run_files(root: str) -> dict[str, float]:
    return {os.path.join(d, f): os.path.getmtime(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs if f == "summary.json"}


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def as_if_cloned(root: str) -> None:
    """Delete what is not committed under runs/ (checkpoints, agents.csv, runs.csv, plots)."""
    for d, dirs, files in os.walk(root, topdown=False):
        for f in files:
            if f not in KEEP:
                os.remove(os.path.join(d, f))
        for sub in dirs:
            if not os.listdir(os.path.join(d, sub)):
                os.rmdir(os.path.join(d, sub))


def test_a_table_rebuilds_from_its_committed_runs_without_running_and_reruns_a_changed_one(tmp_path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setattr(tables, "RESULTS", str(results))
    monkeypatch.setattr(tables, "RUNS", str(results / "runs"))
    monkeypatch.setattr(tables, "TABLES", {"tiny": [("compare", "compute", [*ARGS, "--time-budget", "4"])]})
    csv = tables.run_table("tiny")
    first = {p: read(p) for p in (csv, str(results / "tiny-compute.png"))}
    runs = run_files(str(results / "runs"))
    assert len(runs) == 2  # two methods
    as_if_cloned(str(results / "runs"))
    for p in first:
        os.remove(p)
    assert tables.run_table("tiny") == csv
    assert run_files(str(results / "runs")) == runs  # nothing ran: every summary.json untouched
    assert {p: read(p) for p in first} == first  # the same table and plot, byte for byte
    # A changed configuration is not reused: the run would go again.
    from comdml_ray.cli.compare import parse
    from comdml_ray.comparison import finished_run, run_folder

    cfg, plan = parse([*ARGS, "--time-budget", "4", "--out", tables.part_folder("tiny", "compute")])
    local = cfg.replace(algorithm="local", out=run_folder(cfg.out, plan, 0, "compute", "local"))
    assert finished_run(local) is not None and finished_run(local.replace(time_budget_s=5.0)) is None
