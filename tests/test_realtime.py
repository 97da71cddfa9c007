"""The wall clock (`--clock wall --emulate`) end to end: ComDML's gain exists in real time, not only on the virtual clock.

Four agents, two fast (slowdown 1) and two slow (slowdown 6), one per actor, compute
padded to the profile and links delayed by it (comdml_ray/timing/emulation.py).  A `local`
round lasts as long as a slow agent's epoch; in a ComDML round the slow agents
offload to the fast ones, whose helpers train the suffixes as the chunks arrive.
Behaviour tests with wide margins (ComDML's round under 0.75x local's, where the
clocks say ~0.35x), not timing benchmarks: benchmarks/realtime.py measures.
Also: no clock is compared across nodes (two actors' clocks set minutes apart change
nothing), and the wall-clock flags refuse what they cannot run, in one sentence.
"""

import numpy as np
import pandas as pd
import pytest
import ray

from benchmarks.run import main
from comdml_ray.config import RunConfig
from comdml_ray.experiment import run_experiment
from comdml_ray.runtime.rounds import wall_round
from comdml_ray.runtime.run import Run
from comdml_ray.storage import OutDir
from tests.conftest import quiet

WALL = {
    "agents": 4,
    "rounds": 2,
    "train_samples": 1000,
    "lr": 0.05,
    "progress": False,
    "num_gpus": 0,
    "clock": "wall",
    "emulate": True,
    "agents_per_actor": 1,
    "cpus_per_agent": 0.5,
    "reference_gflops": 4.0,
}


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local):
    yield


def _run(tmp_path, name: str, csv: str, **kw) -> tuple[dict, pd.DataFrame]:
    cfg = RunConfig(**(WALL | kw), heterogeneity=csv, out=str(tmp_path / name))
    summary = run_experiment(cfg, log=quiet, keep_ray=True)
    return summary, pd.read_csv(tmp_path / name / "rounds.csv")


def test_comdml_round_is_shorter_in_wall_time_than_local(tmp_path):
    csv = tmp_path / "two_slow.csv"
    csv.write_text("agent,slowdown,bandwidth_mbps\n0,1,100\n1,1,100\n2,6,50\n3,6,50\n")
    s_local, local = _run(tmp_path, "local", str(csv), algorithm="local")
    s_comdml, comdml = _run(tmp_path, "comdml", str(csv), algorithm="comdml")
    assert s_local["clock"] == s_comdml["clock"] == "wall"
    # emulation really slows the slow agents down: a local round lasts at least ~its virtual time
    assert local["round_wall_s"].iloc[-1] > 0.8 * local["round_virtual_s"].iloc[-1]
    assert (comdml["pairs"] == 2).all() and (comdml["bytes_offloaded"] > 0).all()
    # round 1, planned from round 0's observations (round 0 also pays for the measured warm-up)
    assert comdml["round_wall_s"].iloc[-1] < 0.75 * local["round_wall_s"].iloc[-1]
    plan = pd.read_csv(tmp_path / "comdml" / "plan.csv")
    assert plan["observed_finish_s"].notna().all()
    agents = pd.read_csv(tmp_path / "comdml" / "agents.csv")
    # online profiling: the slow agents measured themselves slower than the fast ones
    spb = agents[agents["round"] == agents["round"].max()].set_index("agent")["observed_sec_per_batch"]
    assert min(spb[2], spb[3]) > 3 * max(spb[0], spb[1])


OFFSET_RUN = {"agents": 3, "rounds": 2, "train_samples": 360, "reference_gflops": 0.5, "eval_every": 100}


