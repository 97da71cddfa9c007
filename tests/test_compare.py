"""benchmarks/compare.py end to end on a tiny problem: the same-clock rule, the table and its files.

compare.py starts and stops a Ray of its own, so this module runs it from the command
line entry point (`main`) exactly as a user would, with no Ray fixture around it.
"""

import os

import pandas as pd

from benchmarks.compare import main

TINY = ["--agents", "4", "--rounds", "2", "--train-samples", "600", "--lr", "0.05", "--num-gpus", "0", "--no-progress"]


def test_compare_runs_every_algorithm_on_local_s_clock_and_writes_table_and_plots(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(TINY + ["--algorithms", "comdml,local", "--setting", "both", "--rounds-factor", "3", "--out", str(out)])
    assert rc == 0
    table = pd.read_csv(out / "comparison.csv")
    # local runs first (its final accuracy is the target), whatever order was asked for.
    assert table["algorithm"].tolist() == ["local", "comdml", "local", "comdml"]
    assert table["setting"].tolist() == ["compute", "compute", "links", "links"]
    for setting in ("compute", "links"):
        assert os.path.getsize(out / f"comparison-{setting}.png") > 0
        t = table[table.setting == setting].set_index("algorithm")
        local, comdml = t.loc["local"], t.loc["comdml"]
        assert local.target_accuracy == local.final_accuracy and local.reduction_vs_local == 0
        # Same clock: comdml runs until it has spent local's virtual time, or hits 3 x 2 rounds.
        rounds = pd.read_csv(out / setting / "comdml" / "rounds.csv")
        assert comdml.virtual_time_s == rounds["virtual_time_s"].iloc[-1]
        if comdml.rounds < 6:
            assert comdml.virtual_time_s >= local.virtual_time_s
            assert len(rounds) == 1 or rounds["virtual_time_s"].iloc[-2] < local.virtual_time_s
    # Equal compute (links setting): ComDML forms no pairs, so it is local SGD on the same clock.
    links = table[table.setting == "links"].set_index("algorithm")
    assert links.loc["comdml"].rounds == links.loc["local"].rounds
    assert links.loc["comdml"].final_accuracy == links.loc["local"].final_accuracy
    # Compute stragglers: ComDML's rounds are shorter, so it runs more of them in local's time.
    compute = table[table.setting == "compute"].set_index("algorithm")
    assert compute.loc["comdml"].rounds > compute.loc["local"].rounds
    printed = capsys.readouterr().out
    assert "time to target" in printed and "comparison.csv" in printed


def test_compare_refuses_an_unknown_algorithm_in_one_sentence(tmp_path, capsys):
    rc = main(TINY + ["--algorithms", "local,fedavg", "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "fedavg" in err and "choose from" in err and "Traceback" not in err
