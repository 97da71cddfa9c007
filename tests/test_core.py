"""Pure core layer (no Ray): topologies and mixing weights, the virtual clock, heterogeneity profiles, config."""

import numpy as np
import pytest

from comdml_ray.config import ConfigError, RunConfig
from comdml_ray.timing.clock import AgentWork, exchange_seconds, round_finish_times
from comdml_ray.timing.profiles import PAPER_BANDWIDTH_MBPS, PAPER_SLOWDOWN, drift_slowdowns, link_matrices, make_profiles
from comdml_ray.timing.topology import metropolis_hastings, neighbours


@pytest.mark.parametrize("name", ["ring", "torus", "regular", "complete"])
@pytest.mark.parametrize("n", [2, 5, 12, 36])
def test_mixing_matrix_doubly_stochastic(name, n):
    nbrs = neighbours(name, n, degree=1 if n == 2 else 2 if n < 5 else 4, seed=3)
    w = metropolis_hastings(nbrs)
    assert np.allclose(w.sum(0), 1) and np.allclose(w.sum(1), 1)
    assert np.allclose(w, w.T) and (w >= 0).all()
    for i, js in enumerate(nbrs):
        assert i not in js
        assert all(i in nbrs[j] for j in js)  # undirected
        assert set(np.flatnonzero(w[i])) - {i} == set(js)


def test_torus_degree_and_regular_degree():
    assert {len(x) for x in neighbours("torus", 36)} == {4}
    assert {len(x) for x in neighbours("regular", 20, degree=6, seed=1)} == {6}
    assert neighbours("ring", 5)[0] == [1, 4]


def test_clock_three_agents_by_hand():
    # agent 1 (4 s/batch) offloads split row 0 to agent 0 (1 s/batch); agent 2 trains alone.
    work = [
        AgentWork(0, own_batches=10, suffix_batches={1: 10}),
        AgentWork(1, prefix_batches=10, partner=0, split_row=0, bytes_offloaded=1_000_000),
        AgentWork(2, own_batches=10),
    ]
    bw = np.full((3, 3), 1e6)
    lat = np.full((3, 3), 0.01)
    finish = round_finish_times(
        work,
        np.array([1.0, 4.0, 2.0]),
        rho_s=np.array([0.25]),
        rho_f=np.array([0.75]),
        suffix_bytes=np.array([1000]),
        link_bw=bw,
        link_lat=lat,
        inbound_bw=np.full(3, 2e6),
        exchange_s=np.ones(3),
    )
    # helper: own 10*1 + suffix 10*0.75*1 = 17.5 (inbound 1e6/2e6 = 0.5 s overlaps);
    # offloader: max(slow 10*0.25*4 = 10, transfer 1e6/1e6 + 0.01, helper 17.5 + 1000/1e6 + 0.01) = 17.511
    # alone: 10 * 2 = 20; every agent + 1 s of model exchange.
    assert finish == pytest.approx([18.5, 18.511, 21.0])


def test_clock_shared_inbound_link_binds_helper():
    work = [
        AgentWork(0, own_batches=1, suffix_batches={1: 1, 2: 1}),
        AgentWork(1, prefix_batches=1, partner=0, split_row=0, bytes_offloaded=5_000_000),
        AgentWork(2, prefix_batches=1, partner=0, split_row=0, bytes_offloaded=5_000_000),
    ]
    finish = round_finish_times(
        work,
        np.ones(3),
        np.array([0.5]),
        np.array([0.5]),
        np.array([0]),
        np.full((3, 3), 1e7),
        np.zeros((3, 3)),
        np.full(3, 1e6),
        np.zeros(3),
    )
    assert finish[0] == pytest.approx(10.0)  # 10 MB over a 1 MB/s shared inbound link


