"""The baselines on the event clock: averaging rules, the clock itself, reproducibility, and the Ray path.

Most tests drive plain AgentGroups in this process (LocalBackend) on tiny problems;
the last ones run each algorithm once through Ray (one local Ray for them) and check
that it gives exactly what the in-process run gives.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from comdml_ray.baselines import ADPSGD, EventClock, Uplink, active_passive, drive
from comdml_ray.config import RunConfig
from comdml_ray.learning.training import flatten
from comdml_ray.method.async_steps import FragmentSpec, fragment_indices, fragment_sizes
from comdml_ray.method.store import Shipped
from comdml_ray.timing.clock import exchange_seconds
from comdml_ray.timing.topology import metropolis_hastings
from tests.conftest import local_backend, quiet

torch.set_num_threads(1)

TINY = dict(
    agents=4, train_samples=600, rounds=2, lr=0.05, eval_agents=1, step_batches=0, progress=False, num_gpus=0
)  # step 0: a round's work
LAYOUT = [[0, 1], [2, 3]]  # what `auto` gives 4 agents on a 2-CPU Ray


def build(cfg: RunConfig, layout=LAYOUT, slowdown=None):
    """Fresh groups (same seed -> same shards and initial models), their backend and the run's Setting."""
    be, st = local_backend(cfg, layout, slowdown)
    return be.groups, be, st


def ship(groups, x: np.ndarray) -> Shipped:
    """Put an array in the groups' store, as an actor's return would be."""
    return Shipped.of(groups[0].store, np.asarray(x, dtype=np.float32))


def opened(groups, shipped: list[Shipped]) -> list[np.ndarray]:
    return [s.open(groups[0].store) for s in shipped]


def model(groups, k) -> np.ndarray:
    return next(flatten(g.agents[k].model) for g in groups if k in g.agents).astype(np.float64)


# ----------------------------------------------------------------------------- the clock


def test_event_clock_pops_in_time_order_ties_in_push_order():
    c = EventClock()
    for t, name in [(3.0, "c"), (1.0, "a"), (2.0, "b1"), (2.0, "b2"), (0.5, "z")]:
        c.push(t, name)
    assert [c.pop()[1] for _ in range(5)] == ["z", "a", "b1", "b2", "c"]
    with pytest.raises(ValueError):
        c.push(1.0, "in the past")


def test_uplink_sends_back_to_back_and_drops_what_has_not_started():
    link = Uplink(0, bw=np.array([1.0, 10.0, 5.0]), lat=np.array([0.0, 0.5, 0.5]))
    a = link.send(0.0, 1, 20, "a")  # 2 s on the wire
    b = link.send(0.0, 2, 10, "b")  # starts when a is done
    assert (a.start, a.end, a.arrival) == (0.0, 2.0, 2.5)
    assert (b.start, b.end, b.arrival) == (2.0, 4.0, 4.5)
    dropped = link.drop_unstarted(1.0)  # a newer step at t=1: a is on the wire, b never started
    assert dropped == [b] and b.cancelled and not a.cancelled
    c = link.send(1.0, 1, 10, "c")
    assert c.start == 2.0  # after a, which completes


# ----------------------------------------------------------------------------- averaging rules


def test_adpsgd_pair_average_leaves_both_partners_with_the_same_mean():
    cfg = RunConfig(**TINY).validate()
    groups, _, _ = build(cfg)
    g0, g1 = groups
    g0.adpsgd_finish(0)
    g1.adpsgd_finish(3)  # different shards: the models now differ
    x0, x3 = model(groups, 0), model(groups, 3)
    assert not np.allclose(x0, x3)
    mean = g1.adpsgd_average(3, False, g0.async_snapshot(0))
    g0.adpsgd_set(0, False, mean)
    assert np.array_equal(model(groups, 0), model(groups, 3))
    assert np.allclose(model(groups, 0), (x0 + x3) / 2, atol=1e-6)


