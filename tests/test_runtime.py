"""The Ray runtime end to end on a small problem (one local Ray for the whole module).

Covers: a run writes its files; same seed gives the same accuracy, loss and virtual
time; ComDML with equal speeds forms no pairs and equals local; ComDML with the paper
profile pairs agents and finishes rounds sooner; the collective all-reduce between
actors is the exact weighted mean and equals the in-process one; no payload passes
through the driver; the driver's calls per round grow with actors, not agents; a dead
actor ends the run with a message naming its agents; bad flags and a too-small
cluster end in one sentence with exit code 2.
"""

import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import ray

from benchmarks.run import main
from comdml_ray.baselines import drive
from comdml_ray.config import RunConfig
from comdml_ray.experiment import run_experiment
from comdml_ray.runtime.run import AgentFailure, Run
from tests.conftest import local_backend, quiet
from tests.test_agent import ring_reference

SMALL = dict(agents=6, rounds=2, train_samples=3000, lr=0.05, progress=False, num_gpus=0)


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local):
    yield


def run(tmp_path, name, **kw) -> tuple[dict, pd.DataFrame]:
    cfg = RunConfig(**(SMALL | kw), out=str(tmp_path / name))
    summary = run_experiment(cfg, log=quiet, keep_ray=True)
    return summary, pd.read_csv(tmp_path / name / "rounds.csv")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The default 2-round local run, made once: its folder, summary and rounds.csv."""
    out = tmp_path_factory.mktemp("local")
    return (out, *run(out, "a"))


def test_local_run_writes_results_and_is_reproducible(local_run, tmp_path):
    a, s1, r1 = local_run
    _s2, r2 = run(tmp_path, "b")
    for f in ("rounds.csv", "agents.csv", "summary.json", "accuracy.png", "profile.csv"):
        assert os.path.getsize(a / "a" / f) > 0
    assert list(r1.columns[:7]) == [
        "round",
        "virtual_time_s",
        "wall_time_s",
        "train_loss",
        "test_accuracy",
        "consensus_accuracy",
        "bytes_sent",
    ]
    assert r1["consensus_accuracy"].tolist() == r1["test_accuracy"].tolist()  # exact all-reduce: one model
    for col in ("test_accuracy", "train_loss", "virtual_time_s", "bytes_sent"):
        assert r1[col].tolist() == r2[col].tolist()
    assert s1["final_accuracy"] > 0.3
    saved = json.loads((a / "a" / "summary.json").read_text())
    assert saved["agents"] == 6 and saved["evaluated"] == "mean over 6 agents' models (all one averaged model)"


def test_comdml_with_equal_speeds_equals_local(tmp_path):
    _, local = run(tmp_path, "local", heterogeneity="uniform")
    _, comdml = run(tmp_path, "comdml", heterogeneity="uniform", algorithm="comdml")
    assert (comdml["pairs"] == 0).all()
    for col in ("test_accuracy", "train_loss", "virtual_time_s"):
        assert comdml[col].tolist() == local[col].tolist()


def test_comdml_pairs_and_shortens_rounds(local_run, tmp_path):
    local = local_run[2]  # round 0 of the shared 2-round local run
    _, comdml = run(tmp_path, "comdml", rounds=1, algorithm="comdml")
    assert comdml["pairs"].iloc[0] > 0 and comdml["bytes_offloaded"].iloc[0] > 0
    assert comdml["round_virtual_s"].iloc[0] < 0.8 * local["round_virtual_s"].iloc[0]
    plan = pd.read_csv(tmp_path / "comdml" / "plan.csv")
    paired = plan[plan.partner >= 0]
    assert len(paired) == comdml["pairs"].iloc[0]
    # the clock follows what was done: simulated finish within 1% of the plan's prediction
    assert np.allclose(paired.simulated_finish_s, paired.predicted_finish_s, rtol=0.01)


def test_collective_allreduce_between_actors_is_the_weighted_mean():
    cfg = RunConfig(**(SMALL | dict(agents=5, partition="dirichlet", alpha=0.3, agents_per_actor=2, cpus_per_agent=0.5))).validate()
    r = Run(cfg, log=quiet)
    be = r.backend
    try:
        assert be.num_groups == 3
        be.fetch([be.train_phase(g, 0, [])[0] for g in range(3)])  # the models differ after local training
        before = np.stack(be.fetch([be.flat_model(r.owner[k], k) for k in range(5)])).astype(np.float64)
        assert not np.allclose(before[0], before[1])
        sizes = r.setting.num_samples
        assert len(set(sizes.tolist())) > 1
        expected = (sizes / sizes.sum()) @ before
        be.fetch(r.aggregate())  # one collective call per actor
        after = np.stack(be.fetch([be.flat_model(r.owner[k], k) for k in range(5)]))
        assert np.abs(after - expected).max() < 1e-6
        # the same step in process (LocalBackend), and the agent ring itself, give the same models bit for bit
        lb, _ = local_backend(cfg, r.layout.groups)
        lb.fetch([lb.train_phase(g, 0, [])[0] for g in range(3)])
        lb.average(model=True, aux=False)
        assert np.array_equal(np.stack([lb.flat_model(r.owner[k], k) for k in range(5)]), after)
        assert np.array_equal(after[0], ring_reference(before.astype(np.float32), r.setting.shares))
        # that was one allgather (small models); the ring of point-to-point hops (large ones) gives the same bits
        assert be.allreduce_how == "auto"
        be.allreduce_how = "ring"
        be.fetch([be.train_phase(g, 1, [])[0] for g in range(3)])
        be.fetch(r.aggregate())
        lb.fetch([lb.train_phase(g, 1, [])[0] for g in range(3)])
        lb.average(model=True, aux=False)
        assert np.array_equal(
            np.stack(be.fetch([be.flat_model(r.owner[k], k) for k in range(5)])), np.stack([lb.flat_model(r.owner[k], k) for k in range(5)])
        )
    finally:
        r.shutdown()


class Spy:
    """Wraps a backend: every handle returned to the driver, to check how large its value is."""

    def __init__(self, be):
        self.be, self.handles = be, []

    def __getattr__(self, name):
        attr = getattr(self.be, name)
        if not callable(attr) or name in ("fetch",):
            return attr

        def call(*args, **kw):
            out = attr(*args, **kw)
            self.handles += out if isinstance(out, list) else [out]
            return out

        return call


@pytest.mark.parametrize("algorithm", ["swift", "divshare", "adpsgd"])
def test_no_payload_passes_through_the_driver(algorithm):
    """Every value an actor returns to the driver is a few KB at most: models and fragments stay in the store."""
    cfg = RunConfig(**(SMALL | dict(agents=4, rounds=2, algorithm=algorithm, fragments=2, eval_agents=1, step_batches=0))).validate()
    r = Run(cfg, log=quiet)
    try:
        spy = Spy(r.backend)
        drive(algorithm, spy, r.setting, cfg, log=quiet)
        values = ray.get([h for h in spy.handles if isinstance(h, ray.ObjectRef)])
        sizes = [len(pickle.dumps(v, protocol=5)) for v in values]
        assert len(sizes) > 10 and max(sizes) < 4096 < r.setting.model_bytes
    finally:
        r.shutdown()


def test_driver_calls_per_round_grow_with_actors_not_agents(tmp_path):
    counts = {}
    for agents in (4, 12):
        s, rounds = run(tmp_path, f"a{agents}", agents=agents, agents_per_actor=agents // 2, algorithm="comdml", rounds=1)
        counts[agents] = int(rounds["driver_calls"].iloc[0])
        assert s["actors"] == 2
    assert counts[4] == counts[12]


def test_dead_actor_names_its_agents():
    cfg = RunConfig(**(SMALL | dict(agents_per_actor=3))).validate()
    r = Run(cfg, log=quiet)
    try:
        ray.kill(r.hosts[1])
        with pytest.raises(AgentFailure, match="agents 3-5"):
            r.run_round(0)
    finally:
        r.shutdown()


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--agents", "0"], "--agents"),
        (["--agents", "-5"], "--agents"),
        (["--agents", "70000"], "training samples"),
        (["--model", "vgg"], "--model"),
        (["--dataset", "imagenet"], "--dataset"),
        (["--topology", "star"], "--topology"),
        (["--partition", "dirichlet", "--alpha", "0"], "--alpha"),
        (["--gpus-per-agent", "2"], "--gpus-per-agent"),
        (["--gpus-per-agent", "0.5"], "GPUs"),  # the module's cluster has none
        (["--agents", "8", "--agents-per-actor", "1"], "CPUs"),
        (["--heterogeneity", "missing.csv"], "CSV"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "--download"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(argv, fragment, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err and "Traceback" not in err


def test_bad_profile_csv_rows(tmp_path, capsys, monkeypatch):
    csv = tmp_path / "h.csv"
    csv.write_text("agent,slowdown,bandwidth_mbps\n0,1,100\n1,-2,100\n")
    monkeypatch.chdir(tmp_path)
    assert main(["--heterogeneity", str(csv), "--agents", "4", "--no-progress"]) == 2
    assert "positive slowdown" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()  # refused before the default --out folder is made (or Ray started)
