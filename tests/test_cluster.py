"""Multi-node and GPU-scheduling behaviour on a simulated cluster (ray.cluster_utils.Cluster, no cloud).

A head node and two workers in this machine: agents spread over the nodes, so that the
collective all-reduce, ComDML's activations and suffixes and an async baseline's models
cross nodes, must give the same accuracy and virtual time as the same run packed on
one node; fractional GPUs scheduled against logical GPUs place four
agent actors on one GPU; the dashboard metrics exist with the expected names and tags;
an actor bigger than every node, and an --address nobody answers, are one sentence at
once.  What these nodes cannot show (own disks, own addresses): tests/test_bed.py.
"""

import time

import pandas as pd
import pytest
import ray
from ray.cluster_utils import Cluster

from comdml_ray.config import ConfigError, RunConfig
from comdml_ray.experiment import run_experiment
from comdml_ray.runtime.actors import METRIC_NAMES, AgentMetrics
from comdml_ray.runtime.cluster import check_reachable
from comdml_ray.runtime.run import Run


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "num_gpus": 1})
    for _ in range(2):
        c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def quiet(*_a, **_k):
    pass


BASE = dict(agents=6, rounds=2, train_samples=1200, lr=0.05, algorithm="comdml", agents_per_actor=2, progress=False)


@pytest.mark.parametrize("algorithm", ["comdml", "swift"])
def test_spread_over_nodes_equals_one_node(cluster, tmp_path, algorithm):
    results = {}
    for placement in ("spread", "pack"):
        cfg = RunConfig(**(BASE | dict(algorithm=algorithm)), placement=placement, out=str(tmp_path / placement), address=cluster.address)
        summary = run_experiment(cfg, log=quiet, keep_ray=True)
        results[placement] = pd.read_csv(tmp_path / placement / "rounds.csv")
        assert summary["actors"] == 3
    spread, pack = results["spread"], results["pack"]
    if algorithm == "comdml":
        assert spread["pairs"].sum() > 0  # activations crossed between actors
    for col in ("test_accuracy", "train_loss", "virtual_time_s", "bytes_sent", "bytes_offloaded"):
        assert spread[col].tolist() == pack[col].tolist(), col


def test_spread_really_uses_three_nodes(cluster):
    r = Run(RunConfig(**BASE, placement="spread", address=cluster.address).validate(), log=quiet)
    try:
        assert len({p["node_id"] for p in r.placements}) == 3
    finally:
        r.shutdown()
    r = Run(RunConfig(**BASE, placement="pack", address=cluster.address).validate(), log=quiet)
    try:
        assert len({p["node_id"] for p in r.placements}) == 1
    finally:
        r.shutdown()


def test_fractional_gpus_on_logical_gpus(cluster):
    cfg = RunConfig(
        **(BASE | dict(agents=8, agents_per_actor="auto")), gpus_per_agent=0.25, cpus_per_agent=0.5, address=cluster.address
    ).validate()
    r = Run(cfg, log=quiet)
    try:
        assert len(r.hosts) == 4  # one logical GPU / 0.25 per actor
        assert all(p["gpu_ids"] for p in r.placements)  # Ray assigned each a share of a GPU
        assert len({tuple(p["gpu_ids"]) for p in r.placements}) == 1  # all four share the one GPU
        assert all(p["device"] == "cpu" for p in r.placements)  # no CUDA here: the code falls back to CPU
        r.run_round(0)
    finally:
        r.shutdown()


def test_metrics_names_and_tags(cluster):
    m = AgentMetrics()
    metrics = [m.round, m.virtual, m.wall, m.sent, m.offloaded, m.partner, m.split, m.loss, m.accuracy]
    assert sorted(x.info["name"] for x in metrics) == sorted(METRIC_NAMES)
    for x in metrics:
        expected = () if x is m.accuracy else ("agent",)
        assert tuple(x.info["tag_keys"]) == expected
    m.record(
        [
            {
                "round": 0,
                "agent": 3,
                "virtual_finish_s": 1.0,
                "wall_time_s": 2.0,
                "bytes_sent": 10,
                "bytes_offloaded": 5,
                "partner": 1,
                "split": 2,
                "train_loss": 0.5,
            }
        ]
    )
    m.record_accuracy(0.5)


def test_an_actor_no_node_can_hold_is_refused_at_once(cluster):
    """5 CPUs in all, but 3 on the largest node: a 4-CPU actor would wait for placement (120 s, then a refusal); now one sentence."""
    t0 = time.monotonic()
    cfg = RunConfig(**(BASE | dict(agents=1, agents_per_actor=1)), cpus_per_agent=4, address=cluster.address).validate()
    with pytest.raises(ConfigError, match=r"needs 4 CPUs on one node, but the largest of the cluster's 3 nodes has 3 CPUs"):
        Run(cfg, log=quiet)
    assert time.monotonic() - t0 < 30


def test_an_address_nobody_answers_is_one_sentence_within_seconds():
    """Ray's own ray.init(address=...) keeps retrying for over 120 s on a closed port."""
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"^no Ray cluster answers at --address 127.0.0.1:1 \(Connection refused for 3 s\)"):
        check_reachable("127.0.0.1:1", timeout_s=3)
    assert time.monotonic() - t0 < 10
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        check_reachable("6379")
