"""The agents' logic without Ray (LocalBackend): plan agreement, split training, the all-reduce's halves, gossip."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from comdml_ray.config import RunConfig
from comdml_ray.learning.models import build_model
from comdml_ray.learning.training import OptimConfig, SuffixTrainer, flatten
from comdml_ray.timing.topology import metropolis_hastings
from tests.conftest import local_backend


def test_groups_agree_on_the_plan():
    cfg = RunConfig(agents=10, algorithm="comdml", train_samples=600).validate()
    be, _ = local_backend(cfg, [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9]])
    groups = be.groups
    states = [g.publish_states(0) for g in groups]
    one = groups[0].concat_states(*states)
    (d0, plan), (d1, plan1) = [g.plan_round(0, one) for g in groups]
    digests = [d0, d1]
    assert d0.digest == d1.digest and np.array_equal(plan.partner, plan1.partner)
    assert (plan.partner >= 0).sum() > 0  # the paper profile has stragglers worth offloading
    # the same states gathered in another order give the same plan
    assert groups[1].plan_round(0, groups[1].concat_states(*reversed(states)))[0].digest == d0.digest
    # each group names the groups its offloaders send to
    for d, g in zip(digests, groups, strict=True):
        assert set(d.out) == {int(plan.partner[k]) // 4 if plan.partner[k] < 4 else 1 for k in g.ids if plan.partner[k] >= 0}


def one_offload_round():
    """Agent 1 offloads split 2 to agent 0; agent 2 trains alone (200 agents, 3 hosted, 300 samples each)."""
    cfg = RunConfig(agents=200, algorithm="comdml", chunk_batches=3).validate()
    be, _ = local_backend(cfg, [[0, 1, 2], list(range(3, 200))])
    g = be.groups[0]
    row = g.split_profile.split_ids.index(2)
    g.plan = SimpleNamespace(partner=np.array([-1, 0, -1] + [-1] * 197), split=np.array([-1, row, -1] + [-1] * 197))
    holders = []
    lend = g.agents[0].suffix_holder

    def spy():
        holders.append(lend())
        return holders[-1]

    g.agents[0].suffix_holder = spy
    return g, be.store, holders


def test_offload_round_prefix_isolated_and_model_reassembled():
    g, store, holders = one_offload_round()
    slow = g.agents[1]
    m = 2
    a, outs = g.train_phase(0, [0])
    (out,) = outs
    assert out.offloader == 1 and out.helper == 0 and out.split == m
    chunk = store.get(out.chunk_refs[0])
    assert isinstance(chunk[0].codes, np.ndarray) and len(chunk) == 3  # detached numpy, chunk_batches per chunk
    assert sum(len(store.get(r)) for r in out.chunk_refs) == a.work[1].prefix_batches == 10
    prefix_after_own_training = flatten(slow.model, slow.model.prefix_keys(m))
    suffix_before = flatten(slow.model, slow.model.suffix_keys(m))

    b, returns = g.helper_phase(0, [0], outs)
    holder = copy.deepcopy(holders[0])  # the helper's module as it trained (the pool lends it out again)
    # the helper's training never touched the offloader's model: no gradient flows back
    assert np.array_equal(flatten(slow.model, slow.model.prefix_keys(m)), prefix_after_own_training)
    assert np.array_equal(flatten(slow.model, slow.model.suffix_keys(m)), suffix_before)
    assert b.work[0].suffix_batches == {1: 10}

    g.finish_phase(0, returns)
    trained_suffix = returns[1].open(store)
    assert not np.array_equal(trained_suffix, suffix_before)
    assert np.array_equal(flatten(slow.model, slow.model.suffix_keys(m)), trained_suffix)
    assert np.array_equal(flatten(slow.model, slow.model.prefix_keys(m)), prefix_after_own_training)
    # the assembled model evaluates exactly like the offloader's prefix followed by the helper's suffix
    x = slow.x[:64]
    slow.model.eval()
    holder.eval()
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


def ring_reference(models: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """The ring all-reduce over agents, literally: chunk c summed x_c + x_{c+1} + ... + x_{c-1} in float32."""
    n, size = models.shape
    scaled = [models[k] * np.float32(shares[k]) for k in range(n)]
    bounds = np.linspace(0, size, n + 1).astype(np.int64)
    out = np.empty(size, dtype=np.float32)
    for c in range(n):
        lo, hi = bounds[c], bounds[c + 1]
        acc = scaled[c][lo:hi].copy()
        for j in range(1, n):
            acc += scaled[(c + j) % n][lo:hi]
        out[lo:hi] = acc
    return out


@pytest.mark.parametrize("layout", [[[0, 1, 2, 3, 4]], [[0, 1, 2], [3, 4]], [[0], [1], [2], [3], [4]]])
def test_allreduce_is_the_ring_sum_bit_for_bit_whatever_the_packing(layout):
    """Start at home, one hop per group, end at home = the agent ring's float32 sum, exactly; = the weighted mean to 1e-6.

    The gathered form (one allgather, each group sums every agent's model in the ring's order) gives the same bits.
    """
    cfg = RunConfig(agents=5, partition="dirichlet", alpha=0.3, train_samples=500).validate()
    be, st = local_backend(cfg, layout)
    groups, owner = be.groups, st.owner
    for g in groups:  # make the models differ
        for k, a in g.agents.items():
            with torch.no_grad():
                for p in a.model.parameters():
                    p.add_(0.1 * k)
    models = np.stack([groups[owner[k]].flat_model(k) for k in range(5)])
    sizes = st.num_samples
    assert len(set(sizes.tolist())) > 1  # unequal shards: the weights matter
    reference = ring_reference(models, st.shares)
    payloads = [g.gather_payload(model=True, aux=False) for g in groups]
    assert len({p.size for p in payloads}) == 1
    be.average(model=True, aux=False)
    for k in range(5):
        after = groups[owner[k]].flat_model(k)
        assert np.array_equal(after, reference)
        assert np.abs(after - (sizes / sizes.sum()) @ models.astype(np.float64)).max() < 1e-6
    for g in groups:
        g.gathered_finish(payloads, model=True, aux=False)
    assert all(np.array_equal(groups[owner[k]].flat_model(k), reference) for k in range(5))


def test_aux_heads_are_averaged_per_split_group():
    """Offloaders of the same split end with the data-weighted mean of their aux heads; other splits untouched."""
    cfg = RunConfig(agents=6, algorithm="comdml", train_samples=600).validate()
    be, _ = local_backend(cfg, [[0, 1, 2], [3, 4, 5]])
    split_of = {1: 1, 2: 2, 4: 1, 5: 2}  # agent -> split m
    heads = {}
    for k, m in split_of.items():
        g = be.groups[k // 3]
        head = g.agents[k].aux_head(m)
        with torch.no_grad():
            for p in head.parameters():
                p.add_(float(k))
        g.aux_used[k] = m
        heads[k] = flatten(head).astype(np.float64)
    n = {k: be.groups[k // 3].agents[k].num_samples for k in split_of}
    before = [flatten(a.model) for g in be.groups for a in g.agents.values()]
    payloads, used = [g.gather_payload(model=False, aux=True) for g in be.groups], [dict(g.aux_used) for g in be.groups]
    be.average(model=False, aux=True)
    averaged = {k: flatten(be.groups[k // 3].agents[k].aux[m]) for k, m in split_of.items()}
    for g, u in zip(be.groups, used, strict=True):  # the gathered form: the same heads, bit for bit
        g.aux_used = u
        g.gathered_finish(payloads, model=False, aux=True)
    assert all(np.array_equal(flatten(be.groups[k // 3].agents[k].aux[m]), averaged[k]) for k, m in split_of.items())
    for m in (1, 2):
        ks = [k for k, mm in split_of.items() if mm == m]
        mean = sum(n[k] * heads[k] for k in ks) / sum(n[k] for k in ks)
        for k in ks:
            assert np.allclose(flatten(be.groups[k // 3].agents[k].aux[m]), mean, atol=1e-6)
    assert all(np.array_equal(b, flatten(a.model)) for b, a in zip(before, (a for g in be.groups for a in g.agents.values()), strict=True))
    assert all(not g.aux_used for g in be.groups)


def test_gossip_step_is_metropolis_hastings():
    cfg = RunConfig(agents=6, aggregation="gossip", topology="ring", train_samples=600).validate()
    be, st = local_backend(cfg, [[0, 1, 2], [3, 4, 5]])
    groups = be.groups
    for g in groups:
        for k, a in g.agents.items():
            with torch.no_grad():
                for p in a.model.parameters():
                    p.mul_(1 + k)
    before = np.stack([groups[k // 3].flat_model(k) for k in range(6)]).astype(np.float64)
    models = {}
    for g in groups:
        models.update(g.gossip_put())
    for g in groups:
        g.gossip_mix(models)
    w = metropolis_hastings(st.nbrs)
    after = np.stack([groups[k // 3].flat_model(k) for k in range(6)])
    assert np.allclose(after, w @ before, atol=1e-5)


def test_whole_comdml_round_in_process():
    """A full ComDML round through LocalBackend: plan, offload, help, finish, one averaging, the clock's rows."""
    from comdml_ray.results.rows import ClockSplits, sync_round_rows
    from comdml_ray.runtime.rounds import average, train_round

    cfg = RunConfig(agents=10, algorithm="comdml", train_samples=6000).validate()
    be, st = local_backend(cfg, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    reports, plan = train_round(be, 0, comdml=True)
    average(be, st, cfg.aggregation, aux=True)
    splits = ClockSplits.of(be.split_profile, 4 * np.array(be.groups[0].aux_sizes()))
    row, _agents, plans = sync_round_rows(0, st, splits, cfg.aggregation, reports, plan)
    assert row.pairs == (plan.partner >= 0).sum() > 0 and row.bytes_offloaded > 0
    models = np.stack([be.flat_model(k // 5, k) for k in range(10)])
    assert np.abs(models - models[0]).max() == 0  # one model after the all-reduce
    # the clock follows what was done: each offloader finishes near its plan's prediction
    # (the clock adds the suffix's return trip and the aux heads' averaging, which the plan leaves out)
    paired = [p for p in plans if p.partner >= 0]
    assert all(abs(p.simulated_finish_s / p.predicted_finish_s - 1) < 0.01 for p in paired)
    assert all(not g.aux_used for g in be.groups)  # aux heads averaged and cleared


def test_sgd_is_torch_sgd_bit_for_bit_and_imports_no_dynamo():
    """training.SGD against torch.optim.SGD (CPU): the same weights after steps with a changing rate, a state round trip and more steps."""
    import subprocess
    import sys

    from comdml_ray.learning.training import SGD, set_lr

    torch.manual_seed(0)
    ours, ref = build_model("cnn", 1, 28, 10), build_model("cnn", 1, 28, 10)
    ref.load_state_dict(ours.state_dict())
    a = SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    b = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))

    def steps(n: int) -> None:
        for i in range(n):
            for model, opt in ((ours, a), (ref, b)):
                set_lr(opt, 0.1 / (i + 1))
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()

    steps(3)
    saved_a, saved_b = a.state_dict(), b.state_dict()
    assert saved_a["param_groups"][0]["params"] == saved_b["param_groups"][0]["params"]
    steps(2)
    a.load_state_dict(saved_a)
    b.load_state_dict(saved_b)
    steps(2)
    for p, q in zip(ours.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    # The reason it exists: an agent actor never imports torch._dynamo (torch.optim's Optimizer does on first use).
    probe = (
        "import sys, torch; from comdml_ray.learning.training import SGD; from comdml_ray.learning.models import build_model; m = build_model('cnn', 1, 28, 10); "
        "o = SGD(m.parameters(), lr=0.1, momentum=0.9); m(torch.randn(2, 1, 28, 28)).sum().backward(); o.step(); "
        "print('torch._dynamo' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "False"