def test_adpsgd_update_of_a_mid_step_agent_lands_on_its_averaged_parameters():
    cfg = RunConfig(**TINY).validate()
    groups, _, _ = build(cfg)
    twin, _, _ = build(cfg)  # same seed: agent 1 computes the same step from the same start
    start = model(groups, 1)
    groups[0].adpsgd_finish(0)
    other = model(groups, 0)  # a trained neighbour: its BN running variances are far below the initial 1
    groups[0].adpsgd_average(1, True, ship(groups, other))  # the neighbour averages with 1 mid-step
    rep = groups[0].adpsgd_finish(1)
    twin[0].adpsgd_finish(1)  # nobody touched the twin: plain training from the same start
    trained, now = model(twin, 1), (start + other) / 2
    is_buf, keep = groups[0]._buffer_layout(groups[0].agents[1].model)
    expected = now + (trained - start)  # parameters: AD-PSGD's stale update
    expected[is_buf] = trained[is_buf] + keep[is_buf] ** rep.batches * (now - start)[is_buf]  # running statistics
    got = model(groups, 1)
    assert is_buf.any() and np.allclose(got, expected, atol=1e-5)
    sd = groups[0].agents[1].model.state_dict()
    assert all((v > 0).all() for key, v in sd.items() if key.endswith("running_var"))


def test_swift_mixes_its_trained_model_with_the_last_received_ones():
    cfg = RunConfig(**TINY).validate()
    groups, _, _ = build(cfg)
    v1, v3 = model(groups, 1) + 0.1, model(groups, 3) - 0.2
    rep, trained = groups[0].swift_finish(0, [0.5, 0.25, 0.25], ship(groups, v1), ship(groups, v3))
    trained = trained.open(groups[0].store)
    assert rep.agent == 0 and rep.batches > 0
    assert np.allclose(model(groups, 0), 0.5 * trained + 0.25 * v1 + 0.25 * v3, atol=1e-6)


def test_divshare_one_fragment_to_all_other_agents_is_a_full_average():
    cfg = RunConfig(**TINY).validate()
    groups, _, _ = build(cfg, layout=[[0, 1, 2, 3]])
    (g,) = groups
    sent = [g.divshare_finish(k, 0, 1, [])[1] for k in (1, 2, 3)]  # Omega = 1: the fragment is the whole model
    rep, mine = g.divshare_finish(0, 0, 1, [FragmentSpec(k, 0, 0) for k in (1, 2, 3)], *sent)
    assert rep.batches > 0
    models = [unpermute(g, [f], sender) for f, sender in zip(opened(groups, [mine, *sent]), (0, 1, 2, 3), strict=True)]
    assert not np.allclose(models[0], models[1])
    expected = sum(models) / 4
    assert np.allclose(model(groups, 0), expected, atol=1e-6)


def test_divshare_per_parameter_mean_over_the_copies_received():
    cfg = RunConfig(**TINY).validate()
    groups, _, _ = build(cfg, layout=[[0, 1, 2, 3]])
    (g,) = groups
    shipped1 = g.divshare_finish(1, 0, 4, [])[1:]
    shipped2 = g.divshare_finish(2, 0, 4, [])[1:]
    frags1, frags2 = opened(groups, shipped1), opened(groups, shipped2)
    p = frags1[0].size + frags1[1].size + frags1[2].size + frags1[3].size
    sizes = g.tensor_sizes()
    assert sum(sizes) == p and [f.size for f in frags1] == fragment_sizes(sizes, 4)
    cut1, cut2 = fragment_indices(sizes, 4, cfg.seed, 1, 0), fragment_indices(sizes, 4, cfg.seed, 2, 0)
    assert np.array_equal(np.sort(np.concatenate(cut1)), np.arange(p))  # fragments partition the model
    # each fragment holds a quarter (floor or ceil) of every tensor, drawn at random within it
    bounds = np.cumsum([0, *sizes])
    for idx in cut1:
        per_tensor = np.histogram(idx, bins=bounds)[0]
        assert np.all(np.abs(per_tensor - np.asarray(sizes) / 4) < 1)
    assert not np.array_equal(cut1[0], cut2[0])
    # agent 0 got fragment 0 of agent 1 and fragments 0, 3 of agent 2
    specs = [FragmentSpec(1, 0, 0), FragmentSpec(2, 0, 0), FragmentSpec(2, 0, 3)]
    _, *mine = g.divshare_finish(0, 0, 4, specs, shipped1[0], shipped2[0], shipped2[3])
    trained = unpermute(g, opened(groups, mine), 0)
    total, count = trained.copy(), np.ones(p)
    for idx, vals in [(cut1[0], frags1[0]), (cut2[0], frags2[0]), (cut2[3], frags2[3])]:
        total[idx] += vals
        count[idx] += 1
    assert count.max() == 3 and (count == 1).any()
    assert np.allclose(model(groups, 0), total / count, atol=1e-6)