def test_clocks_minutes_apart_change_no_round(tmp_path):
    """The offloader's clock 5 minutes ahead, the helpers' 5 minutes behind: the same rounds, durations alike; and the ring's mean is exact.

    One run of two rounds, then the same two rounds again from the same start (the agents
    rebuilt, seeded) with the actors' clocks offset.  Were an arrival or a round's end read
    against another node's clock, a message would wait 5 minutes (or not at all) and
    `whole_s` would be off by 300 s.  Slow emulated devices (0.5 GFLOPS): every batch is
    mostly padding, so the measured speeds, and the plans made from them, are the
    profile's whatever else runs on the machine.
    """
    csv = tmp_path / "one_slow.csv"
    csv.write_text("agent,slowdown,bandwidth_mbps\n0,1,100\n1,1,100\n2,6,100\n")
    cfg = RunConfig(**(WALL | OFFSET_RUN), algorithm="comdml", heterogeneity=str(csv)).validate()
    out = OutDir(str(tmp_path / "run")).check_writable()
    run = Run(cfg, log=quiet, out_dir=out)
    try:
        same = [run.run_round(r) for r in range(cfg.rounds)]
        p0 = pd.read_csv(tmp_path / "run" / "plan.csv")
        run.reset_agents()  # as before round 0, warm-up included
        ray.get(run.reducer.rewind.remote(None))
        ray.get([run.hosts[g].offset_clock.remote(s) for g, s in {2: 300.0, 0: -300.0, 1: -300.0}.items()])
        skew = [run.run_round(r) for r in range(cfg.rounds)]
        p1, a1 = pd.read_csv(tmp_path / "run" / "plan.csv"), pd.read_csv(tmp_path / "run" / "agents.csv")
        # the wall clock's all-reduce (a ring of 2(N-1) hops, as the clock charges it) is the exact weighted mean
        be = run.backend
        be.fetch(wall_round(be, cfg.rounds, comdml=True)[0])  # one more round's training: the models differ
        before = np.stack(be.fetch([be.flat_model(run.owner[k], k) for k in range(3)])).astype(np.float64)
        assert not np.allclose(before[0], before[2])
        be.fetch(run.aggregate())
        after = np.stack(be.fetch([be.flat_model(run.owner[k], k) for k in range(3)]))
        sizes = run.setting.num_samples
        assert np.abs(after - (sizes / sizes.sum()) @ before).max() < 1e-6
    finally:
        run.shutdown()
    for x, y in zip(same, skew, strict=True):  # the deterministic columns: the same plan, work and models
        assert x.pairs == y.pairs == 1
        assert (x.bytes_offloaded, x.bytes_sent, x.round_virtual_s) == (y.bytes_offloaded, y.bytes_sent, y.round_virtual_s)
        assert x.train_loss == y.train_loss
        # durations: wide margins (a loaded machine), far below the 300 s a cross-node comparison would add or remove
        assert 0.5 * x.round_virtual_s < y.round_wall_s < 3 * x.round_wall_s + 20
    assert same[-1].test_accuracy == skew[-1].test_accuracy
    cols = ["round", "agent", "partner", "split"]
    assert (p0[cols].values == p1[cols].values).all()
    wall = np.array([skew[r].round_wall_s for r in a1["round"]])
    assert ((a1["whole_s"] > 0) & (a1["whole_s"] <= wall + 1e-6)).all()
    spb = a1[a1["round"] == 1].set_index("agent")["observed_sec_per_batch"]
    assert spb[2] > 4 * max(spb[0], spb[1])  # online profiling measured the offset nodes' speeds


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--clock", "wall", "--agents", "4"], "--agents-per-actor 1"),
        (["--emulate", "--agents", "4"], "--emulate needs --clock wall"),
        (["--clock", "wall", "--agents", "4", "--agents-per-actor", "1", "--algorithm", "swift"], "local and comdml only"),
        (["--clock", "sundial", "--agents", "4"], "unknown --clock"),
        (["--clock", "wall", "--agents", "4", "--agents-per-actor", "1", "--emulate", "links"], "--emulate takes 'compute'"),
    ],
)
def test_wall_clock_flags_refuse_what_they_cannot_run(argv, fragment, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_the_bed_comparison_charges_each_link_what_the_clock_charges_each_agent():
    """benchmarks/realtime.py --bed: an offloader's bytes out are its helper's bytes in, and the suffix comes back to it."""
    from benchmarks.realtime_bed import charged_received, rate_of

    ring = 100.0
    agents = pd.DataFrame(
        {
            "agent": [0, 1, 2],
            "partner": [-1, 0, -1],  # agent 1 offloads to agent 0
            "split": [-1, 1, -1],
            "bytes_offloaded": [0, 5000, 0],
            # 1: ring + suffix 300 + activations 5000 + its aux ring 40; 0: ring + the suffix back 300
            "bytes_sent": [ring + 300, ring + 300 + 5000 + 40, ring],
        }
    )
    recv = charged_received(agents, ring, {1: 300})
    assert recv.to_dict() == {0: ring + 5300, 1: ring + 40 + 300, 2: ring}
    assert rate_of(100e6) == "800mbit" and rate_of(10e6) == "80mbit"  # the paper preset's 100 and 10 MB/s as tc rates
