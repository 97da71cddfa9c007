"""Emulated heterogeneity and online profiling, without Ray: the pacer, the links, the link meter, observed links in the plan.

Sleeps are tens of milliseconds; margins are wide (a loaded machine only makes sleeps longer,
and the checks that need "not longer than" allow several times the target).
"""

import time

import numpy as np

from comdml_ray.learning.costmodel import SplitProfile
from comdml_ray.method.comdml_steps import problem_from_states
from comdml_ray.method.messages import AgentState
from comdml_ray.timing.emulation import LinkMeter, Links, Pacer, now, offset_clock, wait_until


def test_pacer_pads_each_item_to_its_target_and_does_not_bank_idle_time():
    p = Pacer(emulate=True)
    p.resume()
    t0 = time.monotonic()
    for _ in range(3):
        p.done(0.05)  # no real work: all padding
    assert time.monotonic() - t0 >= 0.15 - 1e-3
    time.sleep(0.1)  # waiting for data
    p.resume()
    t1 = time.monotonic()
    p.done(0.05)  # the wait does not count as work already done
    assert time.monotonic() - t1 >= 0.05 - 1e-3
    assert 0.2 - 1e-3 <= p.work_s < 0.2 + 0.09  # the 0.1 s wait is not device time


def test_pacer_makes_up_an_overrun_with_the_next_items():
    p = Pacer(emulate=True)
    p.resume()
    t0 = time.monotonic()
    time.sleep(0.12)  # real work slower than its target
    p.done(0.05)
    p.done(0.05)  # no sleep needed: the deadline is still behind
    assert time.monotonic() - t0 < 0.12 + 0.04
    assert p.overrun_s > 0.05


def test_without_emulation_nothing_sleeps():
    p, links = Pacer(emulate=False), Links(emulate=False)
    t0 = time.monotonic()
    for _ in range(100):
        p.done(1.0)
    assert time.monotonic() - t0 < 0.5
    assert links.send(1, 1e9) == 0.0  # a real link: usable once fetched


def test_links_delay_by_size_and_latency_and_queue_on_one_link():
    links = Links(emulate=True, bandwidth={1: 1e6, 2: 1e6}, latency={1: 0.01, 2: 0.01})
    a = links.send(1, 100_000)  # 0.1 s + 10 ms after its sending
    b = links.send(1, 100_000)  # queued behind a on the same link
    c = links.send(2, 100_000)  # another link: not queued
    assert abs(a - 0.11) < 0.02
    assert abs(b - 0.21) < 0.02
    assert abs(c - 0.11) < 0.02


def test_the_one_clock_is_this_nodes_own_and_an_offset_moves_every_reading():
    t0, m0 = now(), time.monotonic()
    offset_clock(300.0)
    try:
        assert 299.0 < (now() - time.monotonic()) - (t0 - m0) < 301.0
        t = now()
        wait_until(t + 0.02)  # deadlines are read on the same (offset) clock: no 300 s wait, no skipped wait
        assert 0.02 - 1e-3 <= now() - t < 5.0
        p = Pacer(emulate=True)  # made after the offset: durations are unchanged
        p.resume()
        p.done(0.02)
        assert 0.02 - 1e-3 <= p.work_s < 5.0
    finally:
        offset_clock(0.0)


def test_link_meter_measures_throughput_of_a_stream():
    m = LinkMeter()
    t = 1000.0
    for i in range(4):  # 1 MB every 0.5 s, sent back to back: 2 MB/s
        m.delivered(3, 1e6, began=t, usable_at=t + 0.5 * (i + 1))
    assert abs(m.throughput()[3] - 2e6) < 1e3


def test_observed_links_override_the_profile_in_the_plan_problem():
    prof = SplitProfile(
        source="test",
        batch_size=32,
        base_sec_per_batch=0.01,
        model_bytes=1000,
        split_ids=(1,),
        rho_s=(0.5,),
        rho_f=(0.5,),
        bytes_per_batch=(1000,),
        suffix_bytes=(100,),
    )
    states = [AgentState(0, 10, 0.01, 1e8, 1e-3), AgentState(1, 10, 0.1, 1e8, 1e-3, links=((0, 2e6),))]
    p = problem_from_states(states, prof, np.zeros(2), 1)
    assert p.bandwidth[0, 1] == p.bandwidth[1, 0] == 2e6
    plain = problem_from_states([AgentState(0, 10, 0.01, 1e8, 1e-3), AgentState(1, 10, 0.1, 1e8, 1e-3)], prof, np.zeros(2), 1)
    assert plain.bandwidth[0, 1] == 1e8


def test_the_measured_link_model_defaults_to_the_profile_and_scales_it_when_given():
    """--link-efficiency and --transfer-latency-ms (measured on a bed) leave the default clock exactly as it was."""
    from comdml_ray.config import RunConfig
    from comdml_ray.timing.setting import Setting

    def build(**kw):
        cfg = RunConfig(agents=5, heterogeneity="paper", **kw)
        return Setting.build(cfg, [[k] for k in range(5)], np.full(5, 100), np.full(5, 4.0), 0.02, 100_000)

    base, same, slow = build(), build(link_efficiency=1.0, transfer_latency_s=0.0), build(link_efficiency=0.5, transfer_latency_s=0.004)
    assert np.array_equal(base.agent_bw, same.agent_bw) and np.array_equal(base.exchange_s, same.exchange_s)
    assert np.array_equal(np.asarray(base.link_bw), np.asarray(same.link_bw))
    assert np.allclose(slow.agent_bw, 0.5 * base.agent_bw)
    assert np.isclose(slow.link_lat[0, 1], base.link_lat[0, 1] + 0.004)  # a link pays the extra latency once
    assert (slow.exchange_s > base.exchange_s).all()


def test_slots_placement_pins_each_actor_to_its_own_node_resource():
    from comdml_ray.config import RunConfig
    from comdml_ray.runtime.run import Run

    run = Run.__new__(Run)  # only the bundle: no Ray
    run.cfg = RunConfig(agents=3, placement="slots").validate()
    run.layout = type("L", (), {"cpus": 1.0, "gpus": 0.0})()
    assert run._bundle(2) == {"CPU": 1.0, "comdml_slot_2": 1.0}
    assert run._bundle() == {"CPU": 1.0}  # what a recovery waits for: CPUs, as before
    run.cfg = RunConfig(agents=3, placement="spread").validate()
    assert run._bundle(2) == {"CPU": 1.0}
