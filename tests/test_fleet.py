"""Fleet-composition presets (two-class:SHARE, lognormal:SIGMA) and the sensitivity tables' rendered sentences (pure, no Ray)."""

import math

import numpy as np
import pandas as pd
import pytest

from comdml_ray.cli.claims import crossover as _crossover
from comdml_ray.cli.tables import render_fleet
from comdml_ray.config import ConfigError, RunConfig
from comdml_ray.timing.profiles import PAPER_SLOWDOWN, make_profiles


def test_two_class_puts_that_share_in_the_slowest_class():
    for share in (0.1, 0.25, 0.75):
        slow = np.array([p.slowdown for p in make_profiles(f"two-class:{share}", 100, seed=3)])
        assert (slow == PAPER_SLOWDOWN[-1]).sum() == round(100 * share) and set(slow) == {PAPER_SLOWDOWN[0], PAPER_SLOWDOWN[-1]}
    assert [p.slowdown for p in make_profiles("two-class:0.25", 20, 1)] == [p.slowdown for p in make_profiles("two-class:0.25", 20, 1)]


def test_lognormal_sigma_sets_the_spread():
    narrow = np.log([p.slowdown for p in make_profiles("lognormal:0.5", 400, 0)])
    wide = np.log([p.slowdown for p in make_profiles("lognormal:1.0", 400, 0)])
    assert np.std(wide) == pytest.approx(2 * np.std(narrow), rel=1e-9)  # the same draws, scaled
    assert [p.slowdown for p in make_profiles("lognormal", 50, 2)] == [p.slowdown for p in make_profiles("lognormal:0.8", 50, 2)]


@pytest.mark.parametrize("bad", ["two-class:1.5", "two-class:x", "lognormal:0", "lognormal:-1"])
def test_bad_fleet_values_are_one_sentence(bad):
    with pytest.raises(ConfigError, match="lognormal:SIGMA"):
        RunConfig(heterogeneity=bad).validate()


def test_fleet_table_and_trained_crossover_sentences_come_from_the_rows():
    rows = pd.DataFrame(
        [
            {"fleet": "two-class:0.1", "seed": 0, "target": "80", "target_accuracy": 0.8, "local_time_s": 400.0, "comdml_time_s": 100.0,
             "round_advantage": 4.0, "deadline_time_s": 200.0, "deadline_round_advantage": 3.0, "local_rounds": 20},
            {"fleet": "paper", "seed": 0, "target": "80", "target_accuracy": 0.8, "local_time_s": 300.0, "comdml_time_s": math.nan,
             "round_advantage": 2.0, "deadline_time_s": 150.0, "deadline_round_advantage": 2.5, "local_rounds": 20},
        ]
    )  # fmt: skip
    text = render_fleet(rows)
    assert "| two-class:0.1 | 400.0 | 4.00x | 0.25 | 3.00x | 0.50 |" in text and "| paper | 300.0 | 2.00x | not reached |" in text
    sens = pd.DataFrame(
        {"profile": "flops", "reference_gflops": [100.0, 300.0, 1000.0], "local_time_s": [20.0, 8.0, 3.0], "comdml_time_s": [6.0, 4.0, 3.3]}
    )
    # reduction 0.7, 0.5, -0.1: crosses between 300 and 1000, 5/6 of the way in log space
    assert "between 300 and 1000 GFLOPS (about 818" in _crossover(sens)


def test_sweeps_read_the_smoothed_time_with_the_raw_beside():
    """A sweep made since the smoothed reading records both times: the tables and the crossover read the smoothed one."""
    rows = pd.DataFrame(
        [
            {"fleet": "paper", "seed": 0, "target": "80", "target_accuracy": 0.8, "local_time_s": 300.0, "local_time_smoothed_s": 400.0,
             "comdml_time_s": 80.0, "comdml_time_smoothed_s": 100.0, "round_advantage": 4.0, "deadline_time_s": 150.0,
             "deadline_time_smoothed_s": 200.0, "deadline_round_advantage": 2.5, "local_rounds": 20},
        ]
    )  # fmt: skip
    assert "| paper | 400.0 (raw 300.0) | 4.00x | 0.25 | 2.50x | 0.50 |" in render_fleet(rows)
    sens = pd.DataFrame(
        {
            "profile": "flops",
            "reference_gflops": [100.0, 300.0, 1000.0],
            "local_time_s": [20.0, 8.0, 3.0],
            "comdml_time_s": [6.0, 4.0, 3.3],
            "local_time_smoothed_s": [20.0, 8.0, 3.0],
            "comdml_time_smoothed_s": [6.0, 8.8, 3.3],
        }
    )
    # smoothed reductions 0.7, -0.1, -0.1: the crossing moves to between 100 and 300
    assert "between 100 and 300 GFLOPS" in _crossover(sens)


def test_fleet_sentences_come_from_the_rows(tmp_path):
    from comdml_ray.cli.claims import bench_fleet

    assert bench_fleet(str(tmp_path)) == ""  # no fleet table yet: no sentences
    pd.DataFrame(
        {
            "fleet": ["two-class:0.1", "two-class:0.75", "paper", "lognormal:1.0"],
            "seed": 0,
            "target": "80",
            "local_time_smoothed_s": [100.0, 400.0, 300.0, 200.0],
            "comdml_time_smoothed_s": [90.0, 100.0, 120.0, math.nan],
            "deadline_time_smoothed_s": [80.0, 200.0, 150.0, 100.0],
        }
    ).to_csv(tmp_path / "fleet.csv", index=False)
    text = bench_fleet(str(tmp_path))
    assert "by share of slow agents 0.1: 0.90x, 0.75: 0.25x; by lognormal spread 1.0: not reached; the paper preset 0.40x." in text
    assert "two-class:0.1 1.12x, two-class:0.75 0.50x, paper 0.80x, lognormal:1.0 not reached" in text
    assert "ComDML is sooner in 2 of 4 fleets, `local-deadline` in 1." in text


def test_the_speed_sweep_shows_local_deadline_beside_comdml(tmp_path):
    """The sensitivity table and its sentences give local-deadline's reduction at every speed, and where it beats ComDML."""
    from comdml_ray.cli.claims import bench_sensitivity
    from comdml_ray.cli.tables import render_sensitivity

    sens = pd.DataFrame(
        {
            "seed": 0,
            "profile": "flops",
            "reference_gflops": [10.0, 300.0, 1000.0],
            "compute_comm_ratio": [35.0, 1.2, 0.35],
            "round_advantage": [4.0, 2.0, 1.0],
            "deadline_round_advantage": [3.0, 3.0, 3.0],
            "target": "75",
            "target_accuracy": 0.75,
            "local_time_s": [200.0, 8.0, 3.0],
            "comdml_time_s": [50.0, 6.0, 3.0],
            "deadline_time_s": [60.0, 4.0, 1.5],
        }
    )
    table = render_sensitivity(sens)
    assert "local-deadline's reduction |" in table
    assert "| flops | 300 | 1.20 | 2.00x | 8.0 | 6.0 | 0.75 | 25% | 3.00x | 0.50 | 50% |" in table
    sens.to_csv(tmp_path / "sensitivity.csv", index=False)
    text = bench_sensitivity(str(tmp_path))
    assert "its reduction 70% at 10, 50% at 300, 50% at 1000; it reaches the target before ComDML at 300, 1000 GFLOPS." in text