def test_exchange_seconds():
    nbrs = neighbours("ring", 4)
    bw = np.full(4, 1e6)
    ar = exchange_seconds("allreduce", nbrs, bw, np.zeros(4), 4_000_000)
    assert ar == pytest.approx(np.full(4, 2 * 3 * 1.0))  # 6 steps of 1 MB at 1 MB/s
    g = exchange_seconds("gossip", nbrs, bw, np.zeros(4), 4_000_000)
    assert g == pytest.approx(np.full(4, 8.0))  # 2 neighbours x 4 MB
    # Each link at its slower end, both ends' latency: agent 0 (1 MB/s) next to 1 and 3.
    bw, lat = np.array([1e6, 4e6, 2e6, 0.5e6]), np.array([0.01, 0.02, 0.03, 0.04])
    g = exchange_seconds("gossip", nbrs, bw, lat, 4_000_000)
    assert g[0] == pytest.approx((4 / 1 + 0.03) + (4 / 0.5 + 0.05))
    assert g[1] == pytest.approx((4 / 1 + 0.03) + (4 / 2 + 0.05))
    assert g[2] == pytest.approx((4 / 2 + 0.05) + (4 / 0.5 + 0.07))


def test_paper_profiles_and_links():
    p = make_profiles("paper", 7)
    assert [x.slowdown for x in p] == [PAPER_SLOWDOWN[k % 5] for k in range(7)]
    assert p[4].bandwidth_Bps == PAPER_BANDWIDTH_MBPS[4] * 1e6
    bw, lat = link_matrices(p)
    assert bw[0, 4] == 10e6 and lat[0, 1] == pytest.approx(2e-3)
    slow_links = make_profiles("uniform", 10, seed=1, slow_link_share=0.3)
    assert sum(x.bandwidth_Bps < 100e6 for x in slow_links) == 3


def test_drift_is_seeded_and_bounded():
    base = np.array([1.0, 4.0, 16.0])
    a, b = drift_slowdowns(base, 5, 0.3, seed=2), drift_slowdowns(base, 5, 0.3, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, base)
    assert ((a >= base / 4) & (a <= base * 4)).all()
    assert np.array_equal(drift_slowdowns(base, 0, 0.3, seed=2), base)


def test_drift_changes_persist_and_prob_one_is_the_random_walk():
    base = np.ones(200)
    walk = [drift_slowdowns(base, r, 0.3, seed=1) for r in range(1, 4)]
    held = [drift_slowdowns(base, r, 0.3, seed=1, prob=0.2) for r in range(1, 12)]
    assert all((np.diff(np.log(np.array(walk)), axis=0) != 0).all(axis=1))  # a step for everyone, every round
    changed = np.diff(np.log(np.array(held)), axis=0) != 0
    assert 0.1 < changed.mean() < 0.3  # about a fifth of the agents change per round
    assert (changed.sum(axis=0) < changed.shape[0]).all()  # and then keep their speed


def test_profile_csv(tmp_path):
    good = tmp_path / "h.csv"
    good.write_text("agent,slowdown,bandwidth_mbps\n0,1,100\n1,8,10\n")
    p = make_profiles(str(good), 3)
    assert [x.slowdown for x in p] == [1, 8, 1]
    for body in ("agent,slowdown,bandwidth_mbps\n0,0,100\n", "agent,slowdown,bandwidth_mbps\n0,,100\n", "agent,speed\n0,1\n"):
        bad = tmp_path / "bad.csv"
        bad.write_text(body)
        with pytest.raises(ConfigError):
            make_profiles(str(bad), 2)


@pytest.mark.parametrize(
    "change",
    [
        {"agents": 0},
        {"agents": -3},
        {"agents": 60_001},
        {"model": "vgg"},
        {"dataset": "mnist"},
        {"topology": "star"},
        {"partition": "dirichlet", "alpha": 0.0},
        {"alpha": -1.0},
        {"gpus_per_agent": 1.5},
        {"heterogeneity": "/no/such.csv"},
        {"algorithm": "fedavg"},
        {"agents_per_actor": "two"},
        {"target_acc": 80},
    ],
)
def test_config_rejects_bad_input(change):
    with pytest.raises(ConfigError) as e:
        RunConfig(**change).validate()
    msg = str(e.value)
    assert msg.endswith(".") and "\n" not in msg


