"""The one yardstick: which agents are scored, targets, time-to-target and the seed summary (pure, no Ray)."""

import math

import numpy as np
import pandas as pd
import pytest

from comdml_ray.config import ConfigError, RunConfig
from comdml_ray.results.yardstick import parse_methods, parse_targets, plateau_round, plot_bands, score_runs, summarize, target_level


def curve(times, accs):
    return pd.DataFrame(
        {"round": range(len(times)), "virtual_time_s": times, "test_accuracy": accs, "consensus_accuracy": [math.nan] * len(times)}
    )


def test_every_method_scores_the_same_seeded_sample_of_agents():
    ids = {a: RunConfig(algorithm=a, agents=20, eval_agents=16).eval_agent_ids() for a in ("local", "comdml", "swift", "dpsgd")}
    assert len({tuple(v) for v in ids.values()}) == 1 and len(ids["local"]) == 16 == len(set(ids["local"]))
    assert RunConfig(agents=20, eval_agents=16, seed=1).eval_agent_ids() != ids["local"]  # seeded
    assert RunConfig(agents=10, eval_agents=16).eval_agent_ids() == list(range(10))  # all when fewer
    # One model under exact all-reduce: one of the sample is evaluated; gossip evaluates them all.
    assert RunConfig(algorithm="comdml", agents=20).scored_agent_ids() == ids["local"][:1]
    assert RunConfig(algorithm="comdml", agents=20, aggregation="gossip").scored_agent_ids() == ids["local"]


def test_targets_parse_percent_fraction_and_local_best():
    assert parse_targets("75, 0.8,local-best-0.5") == ["75", "0.8", "local-best-0.5"]
    for bad in ("150", "x", "local-best-y", ""):
        with pytest.raises(ConfigError, match="targets"):
            parse_targets(bad)
    local = curve([10, 20, 30], [0.70, 0.82, 0.81])
    assert target_level("75", local) == 0.75 and target_level("0.8", local) == 0.8
    assert np.isclose(target_level("local-best-0.5", local), (0.70 + 0.82 + 0.81) / 3 - 0.005)  # the smoothed best
    with pytest.raises(ConfigError, match="fedavg"):
        parse_methods("local,fedavg")
    assert parse_methods("comdml-gossip,local") == ["local", "comdml-gossip"]


def test_score_runs_times_equal_accuracies_and_compares_at_the_common_time():
    local = curve([10, 20, 30, 40, 50, 60], [0.60, 0.70, 0.78, 0.80, 0.80, 0.80])  # plateau at round 4 of 6: too short
    fast = curve([2, 4, 6, 8], [0.55, 0.72, 0.79, 0.81])
    summaries = {m: {"wall_time_s": 1.0, "bytes_sent": 1} for m in ("local", "comdml")}
    rows = pd.DataFrame(score_runs(0, "compute", {"local": local, "comdml": fast}, summaries, ["75", "local-best-0.5"]))
    r = rows.set_index(["method", "target"])
    assert r.loc[("local", "75"), "time_to_target_s"] == 30 and r.loc[("comdml", "75"), "time_to_target_s"] == 6
    assert r.loc[("comdml", "75"), "ratio_vs_local"] == pytest.approx(0.2)
    assert r.loc[("local", "local-best-0.5"), "time_to_target_s"] == 40  # 79.5%: first reached at round 4
    assert r.loc[("comdml", "local-best-0.5"), "time_to_target_s"] == 8
    assert (rows["common_time_s"] == 8).all()
    assert math.isnan(r.loc[("local", "75"), "accuracy_at_common_time"])  # local's first evaluation is after 8 s
    assert r.loc[("comdml", "75"), "accuracy_at_common_time"] == 0.81
    assert plateau_round(local) == 4 and not r.loc[("local", "75"), "local_long_enough"]


