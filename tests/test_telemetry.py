"""What actors log and the idle share, without Ray: the per-round line, its warnings, the run's demand on an autoscaler.

The end-to-end checks (metrics on Ray's Prometheus endpoint, `ray job logs`, the
dashboard in a browser) are in tests/test_metrics_export.py and tests/test_job_logs.py.
"""

import logging
import math

import pytest

from comdml_ray.config import ConfigError, RunConfig
from comdml_ray.runtime.cluster import AutoscalerView, Demand, _progress_line, demand_of
from comdml_ray.runtime.telemetry import actor_logger, group_name, round_line, with_idle_share


def row(agent, finish, partner=-1, loss=0.5, offloaded=0, **extra):
    return {
        "round": 2,
        "agent": agent,
        "virtual_finish_s": finish,
        "wall_time_s": 1.0,
        "partner": partner,
        "split": 2 if partner >= 0 else -1,
        "train_loss": loss,
        "bytes_sent": 2_000_000,
        "bytes_offloaded": offloaded,
    } | extra


def test_idle_share_is_the_wait_for_the_slowest():
    rows = with_idle_share([row(0, 10.0), row(1, 40.0), row(2, 20.0)])
    assert [r["idle_share"] for r in rows] == [0.75, 0.0, 0.5]
    # asynchronous rows (they carry "steps") have no barrier: unchanged
    asynchronous = [row(0, 10.0, steps=1), row(1, 30.0, steps=2)]
    assert with_idle_share(asynchronous) == asynchronous


def test_round_line_one_agent_and_several():
    one = with_idle_share([row(3, 10.0, partner=7, offloaded=1_500_000), row(7, 20.0)])[:1]
    line = round_line(group_name([3]), one, None)
    assert line == "round 3 agent-003: loss 0.500, virtual finish 10.0 s, idle 50%, offloaded 1.5 MB to agent-007 at split 2, sent 2.0 MB"
    many = with_idle_share([row(0, 10.0), row(1, 40.0, partner=0, offloaded=1_000_000)])
    line = round_line(group_name([0, 1]), many, 0.812)
    assert line.startswith("round 3 agents-000-001: loss 0.500 (mean), virtual finish 10.0-40.0 s, idle 0-75%")
    assert line.endswith("1 offloaded 1.0 MB, sent 4.0 MB, test accuracy 81.2%")
    rows = [row(0, 12.5, steps=2), row(1, 30.0, steps=0, loss=math.nan)]
    assert (
        round_line(group_name([0, 1]), rows, None)
        == "row 3 agents-000-001: loss 0.500 (mean), 2 steps, last finish 12.5-30.0 s virtual, sent 4.0 MB"
    )


def test_actor_logger_is_info_to_stderr_once(capsys):
    log = actor_logger()
    assert actor_logger() is log and sum(getattr(h, "comdml", False) for h in log.handlers) == 1
    log.info("round 1 agent-000: loss 0.5")
    log.debug("per batch: never shown")
    err = capsys.readouterr().err
    assert "INFO round 1 agent-000" in err and "per batch" not in err
    assert log.level == logging.INFO and not log.propagate


def test_demand_follows_the_layout_flags():
    d = demand_of(RunConfig(agents=100, gpus_per_agent=0.25).validate())
    assert len(d.bundles) == 100 and d.gpus == 25 and d.cpus == 100
    d = demand_of(RunConfig(agents=10, agents_per_actor=4, cpus_per_agent=2).validate())
    assert len(d.bundles) == 3 and d.cpus == 6 and d.gpus == 0
    assert d.met_by({"CPU": 6.0}) and not d.met_by({"CPU": 5.0})


def test_progress_line_says_what_it_waits_for():
    need = Demand([{"CPU": 1.0, "GPU": 0.25}] * 100)
    line = _progress_line(need, {"CPU": 40.0, "GPU": 10.0}, AutoscalerView(pending=15, failed=0), 150.0, 1200.0)
    assert line == (
        "waiting for the autoscaler: 10/25 GPUs, 40/100 CPUs, 15 nodes starting "
        "(2.5 of at most 20 min; `ray status` on the head shows more)"
    )


def test_scale_timeout_is_validated():
    with pytest.raises(ConfigError, match="--scale-timeout"):
        RunConfig(scale_timeout_s=-1.0).validate()