def test_layout_packs_only_when_the_cluster_is_short():
    from comdml_ray.runtime.run import plan_layout

    big = {"CPU": 128, "memory": 512 * 2**30}
    lay = plan_layout(RunConfig(agents=100).validate(), big)
    assert len(lay.groups) == 100 and lay.reason == "one agent per actor"
    small = {"CPU": 2, "memory": 17 * 2**30}
    lay = plan_layout(RunConfig(agents=100).validate(), small)
    assert [len(g) for g in lay.groups] == [50, 50]
    # memory, not CPUs, limits: 64 CPUs but 8 GB -> fewer, fuller actors
    lay = plan_layout(RunConfig(agents=100, cpus_per_agent=0.5).validate(), {"CPU": 64, "memory": 8 * 2**30})
    assert 1 < len(lay.groups) < 100
    assert sorted(k for g in lay.groups for k in g) == list(range(100))
    lay = plan_layout(RunConfig(agents=8, gpus_per_agent=0.25).validate(), {"CPU": 16, "GPU": 1, "memory": 64 * 2**30})
    assert len(lay.groups) == 4
    # fractions that are inexact in binary still fill the cluster: 10 x 0.2 CPUs on 2, 10 x 0.1 GPUs on 1
    lay = plan_layout(RunConfig(agents=100, agents_per_actor=10, cpus_per_agent=0.2).validate(), {"CPU": 2, "memory": 17 * 2**30})
    assert len(lay.groups) == 10
    lay = plan_layout(RunConfig(agents=10, cpus_per_agent=0.1, gpus_per_agent=0.1).validate(), {"CPU": 2, "GPU": 1, "memory": 64 * 2**30})
    assert len(lay.groups) == 10


def test_memory_model_knows_every_models_size():
    """layout.MODEL_FLOATS (the memory estimate's model sizes, kept torch-free) are the built models' floating state."""
    from comdml_ray.learning.models import build_model
    from comdml_ray.learning.training import flatten
    from comdml_ray.runtime.layout import DATASET_CLASSES, MODEL_FLOATS

    sizes = {"fashion-mnist": 28, "cifar10": 32, "cifar100": 32, "cinic10": 32}
    for (model, channels, classes), floats in MODEL_FLOATS.items():
        assert flatten(build_model(model, channels, sizes["cifar10" if channels == 3 else "fashion-mnist"], classes)).size == floats
    assert {(m, *DATASET_CLASSES[d]) for m in ("cnn", "resnet56", "resnet110") for d in sizes} <= set(MODEL_FLOATS)


def test_ten_thousand_agents_fit_where_their_compact_state_does():
    from comdml_ray.runtime.run import plan_layout

    box = {"CPU": 2, "memory": 16 * 2**30}  # a 24 GB machine's Ray memory resource
    for algorithm in ("local", "comdml"):
        lay = plan_layout(RunConfig(agents=10_000, algorithm=algorithm).validate(), box)
        assert [len(g) for g in lay.groups] == [5000, 5000]


def test_layout_refuses_what_memory_cannot_hold():
    from comdml_ray.runtime.run import plan_layout

    with pytest.raises(ConfigError, match=r"at most \d+ agents fit"):
        plan_layout(RunConfig(agents=1000, model="resnet110", dataset="cifar10").validate(), {"CPU": 2, "memory": 4 * 2**30})
    with pytest.raises(ConfigError, match="GPUs"):
        plan_layout(RunConfig(agents=4, gpus_per_agent=0.5).validate(), {"CPU": 4, "memory": 8 * 2**30})