def unpermute(group, fragments, sender: int, step: int = 0) -> np.ndarray:
    """The flat model a sender's fragments (in its seeded permuted order) were cut from."""
    p = sum(f.size for f in fragments)
    out = np.empty(p)
    for idx, vals in zip(fragment_indices(group.tensor_sizes(), len(fragments), 0, sender, step), fragments, strict=True):
        out[idx] = vals
    return out


# ----------------------------------------------------------------------------- the loops


def test_adpsgd_active_agents_average_only_with_passive_neighbours_and_wait_for_the_exchange():
    active, partners = active_passive([[1, 3], [0, 2], [1, 3], [0, 2]])  # ring of 4
    assert active.tolist() == [True, False, True, False] and partners == [[1, 3], [], [1, 3], []]
    cfg = RunConfig(**(TINY | dict(algorithm="adpsgd", rounds=3, eval_every=3))).validate()
    _groups, ex, st = build(cfg)
    (rounds, _, _), loop = drive("adpsgd", ex, st, cfg, log=quiet)
    assert isinstance(loop, ADPSGD) and loop.pair_log
    assert all(i % 2 == 0 and j % 2 == 1 and j in st.nbrs[i] for _, i, j in loop.pair_log)
    tx = st.model_bytes / st.link_bw[0, 1] + st.link_lat[0, 1]
    t0 = [t for t, k, _ in loop.finish_log if k == 0]
    assert len(t0) >= 2 and np.isclose(t0[1] - t0[0], st.step_seconds(0, 0) + 2 * tx)  # r stays 0 for drift 0
    t1 = [t for t, k, _ in loop.finish_log if k == 1]  # passive: back to back, never waits
    assert np.allclose(np.diff(t1), st.step_seconds(1, 0))
    assert len(rounds) == 3 and rounds["steps"].tolist() == [4, 4, 4]


def test_swift_fast_agent_never_waits_for_a_100x_slower_neighbour():
    cfg = RunConfig(**(TINY | dict(algorithm="swift", rounds=2, eval_every=2))).validate()
    _groups, ex, st = build(cfg, slowdown=[1.0, 100.0, 1.0, 1.0])
    (rounds, _, _), loop = drive("swift", ex, st, cfg, log=quiet)
    fast = [t for t, k, _ in loop.finish_log if k == 0]
    assert len(fast) >= 2
    assert np.allclose(fast, st.step_seconds(0, 0) * np.arange(1, len(fast) + 1))
    assert all(k != 1 for _, k, _ in loop.finish_log)  # the slow agent never finished, nobody waited for it
    assert rounds["virtual_time_s"].iloc[-1] < st.step_seconds(1, 0)


@pytest.mark.parametrize("algorithm", ["adpsgd", "swift", "divshare"])
def test_async_run_is_reproducible_and_processes_events_in_time_order(algorithm):
    cfg = RunConfig(**(TINY | dict(algorithm=algorithm, fragments=3, fanout=2, eval_every=2))).validate()
    runs = []
    for _ in range(2):
        _, ex, st = build(cfg)
        (rounds, agents, _), loop = drive(algorithm, ex, st, cfg, log=quiet)
        assert np.all(np.diff(loop.event_times) >= 0)
        runs.append((rounds, agents))
    (r1, a1), (r2, a2) = runs
    for col in ("test_accuracy", "virtual_time_s", "train_loss", "bytes_sent", "steps"):
        assert r1[col].fillna(-1).tolist() == r2[col].fillna(-1).tolist()
    assert a1["virtual_finish_s"].tolist() == a2["virtual_finish_s"].tolist()
    assert len(r1) == cfg.rounds and r1["steps"].sum() == cfg.rounds * cfg.agents
    assert r1["bytes_sent"].sum() > 0 and r1["test_accuracy"].notna().tolist() == [False, True]


