"""The agents' logic without Ray (LocalStore): plan agreement, split training, ring all-reduce, gossip."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from comdml_ray.agent import AgentGroup, LocalStore, drive_ring
from comdml_ray.config import RunConfig
from comdml_ray.models import build_model
from comdml_ray.topology import metropolis_hastings
from comdml_ray.training import OptimConfig, SuffixTrainer, flatten

torch.set_num_threads(1)


def groups_of(cfg: RunConfig, layout: list[list[int]]) -> tuple[list[AgentGroup], LocalStore]:
    store = LocalStore()
    groups = [AgentGroup(g, ids, cfg, store) for g, ids in enumerate(layout)]
    prof = groups[0].profile_splits()
    for g in groups:
        g.set_split_profile(prof)
    return groups, store


def test_groups_agree_on_the_plan():
    cfg = RunConfig(agents=10, algorithm="comdml", train_samples=600).validate()
    groups, store = groups_of(cfg, [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9]])
    states = [g.publish_states(0) for g in groups]
    exch = np.zeros(10)
    digests = [g.plan_round(0, exch, *states) for g in groups]
    assert digests[0].digest == digests[1].digest
    plan = digests[0].plan
    assert (plan.partner >= 0).sum() > 0  # the paper profile has stragglers worth offloading
    # the same states in another order give the same plan
    assert groups[1].plan_round(0, exch, *reversed(states)).digest == digests[0].digest


def one_offload_round():
    """Agent 1 offloads split 2 to agent 0; agent 2 trains alone (200 agents, 3 hosted, 300 samples each)."""
    cfg = RunConfig(agents=200, algorithm="comdml", chunk_batches=3).validate()
    (g,), store = groups_of(cfg, [[0, 1, 2]])
    row = g.split_profile.split_ids.index(2)
    g.plan = SimpleNamespace(partner=np.array([-1, 0, -1] + [-1] * 197), split=np.array([-1, row, -1] + [-1] * 197))
    holders = []
    blank = g.agents[0].blank_model

    def spy():
        holders.append(blank())
        return holders[-1]

    g.agents[0].blank_model = spy
    return g, store, holders


def test_offload_round_prefix_isolated_and_model_reassembled():
    g, store, holders = one_offload_round()
    slow = g.agents[1]
    m = 2
    a = g.train_phase(0)
    (out,) = a.offloads
    assert out.offloader == 1 and out.helper == 0 and out.split == m
    chunk = store.get(out.chunk_refs[0])
    assert isinstance(chunk[0].codes, np.ndarray) and len(chunk) == 3  # detached numpy, chunk_batches per chunk
    assert sum(len(store.get(r)) for r in out.chunk_refs) == a.work[1].prefix_batches == 10
    prefix_after_own_training = flatten(slow.model, slow.model.prefix_keys(m))
    suffix_before = flatten(slow.model, slow.model.suffix_keys(m))

    b = g.helper_phase(0, a)
    # the helper's training never touched the offloader's model: no gradient flows back
    assert np.array_equal(flatten(slow.model, slow.model.prefix_keys(m)), prefix_after_own_training)
    assert np.array_equal(flatten(slow.model, slow.model.suffix_keys(m)), suffix_before)
    assert b.work[0].suffix_batches == {1: 10}

    c = g.finish_phase(0, b)
    g.aux_mix(c)
    trained_suffix = store.get(b.returns[1])
    assert not np.array_equal(trained_suffix, suffix_before)
    assert np.array_equal(flatten(slow.model, slow.model.suffix_keys(m)), trained_suffix)
    assert np.array_equal(flatten(slow.model, slow.model.prefix_keys(m)), prefix_after_own_training)
    # the assembled model evaluates exactly like the offloader's prefix followed by the helper's suffix
    x = slow.x[:64]
    slow.model.eval()
    holder = holders[0].eval()
    with torch.no_grad():
        assert torch.allclose(slow.model(x), holder.suffix(m)(slow.model.prefix(m)(x)), atol=1e-6)


def test_suffix_optimizer_state_persists_across_batches():
    torch.manual_seed(0)
    model = build_model("cnn", 1, 28, 10)
    m = 2
    z = model.prefix(m)(torch.randn(8, 1, 28, 28)).detach().numpy()
    y = np.arange(8) % 10
    tr = SuffixTrainer(model.suffix(m), OptimConfig(lr=0.1, momentum=0.9, weight_decay=0.0), torch.device("cpu"))
    p = next(model.suffix(m).parameters())
    tr.step(z, y)
    buf1 = tr.optim.state[p]["momentum_buffer"].clone()
    optim_id = id(tr.optim)
    tr.step(z, y)
    assert id(tr.optim) == optim_id
    # momentum carried over from batch 1: buf2 = 0.9 * buf1 + grad2
    assert torch.allclose(tr.optim.state[p]["momentum_buffer"], 0.9 * buf1 + p.grad, atol=1e-6)


@pytest.mark.parametrize("layout", [[[0, 1, 2, 3, 4]], [[0, 1, 2], [3, 4]], [[0], [1], [2], [3], [4]]])
def test_ring_allreduce_equals_weighted_mean(layout):
    cfg = RunConfig(agents=5, partition="dirichlet", alpha=0.3, train_samples=500).validate()
    groups, _ = groups_of(cfg, layout)
    owner = {k: g for g, ids in enumerate(layout) for k in ids}
    # make the models differ
    for g in groups:
        for k, a in g.agents.items():
            with torch.no_grad():
                for p in a.model.parameters():
                    p.add_(0.1 * k)
    models = np.stack([groups[owner[k]].flat_model(k) for k in range(5)]).astype(np.float64)
    sizes = groups[0].sizes
    assert len(set(sizes.tolist())) > 1  # unequal shards: the weights matter
    expected = (sizes / sizes.sum()) @ models
    for g in groups:
        g.ring_start()
    drive_ring(lambda ph, st, per: [g.ring_step(ph, st, per[i]) for i, g in enumerate(groups)], owner, len(groups), 5)
    for g in groups:
        g.ring_finish()
    for k in range(5):
        assert np.allclose(groups[owner[k]].flat_model(k), expected, atol=1e-5)


def test_gossip_step_is_metropolis_hastings():
    cfg = RunConfig(agents=6, aggregation="gossip", topology="ring", train_samples=600).validate()
    groups, _ = groups_of(cfg, [[0, 1, 2], [3, 4, 5]])
    for g in groups:
        for k, a in g.agents.items():
            with torch.no_grad():
                for p in a.model.parameters():
                    p.mul_(1 + k)
    before = np.stack([groups[k // 3].flat_model(k) for k in range(6)]).astype(np.float64)
    refs = {}
    for g in groups:
        refs.update(g.gossip_put())
    for g in groups:
        g.gossip_mix(refs)
    w = metropolis_hastings(groups[0].nbrs)
    after = np.stack([groups[k // 3].flat_model(k) for k in range(6)])
    assert np.allclose(after, w @ before, atol=1e-5)