def test_summary_gives_mean_std_and_how_many_seeds_reached():
    runs = pd.DataFrame(
        [
            {
                "setting": "compute",
                "method": "comdml",
                "target": "80",
                "seed": s,
                "time_to_target_s": t,
                "ratio_vs_local": q,
                "target_accuracy": 0.8,
                "final_accuracy": 0.8,
                "accuracy_at_common_time": 0.8,
                "virtual_time_s": 1.0,
                "wall_time_s": 1.0,
                "rounds": 3,
            }
            for s, t, q in [(0, 10.0, 0.2), (1, 20.0, 0.4), (2, math.nan, math.nan)]
        ]
    )
    s = summarize(runs).iloc[0]
    assert (s.seeds, s.reached) == (3, 2)
    assert s.time_to_target_s_mean == 15 and s.time_to_target_s_std == pytest.approx(np.std([10, 20], ddof=1))
    assert s.ratio_vs_local_mean == pytest.approx(0.3)


def test_band_plot_is_written(tmp_path):
    runs = [curve([1, 2, 3], [0.5, 0.6, 0.7]), curve([1, 2, 3.5], [0.4, 0.65, 0.72])]
    plot_bands({"local": runs}, str(tmp_path / "b.png"), {"75": 0.75})
    assert (tmp_path / "b.png").stat().st_size > 0


def test_smoothed_time_to_target_ignores_a_one_evaluation_spike_and_keeps_the_raw_beside():
    spiky = curve([1, 2, 3, 4, 5, 6], [0.60, 0.81, 0.70, 0.79, 0.80, 0.82])
    steady = curve([1, 2, 3, 4, 5, 6], [0.60, 0.70, 0.80, 0.80, 0.80, 0.82])
    summaries = {m: {"wall_time_s": 1.0, "bytes_sent": 1, "config": {"time_budget_s": 4.0}} for m in ("local", "comdml")}
    r = pd.DataFrame(score_runs(0, "compute", {"local": steady, "comdml": spiky}, summaries, ["80"])).set_index("method")
    assert r.loc["comdml", "time_to_target_s"] == 2  # raw: the spike at 2 s
    assert r.loc["comdml", "time_to_target_smoothed_s"] == 6  # mean of (0.79, 0.80, 0.82) is the first >= 0.80
    assert r.loc["local", "time_to_target_smoothed_s"] == 5  # (0.80, 0.80, 0.80)
    assert r.loc["comdml", "ratio_vs_local_smoothed"] == pytest.approx(6 / 5)
    # equal time: accuracy at a quarter, half and all of the 4 s budget
    assert r.loc["comdml", ["accuracy_at_quarter_budget", "accuracy_at_half_budget", "accuracy_at_budget"]].tolist() == [0.60, 0.81, 0.79]


def test_bootstrap_interval_brackets_the_mean_and_widens_with_spread():
    from comdml_ray.results.yardstick import bootstrap_ci

    lo, hi = bootstrap_ci([0.5, 0.6, 0.7, 0.55, 0.65])
    assert lo < 0.6 < hi and bootstrap_ci([0.5, 0.6, 0.7, 0.55, 0.65]) == (lo, hi)  # seeded: the same interval every time
    wide = bootstrap_ci([0.2, 0.6, 1.0, 0.4, 0.8])
    assert wide[1] - wide[0] > hi - lo
    assert all(math.isnan(x) for x in bootstrap_ci([0.5]))


def test_local_best_is_read_on_the_smoothed_curve_so_local_reaches_it():
    local = curve([1, 2, 3, 4, 5], [0.70, 0.78, 0.80, 0.86, 0.82])  # a one-evaluation peak at 86%
    level = target_level("local-best-0.5", local)
    assert level == pytest.approx((0.80 + 0.86 + 0.82) / 3 - 0.005)  # the smoothed best, not the spike
    summaries = {"local": {"wall_time_s": 1.0, "bytes_sent": 1}}
    (row,) = score_runs(0, "compute", {"local": local}, summaries, ["local-best-0.5"])
    assert row["time_to_target_smoothed_s"] == 5 and row["ratio_vs_local_smoothed"] == 1
    assert target_level("local-best-0.5", curve([1, 2], [0.5, 0.6])) == pytest.approx(0.595)  # too short to smooth: the raw best