def test_time_budget_stops_at_the_row_that_reaches_it():
    cfg = RunConfig(**(TINY | dict(algorithm="swift", rounds=10, eval_every=10))).validate()
    _, ex, st = build(cfg)
    budget = 4 * st.step_seconds(0, 0)  # the fastest agent's 4 steps: more than one row, far from 10
    (rounds, _, _), _ = drive("swift", ex, st, cfg.replace(time_budget_s=budget), log=quiet)
    assert 1 < len(rounds) < 10
    assert rounds["virtual_time_s"].iloc[-1] >= budget > rounds["virtual_time_s"].iloc[-2]
    assert rounds["test_accuracy"].notna().iloc[-1]


def test_dpsgd_is_local_training_then_one_gossip_step_with_a_barrier():
    cfg = RunConfig(**(TINY | dict(algorithm="dpsgd", rounds=1))).validate()
    groups, ex, st = build(cfg)
    twin, _, _ = build(cfg)
    (rounds, _, _), _ = drive("dpsgd", ex, st, cfg, log=quiet)
    for g in twin:
        g.train_phase(0, [])
    trained = np.stack([model(twin, k) for k in range(4)])
    mixed = metropolis_hastings(st.nbrs) @ trained
    for k in range(4):
        assert np.allclose(model(groups, k), mixed[k], atol=1e-5)
    exch = exchange_seconds("gossip", st.nbrs, st.agent_bw, st.agent_lat, st.model_bytes)
    assert np.isclose(rounds["virtual_time_s"].iloc[0], np.max(st.batches * st.sec_per_batch(0) + exch))


# ----------------------------------------------------------------------------- through Ray


def test_ray_runs_equal_the_in_process_runs(ray_local, tmp_path):
    """Every loop through Ray's actors gives exactly what plain groups give: the event order is kept.

    One Run serves all four algorithms in turn (actors start once); the in-process
    groups run the same sequence, so their models evolve the same way.
    """
    from comdml_ray.baselines import run_event_driven
    from comdml_ray.runtime.run import Run

    base = RunConfig(**(TINY | dict(fragments=2, fanout=2, agents_per_actor=2, eval_every=2))).validate()
    run = Run(base, log=quiet)
    try:
        assert run.layout.groups == LAYOUT
        _, ex, st = build(base)
        for algorithm in ("dpsgd", "adpsgd", "swift", "divshare"):
            cfg = base.replace(algorithm=algorithm)
            ray_rows, ray_agents, plans = run_event_driven(run, cfg, log=quiet)
            (local_rows, _, _), _ = drive(algorithm, ex, st, cfg, log=quiet)
            assert plans.empty and len(ray_rows) == cfg.rounds and len(ray_agents) == cfg.rounds * cfg.agents
            assert np.allclose(ray_rows["virtual_time_s"], local_rows["virtual_time_s"])
            assert np.allclose(ray_rows["test_accuracy"], local_rows["test_accuracy"], equal_nan=True)
            assert np.allclose(ray_rows["train_loss"], local_rows["train_loss"], rtol=1e-5)
    finally:
        run.shutdown()


def test_run_experiment_routes_an_async_algorithm_to_the_event_clock(ray_local, tmp_path):
    from comdml_ray.experiment import run_experiment

    cfg = RunConfig(**(TINY | dict(algorithm="divshare", rounds=1))).validate()
    summary = run_experiment(cfg.replace(out=str(tmp_path)), log=quiet, keep_ray=True)
    rows = pd.read_csv(tmp_path / "rounds.csv")
    assert summary["algorithm"] == "divshare" and len(rows) == 1 and rows["test_accuracy"].notna().all()
    assert summary["virtual_time_s"] == rows["virtual_time_s"].iloc[-1] > 0
    # DivShare's agents never hold one model: the accuracy is the mean over the evaluated agents.
    assert summary["evaluated"] == f"mean over {min(cfg.eval_agents, cfg.agents)} agents' models"
    assert rows["consensus_accuracy"].isna().all()  # no agent holds a consensus model
