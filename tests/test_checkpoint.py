"""Checkpoints and durable files without Ray: a group's state round-trips exactly, through a file:// URI.

Covers: `storage.RowFile` grows by flushed rows and cuts back to the rows before a
round (local path and file:// URI); an agent group saved after round 0 and loaded
into fresh groups trains round 1 bit for bit as the original does (local and
ComDML: models, momentum, generators, aux heads, prefix optimizers, speed
estimates); under all-reduce the model is stored once; AD-PSGD's mid-step start
values survive; the layout may change between save and load.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from comdml_ray.config import RunConfig
from comdml_ray.learning.training import flatten
from comdml_ray.method.checkpoint import SHARED_MODEL_FILE, group_file
from comdml_ray.storage import OutDir, RowFile
from tests.conftest import local_backend

LAYOUT = [[0, 1, 2], [3, 4, 5]]


def local_round(be, r: int, comdml: bool) -> None:
    """One synchronous round in process, in the order `run.Run.run_round` calls the steps."""
    n = be.num_groups
    if comdml:
        states = be.concat_states([be.publish_states(g, r) for g in range(n)])
        out = [list(be.plan_round(g, r, states)[0].out) for g in range(n)]
        back = [[s for s in range(n) if h in out[s]] for h in range(n)]
        trained = [be.train_phase(g, r, out[g]) for g in range(n)]
        helped = [be.helper_phase(h, r, back[h], [trained[s][1 + out[s].index(h)] for s in back[h]]) for h in range(n)]
        for g in range(n):
            be.finish_phase(g, r, [helped[h][1 + back[h].index(g)] for h in out[g]])
    else:
        for g in range(n):
            be.train_phase(g, r, [])
    be.average(model=True, aux=comdml)


def everything(be) -> dict:
    """Every agent's model, momentum, generator state, aux heads and speed estimate, as arrays."""
    out = {}
    for grp in be.groups:
        for k, a in grp.agents.items():
            out[(k, "model")] = flatten(a.model)
            out[(k, "gen")] = a.gen.get_state().numpy()
            out[(k, "est")] = np.array([np.nan if a.sec_estimate is None else a.sec_estimate])
            for i, st in enumerate(a.full_optim.state.values()):
                out[(k, f"mom{i}")] = st["momentum_buffer"].numpy().copy()
            for m, head in a.aux.items():
                out[(k, f"aux{m}")] = flatten(head)
    return out


def assert_same(x: dict, y: dict) -> None:
    assert x.keys() == y.keys()
    for key, value in x.items():
        assert np.array_equal(value, y[key], equal_nan=True), key


def test_rowfile_appends_flushed_rows_and_cuts_back(tmp_path):
    for uri in (str(tmp_path / "plain"), f"file://{tmp_path}/uri"):
        out = OutDir(uri).check_writable()
        f = RowFile(out, "rounds.csv", ["round", "loss", "acc"]).start()
        f.append([{"round": 0, "loss": 0.1, "acc": float("nan")}, {"round": 1, "loss": 1 / 3}])
        # flushed: readable while the file is still open
        df = pd.read_csv(out.fs.open_input_stream(out.path("rounds.csv")))
        assert df["round"].tolist() == [0, 1] and df["loss"].iloc[1] == 1 / 3 and df["acc"].isna().all()
        f.append([{"round": 2, "loss": 0.5}])
        f.close()
        again = RowFile(out, "rounds.csv", ["round", "loss", "acc"]).start(keep_before=2)
        again.append([{"round": 2, "loss": 0.25}])
        again.close()
        df = pd.read_csv(out.fs.open_input_stream(out.path("rounds.csv")))
        assert df["round"].tolist() == [0, 1, 2] and df["loss"].tolist() == [0.1, 1 / 3, 0.25]


