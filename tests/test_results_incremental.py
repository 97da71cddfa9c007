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
    monkeypatch.setattr(tables, "ROOT", str(tmp_path))
    monkeypatch.setattr(tables, "TABLES", {"tiny": [("compare", "compute", [*ARGS, "--time-budget", "4"])]})
    csv = tables.run_table("tiny")
    first = {p: read(p) for p in (csv, str(results / "tiny-compute.png"))}
    runs = run_files(str(results / "runs"))
    assert len(runs) == 2  # two methods
    assert tables.status("tiny").splitlines() == ["tiny: 2 of 2 runs finished under results/runs/tiny"]
    # A run without its summary but with its checkpoints is one stopped part way: --status says where it goes on from.
    (deadline_summary,) = [p for p in runs if os.sep + "local-deadline" + os.sep in p]
    os.replace(deadline_summary, deadline_summary + ".kept")  # a rename keeps its mtime
    assert tables.table_states("tiny")[0][1:] == ("local", "finished")
    where, method, state = tables.table_states("tiny")[1]
    assert (where, method) == ("seed 0 compute", "local-deadline") and state.startswith("stopped, goes on from round ")
    os.replace(deadline_summary + ".kept", deadline_summary)
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


def test_status_runs_nothing_and_a_method_on_locals_clock_waits_for_local(tmp_path, monkeypatch):
    """--status of a same-work table with nothing run: local is to run, the others wait for its virtual time."""
    monkeypatch.setattr(tables, "RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(tables, "ROOT", str(tmp_path))
    monkeypatch.setattr(tables, "TABLES", {"tiny": [("compare", "compute", [*ARGS[:-4], "--seeds", "0", "1"])]})
    assert tables.status("tiny").splitlines() == [
        "tiny: 0 of 4 runs finished under runs/tiny",
        "  seed 0 compute, to run: local",
        "  seed 0 compute, to run after local: local-deadline",
        "  seed 1 compute, to run: local",
        "  seed 1 compute, to run after local: local-deadline",
    ]
    assert not os.path.exists(tmp_path / "runs")  # nothing ran, nothing was made


def test_every_committed_run_is_one_its_table_would_reuse():
    """Each table's committed runs (summary.json under benchmarks/results/runs/<table>/) are all ones `make results` reuses.

    A finished run that --status does not count as finished has a configuration its table no
    longer asks for (a changed flag in TABLES, a RunConfig default that moved): `make
    results` would run it again, and a fresh clone's scoring pass would not be one.
    """
    import json

    for name in tables.TABLES:
        committed = 0
        for d, _, files in os.walk(os.path.join(tables.RUNS, name)):
            if "summary.json" in files:
                with open(os.path.join(d, "summary.json")) as f:
                    committed += not json.load(f).get("aborted")
        finished = sum(state == "finished" for _, _, state in tables.table_states(name))
        assert finished == committed, f"{name}: {committed} runs committed, {finished} of them reused by its table"
