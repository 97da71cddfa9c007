"""--step-batches: asynchronous baselines that communicate every k minibatches, on the event clock.

In-process AgentGroups (LocalBackend) on a tiny problem: what a step trains, what the clock
charges for it, and where the rows of an epochs-equivalent close.
"""

import numpy as np
import torch

from comdml_ray.baselines import drive
from comdml_ray.config import ASYNC_STEP_BATCHES, RunConfig
from comdml_ray.learning.training import batches_per_round
from tests.conftest import local_backend, quiet

torch.set_num_threads(1)

TINY = dict(agents=4, train_samples=600, rounds=2, lr=0.05, eval_agents=1, progress=False, num_gpus=0)
LAYOUT = [[0, 1], [2, 3]]


def test_defaults_follow_the_papers_and_zero_is_one_round_of_work():
    assert ASYNC_STEP_BATCHES["adpsgd"] == 1 and ASYNC_STEP_BATCHES["swift"] == 1
    for algorithm in ("adpsgd", "swift", "divshare"):
        assert RunConfig(algorithm=algorithm).async_step_batches(19) == ASYNC_STEP_BATCHES[algorithm]
        assert RunConfig(algorithm=algorithm, step_batches=0).async_step_batches(19) == 19
    assert RunConfig(algorithm="swift", step_batches=3).async_step_batches(19) == 3


def test_a_step_stream_sees_every_sample_once_per_epoch():
    cfg = RunConfig(**(TINY | dict(algorithm="swift", step_batches=2))).validate()
    be, _ = local_backend(cfg, LAYOUT)
    agent = be.groups[0].agents[0]
    per_epoch = batches_per_round(agent.num_samples, cfg.batch_size, 1)  # 5 batches of 150 samples: steps cross epochs
    drawn = [b for _ in range(per_epoch) for b in agent.next_batches(2)]  # two epochs' worth
    for epoch in (drawn[:per_epoch], drawn[per_epoch:]):
        assert sorted(i for b in epoch for i in b.tolist()) == list(range(agent.num_samples))
    assert drawn[0].tolist() != drawn[per_epoch].tolist()  # a new shuffle every epoch
    before = agent.model.state_dict()["conv1.weight"].clone() if "conv1.weight" in agent.model.state_dict() else None
    stats = agent.train_step(2)
    assert stats.batches == 2 and (before is None or not torch.equal(before, agent.model.state_dict()["conv1.weight"]))


def test_async_steps_of_k_batches_cost_k_batches_and_rows_close_per_epochs_equivalent():
    cfg = RunConfig(**(TINY | dict(algorithm="swift", step_batches=3, rounds=2, eval_every=2))).validate()
    be, st = local_backend(cfg, LAYOUT)
    assert st.step_batches.tolist() == [3] * 4
    (rounds, _agents, _), loop = drive("swift", be, st, cfg, log=quiet)
    fast = [t for t, k, _ in loop.finish_log if k == 0]
    sec = st.sec_per_batch(0)[0]
    assert np.allclose(np.diff(fast), 3 * sec)  # a step is 3 batches of agent 0's time
    # A row is an epochs-equivalent: the steps' batches add up to one round's work of every shard.
    b = st.batches
    per_row = rounds["steps"].tolist()
    assert len(rounds) == 2 and all(s * 3 >= b.sum() for s in per_row)
    assert sum(per_row) * 3 < 2 * b.sum() + 4 * 3  # the last row closes at the first step that completes it


def test_adpsgd_at_its_default_one_batch_step_learns():
    cfg = RunConfig(**(TINY | dict(algorithm="adpsgd", rounds=2, eval_every=2))).validate()
    be, st = local_backend(cfg, LAYOUT)
    assert st.step_batches.tolist() == [1] * 4
    (rounds, _, _), loop = drive("adpsgd", be, st, cfg, log=quiet)
    assert len(loop.pair_log) > 10 and np.isfinite(rounds["train_loss"]).all()
    assert rounds["train_loss"].iloc[-1] < rounds["train_loss"].iloc[0] and rounds["test_accuracy"].iloc[-1] > 0.15  # above chance (10%)