def test_rowfile_on_an_object_store_uploads_each_flush_once():
    """On an object store (pyarrow's in-memory mock:// filesystem) a flush is one more part, read back as one table."""
    from comdml_ray.results.report import read_csv

    out = OutDir("mock:///bucket/run").check_writable()
    f = RowFile(out, "agents.csv", ["round", "agent", "loss"]).start()
    assert read_csv(out, "agents.csv").columns.tolist() == ["round", "agent", "loss"]  # the header from the start
    for r in range(3):
        f.append([{"round": r, "agent": k, "loss": r + k / 10} for k in range(4)])
    parts = out.listdir("agents.csv.parts")
    assert len(parts) == 4 and not out.exists("agents.csv")  # the header part, then one part per flush, none rewritten
    sizes = [len(out.read_bytes(f"agents.csv.parts/{p}")) for p in parts[1:]]
    assert max(sizes) - min(sizes) <= 4  # each flush uploads its own rows only
    df = read_csv(out, "agents.csv")
    assert df["round"].tolist() == [r for r in range(3) for _ in range(4)] and df["loss"].iloc[-1] == 2.3
    again = RowFile(out, "agents.csv", ["round", "agent", "loss"]).start(keep_before=2)  # resume at round 2
    again.append([{"round": 2, "agent": 0, "loss": 9.0}])
    df = read_csv(out, "agents.csv")
    assert df["round"].tolist() == [0] * 4 + [1] * 4 + [2] and df["loss"].iloc[-1] == 9.0
    again.delete()
    assert read_csv(out, "agents.csv").empty


def test_unwritable_out_is_one_sentence():
    from comdml_ray.config import ConfigError

    with pytest.raises(ConfigError, match="choose a folder you can write to"):
        OutDir("/proc/forbidden/x").check_writable()


@pytest.mark.parametrize("algorithm", ["local", "comdml"])
def test_saved_group_trains_on_bit_for_bit(tmp_path, algorithm):
    cfg = RunConfig(agents=6, algorithm=algorithm, train_samples=900, lr=0.05).validate()
    comdml = algorithm == "comdml"
    be, _ = local_backend(cfg, LAYOUT)
    local_round(be, 0, comdml)
    folder = OutDir(f"file://{tmp_path}/ckpt")
    folder.makedirs()
    parts = [be.save_state(g, folder, True) for g in range(2)]
    assert [p.file for p in parts] == [group_file(0), group_file(1)]
    assert folder.exists(SHARED_MODEL_FILE)
    if comdml:
        assert any(a.aux for grp in be.groups for a in grp.agents.values())  # aux heads and prefix optimizers exist
    local_round(be, 1, comdml)
    expected = everything(be)

    fresh, _ = local_backend(cfg, LAYOUT)
    for g in range(2):
        fresh.load_state(g, folder, [group_file(g)], True)
    loaded = everything(fresh)
    local_round(fresh, 1, comdml)
    assert_same(everything(fresh), expected)

    # another layout reads the same files (each group picks its agents out of them)
    other, _ = local_backend(cfg, [[0, 1, 2, 3, 4, 5]])
    other.load_state(0, folder, [group_file(0), group_file(1)], True)
    assert_same(everything(other), loaded)


def test_model_stored_once_under_allreduce(tmp_path):
    cfg = RunConfig(agents=6, train_samples=900).validate()
    be, _ = local_backend(cfg, LAYOUT)
    local_round(be, 0, False)
    shared, own = OutDir(str(tmp_path / "shared")), OutDir(str(tmp_path / "own"))
    for d in (shared, own):
        d.makedirs()
    one = sum(be.save_state(g, shared, True).nbytes for g in range(2))
    every = sum(be.save_state(g, own, False).nbytes for g in range(2))
    model = flatten(be.groups[0].agents[0].model).nbytes
    assert every - one > 4 * model  # six copies of the model against one
    assert not own.exists(SHARED_MODEL_FILE)


def test_mid_step_start_values_survive(tmp_path):
    cfg = RunConfig(agents=4, algorithm="adpsgd", train_samples=600).validate()
    be, _ = local_backend(cfg, [[0, 1], [2, 3]])
    grp = be.groups[0]
    other = be.async_snapshot(1, 2)
    be.adpsgd_average(0, 1, True, other)  # agent 1 is mid-step: its start value is kept
    folder = OutDir(str(tmp_path / "c"))
    folder.makedirs()
    be.save_state(0, folder, False)
    fresh, _ = local_backend(cfg, [[0, 1], [2, 3]])
    fresh.load_state(0, folder, [group_file(0)], False)
    assert np.array_equal(fresh.groups[0]._async_starts[1], grp._async_starts[1])
    assert np.array_equal(flatten(fresh.groups[0].agents[1].model), flatten(grp.agents[1].model))
    be.adpsgd_finish(0, 1)
    fresh.adpsgd_finish(0, 1)
    assert np.array_equal(flatten(fresh.groups[0].agents[1].model), flatten(grp.agents[1].model))
    assert torch.equal(fresh.groups[0].agents[1].gen.get_state(), grp.agents[1].gen.get_state())
