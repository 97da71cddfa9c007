"""The device-friendly hot path keeps the CPU's numbers bit for bit (`learning.training`, `learning.smashed`).

Each test sets the code as it is against the code as it was, written out here: the
per-parameter SGD loop, `loss.item()` summed on the host every step, one encode and one
host copy per activation batch, one `float()` per evaluation batch.  The GPU branches
(one copy per chunk, decoding on the device) are run on the CPU through the functions
they call, so their arithmetic is checked here too; `benchmarks/gpu_check.py` checks them
on a real device.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comdml_ray.learning.costmodel import profile_measure
from comdml_ray.learning.models import build_model
from comdml_ray.learning.smashed import (
    SmashedEncoder,
    SmashedSpec,
    chunk_to_device,
    chunk_to_host,
    encode,
    encode_on_device,
    to_device,
    to_host,
)
from comdml_ray.learning.training import (
    SGD,
    OptimConfig,
    SuffixTrainer,
    TrainStats,
    evaluate,
    make_sgd,
    on_device,
    set_lr,
    train_full,
    train_prefix,
)

torch.set_num_threads(1)


class PerParameterSGD(SGD):
    """training.SGD's step as it was: one Python iteration per parameter (torch's `_single_tensor_sgd`)."""

    @torch.no_grad()
    def step(self) -> None:
        g = self.param_groups[0]
        lr, momentum, wd = float(g["lr"]), g["momentum"], g["weight_decay"]
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            d = p.grad
            if wd != 0:
                d = d.add(p, alpha=wd)
            if momentum != 0:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = d.detach().clone()
                else:
                    buf.mul_(momentum).add_(d, alpha=1)
                d = buf
            p.add_(d, alpha=-lr)


def data(n: int = 70, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    return x, y, list(torch.randperm(n, generator=g).split(16))  # 16, 16, 16, 16 and a short 6


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("momentum, wd", [(0.0, 0.0), (0.9, 0.0), (0.0, 5e-4), (0.9, 5e-4)])
def test_foreach_sgd_is_the_per_parameter_loop_bit_for_bit(momentum: float, wd: float) -> None:
    """With a changing rate, and a parameter without a gradient for a step (its momentum starts later)."""
    torch.manual_seed(0)
    ours, ref = build_model("cnn", 1, 28, 10), build_model("cnn", 1, 28, 10)
    ref.load_state_dict(ours.state_dict())
    a, b = SGD(ours.parameters(), 0.1, momentum, wd), PerParameterSGD(ref.parameters(), 0.1, momentum, wd)
    x, y, _ = data(16)
    for i in range(4):
        for model, opt in ((ours, a), (ref, b)):
            set_lr(opt, 0.1 / (i + 1))
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            if i == 0:
                opt.params[0].grad = None  # frozen this step: skipped, its buffer created at its first gradient
            opt.step()
        assert same_state(ours, ref), f"step {i}"
    assert all((p is None and q is None) or torch.equal(p, q) for p, q in zip(a.buffers, b.buffers, strict=True))  # momentum buffers too


def test_loss_sum_on_the_device_is_the_host_sum_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(0)
    losses = (torch.rand(500, generator=g) * 3).to(torch.float32)  # float32, as cross_entropy returns
    host = 0.0
    stats = TrainStats()
    for v in losses:
        host += v.item()
        stats.add_loss(v, 32)
    assert stats.loss_sum == host and stats.batches == 500 and stats.samples == 16_000
    # merge (the wall clock's helper adds one batch's stats at a time): the same sum again
    merged, host2 = TrainStats(), 0.0
    for v in losses[:50]:
        one = TrainStats()
        one.add_loss(v, 32)
        merged.merge(one)
        host2 = host2 + one.loss_sum
    assert merged.loss_sum == host2 and merged.batches == 50
    assert TrainStats().loss_sum == 0.0 and TrainStats().mean_loss == 0.0


def test_train_full_is_the_old_loop_bit_for_bit() -> None:
    torch.manual_seed(1)
    ours, ref = build_model("cnn", 1, 28, 10), build_model("cnn", 1, 28, 10)
    ref.load_state_dict(ours.state_dict())
    x, y, batches = data()
    lrs = [0.05, 0.1, 0.1, 0.2, 0.01]
    opt = OptimConfig(0.1, 0.9, 5e-4)
    stats = train_full(ours, x, y, batches, make_sgd(ours.parameters(), opt), lrs)
    old = PerParameterSGD(ref.parameters(), opt.lr, opt.momentum, opt.weight_decay)
    ref.train()
    loss_sum = 0.0
    for i, idx in enumerate(batches):
        set_lr(old, lrs[i])
        old.zero_grad(set_to_none=True)
        loss = F.cross_entropy(ref(x[idx]), y[idx])
        loss.backward()
        old.step()
        loss_sum += loss.item()
    assert same_state(ours, ref) and stats.loss_sum == loss_sum and stats.batches == 5 and stats.samples == 70


@pytest.mark.parametrize("spec", [SmashedSpec(), SmashedSpec("float16", noise=0.1), SmashedSpec("int8", noise=0.1, clip=30.0)])
def test_split_training_is_the_old_path_bit_for_bit(spec: SmashedSpec) -> None:
    """Offloader: chunks made on the device and copied at once; helper: a chunk to the device at once. Same weights, same bytes."""
    torch.manual_seed(2)
    model, ref = build_model("cnn", 1, 28, 10), build_model("cnn", 1, 28, 10)
    ref.load_state_dict(model.state_dict())
    m, opt = 2, OptimConfig(0.05, 0.9, 5e-4)
    x, y, batches = data()
    aux, aux_ref = model.make_aux_head(m), ref.make_aux_head(m)
    aux_ref.load_state_dict(aux.state_dict())

    stats = TrainStats()
    chunks = list(
        train_prefix(
            model.prefix(m),
            aux,
            x,
            y,
            batches,
            make_sgd([*model.prefix(m).parameters(), *aux.parameters()], opt),
            2,
            stats,
            SmashedEncoder(spec, 7),
        )
    )
    trainer = SuffixTrainer(model.suffix(m), opt, torch.device("cpu"))
    for chunk in chunks:
        trainer.train_chunk(chunk)

    old = PerParameterSGD([*ref.prefix(m).parameters(), *aux_ref.parameters()], opt.lr, opt.momentum, opt.weight_decay)
    enc, sent, loss_sum = SmashedEncoder(spec, 7), [], 0.0
    for idx in batches:
        old.zero_grad(set_to_none=True)
        z = ref.prefix(m)(x[idx])
        loss = F.cross_entropy(aux_ref(z), y[idx])
        loss.backward()
        old.step()
        loss_sum += loss.item()
        sent.append(to_host([enc(z.detach(), y[idx])])[0])  # one batch, one host copy
    old_suffix = PerParameterSGD(ref.suffix(m).parameters(), opt.lr, opt.momentum, opt.weight_decay)
    suffix_loss = 0.0
    for b in sent:
        old_suffix.zero_grad(set_to_none=True)
        loss = F.cross_entropy(ref.suffix(m)(torch.from_numpy(b.decode())), torch.from_numpy(b.y))
        loss.backward()
        old_suffix.step()
        suffix_loss += loss.item()

    got = [b for c in chunks for b in c]
    assert [len(c) for c in chunks] == [2, 2, 1] and [len(b) for b in got] == [16, 16, 16, 16, 6]
    assert all(
        np.array_equal(a.codes, b.codes) and np.array_equal(a.y, b.y) and a.nbytes == b.nbytes for a, b in zip(got, sent, strict=True)
    )
    assert same_state(model, ref) and same_state(aux, aux_ref)
    assert stats.loss_sum == loss_sum and trainer.stats.loss_sum == suffix_loss


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_gpu_chunk_copies_give_the_per_batch_arrays(dtype: str) -> None:
    """What a GPU agent runs (concatenate, copy once, cut; decode after one copy), here on the CPU: the same arrays as batch by batch."""
    g = torch.Generator().manual_seed(3)
    zs = [torch.randn(n, 4, 5, 5, generator=g) * 7 for n in (8, 8, 3)]
    ys = [torch.randint(0, 10, (n,), generator=g) for n in (8, 8, 3)]
    per_batch = [encode(z, y, dtype) for z, y in zip(zs, ys, strict=True)]
    at_once = chunk_to_host([encode_on_device(z, y, dtype) for z, y in zip(zs, ys, strict=True)])
    for a, b in zip(at_once, per_batch, strict=True):
        assert a.codes.dtype == b.codes.dtype and np.array_equal(a.codes, b.codes) and np.array_equal(a.y, b.y)
        assert (a.scale is None) == (b.scale is None) and (
            a.scale is None or (np.array_equal(a.scale, b.scale) and np.array_equal(a.zero_point, b.zero_point))
        )
        assert a.nbytes == b.nbytes
    decoded = chunk_to_device(per_batch, torch.device("cpu"))
    plain = to_device(per_batch, torch.device("cpu"))
    for (z, y), (z0, y0), b in zip(decoded, plain, per_batch, strict=True):
        assert torch.equal(z, z0) and torch.equal(z, torch.from_numpy(b.decode())) and torch.equal(y, y0) and z.dtype == torch.float32
    assert chunk_to_host([]) == [] and chunk_to_device([], torch.device("cpu")) == []


def test_index_batches_move_in_one_copy() -> None:
    _, _, batches = data()
    assert on_device(batches, torch.device("cpu")) is batches  # already there: untouched
    moved = on_device(batches, torch.device("meta"))  # another device (no data): one concatenation, cut back
    assert [b.device.type for b in moved] == ["meta"] * 5 and [len(b) for b in moved] == [16, 16, 16, 16, 6]


def test_evaluate_is_the_per_batch_host_sum_bit_for_bit() -> None:
    torch.manual_seed(4)
    model = build_model("cnn", 1, 28, 10)
    x, y, _ = data(150)
    acc, loss = evaluate(model, x, y, batch_size=64)
    model.eval()
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for i in range(0, 150, 64):
            logits = model(x[i : i + 64])
            loss_sum += float(F.cross_entropy(logits, y[i : i + 64], reduction="sum"))
            correct += int((logits.argmax(1) == y[i : i + 64]).sum())
    assert (acc, loss) == (correct / 150, loss_sum / 150)


def test_measured_profile_runs_on_the_given_device() -> None:
    torch.manual_seed(5)
    model = build_model("cnn", 1, 28, 10)
    prof = profile_measure(model, (1, 28, 28), 8, repeats=1, device=torch.device("cpu"))
    assert prof.source == "measure" and prof.base_sec_per_batch > 0 and len(prof.rho_s) == len(model.split_points())
    assert all(r > 0 for r in (*prof.rho_s, *prof.rho_f))  # a timing: no tighter bound holds on a loaded host
    assert next(model.parameters()).device.type == "cpu"  # handed back on the CPU
