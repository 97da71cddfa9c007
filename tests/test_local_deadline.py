"""local-deadline (straggler-aware local SGD with FedNova's averaging) and the schedule every method follows, without Ray."""

import numpy as np
import pytest

from comdml_ray.config import ConfigError, RunConfig
from comdml_ray.learning.training import LrSchedule, flatten
from tests.conftest import local_backend


def test_deadline_is_a_quantile_of_the_round_times_and_cuts_only_the_slow():
    cfg = RunConfig(agents=10, algorithm="local-deadline", train_samples=3000, deadline_quantile=0.5).validate()
    _, st = local_backend(cfg, [list(range(10))])
    deadline, tau = st.deadline_batches(0, 0.5)
    full = st.batches * st.sec_per_batch(0)
    assert deadline == pytest.approx(np.median(full))
    fast = full <= deadline
    assert fast.any() and (~fast).any()  # the paper preset has both
    assert np.array_equal(tau[fast], st.batches[fast])  # agents within the deadline train their whole round
    assert np.all(tau[~fast] < st.batches[~fast]) and np.all(tau >= 1)
    assert np.all(tau * st.sec_per_batch(0) <= deadline + 1e-9)  # and what they train ends by the deadline
    _, everyone = st.deadline_batches(0, 1.0)
    assert np.array_equal(everyone, st.batches)  # quantile 1 is plain local SGD


def test_a_deadline_round_is_shorter_and_averages_as_fednova():
    """One round in process: slow agents train fewer batches, the clock charges what they did, and the
    average is x0 + tau_eff * sum_k p_k (x_k - x0) / tau_k on the parameters."""
    from comdml_ray.results.rows import ClockSplits, sync_round_rows
    from comdml_ray.runtime.rounds import average, train_round

    cfg = RunConfig(agents=6, algorithm="local-deadline", train_samples=1800).validate()
    be, st = local_backend(cfg, [[0, 1, 2], [3, 4, 5]])
    x0 = be.flat_model(0, 0).astype(np.float64)
    reports, _ = train_round(be, 0, comdml=False)
    trained = {k: be.flat_model(k // 3, k).astype(np.float64) for k in range(6)}
    _, tau = st.deadline_batches(0, cfg.deadline_quantile)
    assert [reports[g].work[k].own_batches for g in range(2) for k in range(g * 3, g * 3 + 3)] == tau.tolist()
    average(be, st, cfg.aggregation, aux=False)
    p = st.shares
    expected = x0 + float(np.dot(p, tau)) * sum(p[k] * (trained[k] - x0) / tau[k] for k in range(6))
    mask = be.groups[0]._parameter_mask()
    got = be.flat_model(0, 0)
    assert np.allclose(got[mask], expected[mask], atol=1e-5)
    plain = sum(p[k] * trained[k] for k in range(6))  # BatchNorm statistics: the plain data-weighted mean
    assert np.allclose(got[~mask], plain[~mask], atol=1e-5)
    assert np.array_equal(be.flat_model(1, 5), got)  # every agent holds the one model
    splits = ClockSplits.of(be.split_profile, np.zeros(0))
    row, _, _ = sync_round_rows(0, st, splits, cfg.aggregation, reports, None)
    deadline, _ = st.deadline_batches(0, cfg.deadline_quantile)
    assert row.round_virtual_s <= deadline + float(st.exchange_s.max()) + 1e-9


def test_equal_steps_make_fednova_the_plain_mean():
    cfg = RunConfig(agents=4, algorithm="local-deadline", train_samples=400).validate()
    be, st = local_backend(cfg, [[0, 1, 2, 3]])
    g = be.groups[0]
    g._round_start = flatten(g.agents[0].model)
    g._nova_weights = st.shares.copy()  # tau equal for all: w_k = p_k
    for k in range(4):
        assert np.allclose(g.contribution(k), flatten(g.agents[k].model) * np.float32(st.shares[k]), atol=1e-7)


def test_local_deadline_refuses_gossip():
    with pytest.raises(ConfigError, match="drop --aggregation gossip"):
        RunConfig(algorithm="local-deadline", aggregation="gossip").validate()
    with pytest.raises(ConfigError, match="--deadline-quantile"):
        RunConfig(algorithm="local-deadline", deadline_quantile=0).validate()


def test_asynchronous_steps_follow_the_warmup_and_schedule():
    """A step of k of a round's B batches moves the agent's schedule clock by k/B epochs, its rates from the schedule."""
    cfg = RunConfig(agents=2, algorithm="adpsgd", train_samples=640, lr=0.4, warmup_rounds=2.0, lr_schedule="cosine", rounds=4)
    be, _ = local_backend(cfg.validate(), [[0, 1]])
    a = be.groups[0].agents[0]
    per_round = 10  # 320 samples / batch 32
    seen = []
    real = a.full_optim.step

    def step(*args, **kw):
        seen.append(a.full_optim.param_groups[0]["lr"])
        return real(*args, **kw)

    a.full_optim.step = step
    a.train_step(3)
    a.train_step(3)
    sched = LrSchedule(0.4, 2.0, "cosine", 4)
    assert seen == pytest.approx([sched.at(i / per_round) for i in range(1, 7)])
    assert a.rounds_trained == pytest.approx(0.6)
    assert seen[0] < seen[-1] < 0.4  # warming up, not lr 0.4 from the first step


def test_the_cosine_horizon_is_the_flag_not_the_stretched_rounds():
    cfg = RunConfig(rounds=120, lr_horizon=30, lr_schedule="cosine").validate()
    assert cfg.lr_horizon_rounds() == 30
    assert RunConfig(rounds=120).lr_horizon_rounds() == 120
