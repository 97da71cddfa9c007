"""Training steps in pure torch (no Ray): whole-model epochs, local-loss split training, evaluation.

Owns
- `SGD`: minibatch SGD with momentum and weight decay, the same float operations as
  torch.optim.SGD's CPU path, as a few foreach operations over all parameters,
  without torch.optim (whose Optimizer imports torch._dynamo on first use: 1.3 s of
  CPU and 150 MB in every agent actor);
- `LrSchedule`: the learning rate by round and progress within it (warm-up, then
  constant or cosine), applied batch by batch by the three training loops below;
- `minibatches`: the seeded shuffle every agent uses (one torch.Generator per agent);
- `train_full`: an agent's ordinary local epoch(s) on its whole model;
- `train_prefix`: the offloading agent's side of ComDML (docs/method.md §2.2):
  prefix + auxiliary head trained on the local loss CE(aux(z), y); yields chunks of
  encoded batches (`smashed.SmashedBatch`: z.detach() clipped, noised and encoded as
  `--smashed-*` say, and the exact labels) as numpy arrays, so no gradient can flow
  back from the helper;
- `SuffixTrainer`: the helper's side, one optimizer state kept for the whole round
  (the reference code re-created it every batch: a bug we do not copy); `train_chunk`
  moves a received chunk to the device in one copy and trains on its batches;
- `TrainStats`: batches, samples and the loss sum, kept on the device;
- `flatten` / `unflatten_into`: a model's floating state (parameters and BN buffers)
  as one flat float32 numpy vector, the unit of averaging and of object-store transport;
- `evaluate`: accuracy and loss on a test set.

The hot path never waits for the device inside a round: the index batches cross to the
device once per round (`on_device`), losses are summed there and read once per round,
activations cross to the host once per chunk, and a flat model once per call.  On the
CPU every number is the one the per-parameter, per-batch code made (bit for bit).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from comdml_ray.learning.smashed import DeviceBatch, SmashedBatch, SmashedEncoder, SmashedSpec, to_device, to_host


@dataclass
class OptimConfig:
    lr: float
    momentum: float
    weight_decay: float


class SGD:
    """SGD with momentum and weight decay (no dampening, no Nesterov): torch.optim.SGD's update, float for float.

    The step is `_single_tensor_sgd` of torch 2.14 (the path torch.optim.SGD takes for CPU
    tensors): d = g + wd * p; b = d on the first step, else b = momentum * b + d; p -= lr * b.
    `param_groups` (one group; `set_lr` writes its "lr"), `state`, `zero_grad`, `state_dict`
    and `load_state_dict` keep torch's names and state layout ({"state": {i: {"momentum_buffer"}},
    "param_groups": [...]}).  tests/test_agent.py checks it against torch.optim.SGD bit for bit.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.params: list[torch.Tensor] = list(params)
        self.param_groups = [{"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "params": self.params}]
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @property
    def state(self) -> dict:
        """torch's per-parameter view: parameter -> {"momentum_buffer": tensor}, for parameters that have one (read-only)."""
        return {p: {"momentum_buffer": b} for p, b in zip(self.params, self.buffers, strict=True) if b is not None}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient, as a few foreach operations over all of them.

        torch's `_foreach_*` ops do per tensor what the per-parameter loop did (on the CPU
        they run the same kernels one tensor after the other: tests/test_agent.py checks the
        weights bit for bit against torch.optim.SGD's per-parameter path); on a GPU they
        batch the tensors into a few kernel launches instead of three per parameter.
        """
        g = self.param_groups[0]
        lr, momentum, wd = float(g["lr"]), g["momentum"], g["weight_decay"]
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[i] for i in live]
        d = [p.grad for p in params]
        if wd != 0:
            d = torch._foreach_add(d, params, alpha=wd)  # g + wd * p, new tensors (the gradients stay as they are)
        if momentum != 0:
            old = [j for j, i in enumerate(live) if self.buffers[i] is not None]
            if old:
                bufs = [self.buffers[live[j]] for j in old]
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, [d[j] for j in old], alpha=1)
            for j, i in enumerate(live):
                if self.buffers[i] is None:  # first step of this parameter: b = d
                    self.buffers[i] = d[j].detach().clone()
            d = [self.buffers[i] for i in live]
        torch._foreach_add_(params, d, alpha=-lr)

    def state_dict(self) -> dict:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"} | {"params": list(range(len(self.params)))}
        return {"state": {i: {"momentum_buffer": b} for i, b in enumerate(self.buffers) if b is not None}, "param_groups": [group]}

    def load_state_dict(self, state: dict) -> None:
        group = state["param_groups"][0]
        if len(group["params"]) != len(self.params):
            raise ValueError(f"optimizer state for {len(group['params'])} parameters, this optimizer has {len(self.params)}")
        self.param_groups[0].update({k: v for k, v in group.items() if k != "params"})
        self.buffers = [None] * len(self.params)
        for i, st in state["state"].items():
            self.buffers[int(i)] = st["momentum_buffer"].detach().clone().to(self.params[int(i)].device)


def make_sgd(params, opt: OptimConfig) -> SGD:
    return SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)


@dataclass(frozen=True)
class LrSchedule:
    """Learning rate at time t = round + progress in it: linear warm-up over `warmup_rounds`, then constant or cosine to 0 at `rounds`."""

    base: float
    warmup_rounds: float = 0.0
    kind: str = "constant"  # or "cosine"
    rounds: int = 1

    def at(self, t: float) -> float:
        warm = min(1.0, t / self.warmup_rounds) if self.warmup_rounds > 0 else 1.0
        decay = 0.5 * (1.0 + math.cos(math.pi * min(t, self.rounds) / self.rounds)) if self.kind == "cosine" else 1.0
        return self.base * warm * decay

    def for_batches(self, r: int, n: int) -> list[float]:
        """One rate per batch of a round of n batches (the first batch already a step into the warm-up)."""
        return [self.at(r + (i + 1) / n) for i in range(n)]


def set_lr(optim: SGD, lr: float | None) -> None:
    if lr is not None:
        for group in optim.param_groups:
            group["lr"] = lr


def minibatches(n: int, batch_size: int, epochs: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Index batches for `epochs` shuffled passes over n samples (last batch may be short)."""
    out: list[torch.Tensor] = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        out.extend(perm[i : i + batch_size] for i in range(0, n, batch_size))
    return out


def batches_per_round(n: int, batch_size: int, epochs: int) -> int:
    return epochs * -(-n // batch_size)


@dataclass
class TrainStats:
    """Batches, samples and the sum of per-batch mean losses of some training.

    The losses are summed on the device, in float64, and read once (`loss_sum`), so a
    step never waits for the device to report its loss.  The sum is the one the host
    made before, bit for bit: each float32 loss widened to float64 (exact) and added in
    batch order, 0.0 + l_1 + l_2 + ..., each addition rounded once in float64.
    """

    batches: int = 0
    samples: int = 0
    losses: torch.Tensor | None = None  # () float64 on the training device: the running sum

    def add_loss(self, loss: torch.Tensor, samples: int) -> None:
        """Count one batch of `samples` samples whose mean loss is `loss` (a 0-d tensor; not read here)."""
        value = loss.detach().to(torch.float64)
        self.losses = value if self.losses is None else self.losses + value
        self.batches += 1
        self.samples += samples

    def merge(self, other: TrainStats) -> None:
        """Add another count after this one (its loss sum added as one term, as a host sum of the two would)."""
        if other.losses is not None:
            self.losses = other.losses if self.losses is None else self.losses + other.losses
        self.batches += other.batches
        self.samples += other.samples

    @property
    def loss_sum(self) -> float:
        """Sum of per-batch mean losses (reads the device: one synchronisation)."""
        return 0.0 if self.losses is None else float(self.losses)

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.batches, 1)


def sgd_step(optim: SGD, loss: torch.Tensor, stats: TrainStats, samples: int) -> None:
    """Backward and one optimizer step on `loss` (gradients zeroed by the caller); counted in stats, never read."""
    loss.backward()
    optim.step()
    stats.add_loss(loss, samples)


def on_device(batches: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """The index batches on `device`, moved in one copy (one per batch would wait for the device each time).

    The shuffle is drawn on the CPU (one seeded generator per agent, the same on any
    device); on the CPU the batches are returned as they are.
    """
    if not batches or all(b.device == device for b in batches):
        return batches
    return list(torch.cat(batches).to(device).split([len(b) for b in batches]))


def train_full(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batches: list[torch.Tensor], optim: SGD, lrs: list[float] | None = None
) -> TrainStats:
    """Ordinary local training of the whole model on the given index batches (lrs: one rate per batch, else the optimizer's)."""
    model.train()
    stats = TrainStats()
    for i, idx in enumerate(on_device(batches, x.device)):
        xb, yb = x[idx], y[idx]
        set_lr(optim, lrs[i] if lrs else None)
        optim.zero_grad(set_to_none=True)
        sgd_step(optim, F.cross_entropy(model(xb), yb), stats, len(idx))
    return stats


def train_prefix(
    prefix: nn.Module,
    aux: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batches: list[torch.Tensor],
    optim: SGD,
    chunk_batches: int,
    stats: TrainStats,
    encoder: SmashedEncoder | None = None,
    lrs: list[float] | None = None,
) -> Iterator[list[SmashedBatch]]:
    """Train prefix+aux on the local loss; yield chunks of `chunk_batches` encoded (z, y) batches.

    `optim` covers the prefix's and the aux head's parameters.  z = prefix(x) is
    detached before it leaves: the helper trains the suffix on it, but no gradient
    returns, so this side never waits for the helper.  The aux head trains on the
    clean z; `encoder` (default: plain float32) clips, noises and encodes the copy
    that leaves.
    """
    encode = encoder if encoder is not None else SmashedEncoder(SmashedSpec(), seed=0)
    prefix.train()
    aux.train()
    chunk: list[DeviceBatch] = []
    for i, idx in enumerate(on_device(batches, x.device)):
        xb, yb = x[idx], y[idx]
        set_lr(optim, lrs[i] if lrs else None)
        optim.zero_grad(set_to_none=True)
        z = prefix(xb)  # (B, C_m, H_m, W_m)
        sgd_step(optim, F.cross_entropy(aux(z), yb), stats, len(idx))
        chunk.append(encode(z.detach(), yb))  # stays on the device until the chunk leaves
        if len(chunk) == chunk_batches:
            yield to_host(chunk)
            chunk = []
    if chunk:
        yield to_host(chunk)


class SuffixTrainer:
    """The helper's training of a partner's suffix: one optimizer for the whole round."""

    def __init__(self, suffix: nn.Module, opt: OptimConfig, device: torch.device, lrs: list[float] | None = None):
        self.suffix = suffix.train()
        self.optim = make_sgd(suffix.parameters(), opt)
        self.device = device
        self.stats = TrainStats()
        self.lrs = lrs  # one rate per expected batch (the offloader's round); the last one repeats

    def step(self, z: np.ndarray, y: np.ndarray) -> None:
        """One SGD step on float32 activations z (B, C_m, H_m, W_m) and labels y (B,), host arrays."""
        self.step_on_device(torch.from_numpy(z).to(self.device), torch.from_numpy(y).to(self.device))

    def step_on_device(self, zb: torch.Tensor, yb: torch.Tensor) -> None:
        """One SGD step on activations and labels already on this trainer's device (see `smashed.to_device`)."""
        if self.lrs:
            set_lr(self.optim, self.lrs[min(self.stats.batches, len(self.lrs) - 1)])
        self.optim.zero_grad(set_to_none=True)
        sgd_step(self.optim, F.cross_entropy(self.suffix(zb), yb), self.stats, len(yb))

    def train_chunk(self, chunk: list[SmashedBatch]) -> None:
        """One step per batch of a received chunk (float32, float16 or int8), moved to the device in one copy and decoded there (`smashed.to_device`)."""
        for zb, yb in to_device(chunk, self.device):
            self.step_on_device(zb, yb)


def float_keys(model: nn.Module, keys: list[str] | None = None) -> list[str]:
    """State-dict keys holding floating tensors (parameters and BN running stats), in order."""
    sd = model.state_dict()
    ks = list(sd) if keys is None else keys
    return [k for k in ks if sd[k].is_floating_point()]


def flatten(model: nn.Module, keys: list[str] | None = None) -> np.ndarray:
    """The floating state under `keys` (default: all) as one flat float32 vector."""
    sd = model.state_dict()
    ks = float_keys(model, keys)
    if not ks:
        return np.zeros(0, np.float32)
    # concatenated where the model lives, then one copy to the host (not one per tensor)
    return torch.cat([sd[k].detach().reshape(-1).to(torch.float32) for k in ks]).cpu().numpy()


def unflatten_into(model: nn.Module, vec: np.ndarray, keys: list[str] | None = None) -> None:
    """Write a vector made by `flatten(model, keys)` back into the model, in place."""
    sd = model.state_dict()
    ks = float_keys(model, keys)
    with warnings.catch_warnings():
        # t is only read: the vector may be a read-only view into Ray's object store (zero-copy).
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        t = torch.from_numpy(np.ascontiguousarray(vec, dtype=np.float32))
    if ks:
        t = t.to(sd[ks[0]].device)  # one host-to-device copy, then the tensors are filled from it where they live
    off = 0
    with torch.no_grad():
        for k in ks:
            n = sd[k].numel()
            sd[k].copy_(t[off : off + n].view_as(sd[k]))
            off += n
    if off != t.numel():
        raise ValueError(f"flat vector has {t.numel()} values, the model's keys hold {off}")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64) -> tuple[float, float]:
    """(accuracy in [0, 1], mean cross-entropy) of the model on (x, y).

    Small batches: on a CPU, ResNet-56 evaluated 1,000 images 3x faster in batches of 50 than of 500 (cache).
    """
    model.eval()
    # Summed on the device and read once: per batch, the float32 loss widened to float64 and
    # added in batch order (the same float64 sum a host loop of float() makes), the hits as int64.
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, len(y), batch_size):
        logits = model(x[i : i + batch_size])
        loss_sum += F.cross_entropy(logits, y[i : i + batch_size], reduction="sum").to(torch.float64)
        correct += (logits.argmax(1) == y[i : i + batch_size]).sum()
    return int(correct) / len(y), float(loss_sum) / len(y)
