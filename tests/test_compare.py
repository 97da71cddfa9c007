"""`comdml-ray compare` (benchmarks/compare.py) end to end on a tiny problem: the same-clock rule, the gossip rows, the yardstick and its files,
and `--reuse-runs` (finished runs reused, a stopped one continued from its checkpoint to the uninterrupted run's rows).

A comparison starts and stops a Ray of its own, so this module runs it from the command
line entry point (`comdml_ray.cli.compare.main`) exactly as a user would, with no Ray fixture around it.
"""

import dataclasses
import json
import os
import shutil

import pandas as pd
import pytest

from comdml_ray.cli.compare import main, parse
from comdml_ray.comparison import run_comparison
from comdml_ray.results.report import DETERMINISTIC_COLUMNS
from tests.conftest import StopAt

TINY = ["--agents", "4", "--rounds", "2", "--train-samples", "600", "--lr", "0.05", "--num-gpus", "0", "--no-progress"]


def test_compare_runs_every_method_on_local_s_clock_and_writes_runs_summary_and_bands(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = [
        *TINY,
        "--algorithms",
        "comdml-gossip,comdml,local",
        "--setting",
        "both",
        "--rounds-factor",
        "3",
        "--targets",
        "20,local-best-0.5",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    runs = pd.read_csv(out / "runs.csv")
    # local runs first (local-best targets come from it), whatever order was asked for.
    assert runs["method"].drop_duplicates().tolist() == ["local", "comdml-gossip", "comdml"]
    assert len(runs) == 2 * 3 * 2 and set(runs["target"]) == {"20", "local-best-0.5"}
    for setting in ("compute", "links"):
        assert os.path.getsize(out / f"comparison-{setting}.png") > 0
        t = runs[(runs.setting == setting) & (runs.target == "local-best-0.5")].set_index("method")
        local, comdml = t.loc["local"], t.loc["comdml"]
        assert abs(local.target_accuracy - (local.best_accuracy - 0.005)) < 1e-12 and local.ratio_vs_local == 1
        # Same clock: comdml runs until it has spent local's virtual time, or hits 3 x 2 rounds.
        rounds = pd.read_csv(out / setting / "comdml" / "rounds.csv")
        assert comdml.virtual_time_s == rounds["virtual_time_s"].iloc[-1]
        if comdml.rounds < 6:
            assert comdml.virtual_time_s >= local.virtual_time_s
        # One yardstick: the all-reduce runs report their consensus model too, the gossip run has none.
        assert rounds["consensus_accuracy"].dropna().tolist() == rounds["test_accuracy"].dropna().tolist()
        gossip = pd.read_csv(out / setting / "comdml-gossip" / "rounds.csv")
        assert gossip["consensus_accuracy"].isna().all() and gossip["test_accuracy"].notna().any()
    # Equal compute (links setting): ComDML forms no pairs, so it is local SGD on the same clock.
    links = runs[(runs.setting == "links") & (runs.target == "20")].set_index("method")
    assert links.loc["comdml"].rounds == links.loc["local"].rounds
    assert links.loc["comdml"].final_accuracy == links.loc["local"].final_accuracy
    # Compute stragglers: ComDML's rounds are shorter, so it runs more of them in local's time.
    compute = runs[(runs.setting == "compute") & (runs.target == "20")].set_index("method")
    assert compute.loc["comdml"].rounds > compute.loc["local"].rounds
    summary = pd.read_csv(out / "summary.csv")
    assert (summary["seeds"] == 1).all() and len(summary) == 2 * 3 * 2
    printed = capsys.readouterr().out
    assert "time to target" in printed and "runs.csv" in printed
    # --reuse-runs reuses every run whose summary.json has the same configuration, and continues one that was
    # stopped part way from its last checkpoint: here compute/comdml, run again and stopped (Ctrl-C) after round 2.
    uninterrupted = pd.read_csv(out / "compute" / "comdml" / "rounds.csv")
    shutil.rmtree(out / "compute" / "comdml")
    cfg, plan = parse([*args, "--reuse-runs"])
    with pytest.raises(KeyboardInterrupt):
        run_comparison(cfg, dataclasses.replace(plan, settings=("compute",)), log=StopAt("round 2/"))
    stopped = json.loads((out / "compute" / "comdml" / "summary.json").read_text())
    assert stopped["aborted"] == "KeyboardInterrupt" and stopped["rounds"] == 2  # a stopped run's summary is not a finished run's
    capsys.readouterr()
    assert main([*args, "--reuse-runs"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("reused: ") == 5 and printed.count("continued: ") == 1 and "from round 2" in printed
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "compute" / "comdml" / "rounds.csv")[DETERMINISTIC_COLUMNS],
        uninterrupted[DETERMINISTIC_COLUMNS],
        check_exact=True,
    )
    again = pd.read_csv(out / "runs.csv")
    pd.testing.assert_frame_equal(again.drop(columns="wall_time_s"), runs.drop(columns="wall_time_s"), check_exact=True)
    runs = again
    # --score-only runs nothing and scores what is there; a setting with a run missing is left out.
    os.remove(out / "links" / "comdml" / "summary.json")
    assert main([*args, "--score-only"]) == 0
    printed = capsys.readouterr().out
    assert "links: left out" in printed and "=== seed" not in printed
    pd.testing.assert_frame_equal(pd.read_csv(out / "runs.csv"), runs[runs.setting == "compute"].reset_index(drop=True))


def test_compare_refuses_an_unknown_method_or_a_repeated_seed_in_one_sentence(tmp_path, capsys):
    assert main([*TINY, "--algorithms", "local,fedavg", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "fedavg" in err and "choose from" in err and "Traceback" not in err
    assert main([*TINY, "--seeds", "1", "1", "--out", str(tmp_path)]) == 2
    assert "--seeds repeats" in capsys.readouterr().err
    assert main([*TINY, "--algorithms", "comdml", "--targets", "local-best-0.5", "--out", str(tmp_path)]) == 2
    assert "needs the local method" in capsys.readouterr().err


def test_reuse_matches_a_moved_run_and_one_saved_before_a_config_field_existed_only_at_that_field_s_default(tmp_path):
    from comdml_ray.comparison import finished_run
    from comdml_ray.config import RunConfig
    from comdml_ray.results.report import _json_default

    cfg = RunConfig(out=str(tmp_path), agents=4, rounds=2)
    old = json.loads(json.dumps(dataclasses.asdict(cfg), default=_json_default))
    del old["drift_prob"]  # a summary written before --drift-prob existed
    (tmp_path / "summary.json").write_text(json.dumps({"config": old, "final_accuracy": 0.5}))
    assert finished_run(cfg)["final_accuracy"] == 0.5
    old["out"] = "/elsewhere/the/run/was/made"  # a copied or moved folder is the same run
    (tmp_path / "summary.json").write_text(json.dumps({"config": old, "final_accuracy": 0.5}))
    assert finished_run(cfg)["final_accuracy"] == 0.5
    assert finished_run(cfg.replace(drift_prob=0.5)) is None  # not the default: the old run did something else
    assert finished_run(cfg.replace(rounds=3)) is None
    old["resume"] = "/where/it/was/continued/from"  # a run resumed after a stop is the same run
    (tmp_path / "summary.json").write_text(json.dumps({"config": old, "final_accuracy": 0.5}))
    assert finished_run(cfg)["final_accuracy"] == 0.5
    (tmp_path / "summary.json").write_text(json.dumps({"config": old, "aborted": "KeyboardInterrupt"}))
    assert finished_run(cfg) is None  # stopped part way: not finished
    old["no_such_field"] = 1  # a field this code does not know: not the same configuration
    (tmp_path / "summary.json").write_text(json.dumps({"config": old}))
    assert finished_run(cfg) is None
