"""Split-model profiling: what one batch costs on each side of every split (docs/method.md §3.2).

Owns `SplitProfile` (per split m: rho_s[m], rho_f[m], D[m]; the base seconds per
batch c of an agent with slowdown 1; the model's size on the wire) and the three
ways to get one:
- `profile_flops` (default, `--profile flops`): multiply-accumulates of every conv and
  linear layer counted with forward hooks, forward+backward = 3x forward, at
  `--reference-gflops`.  Deterministic and host-independent, so the virtual clock
  of a run is reproducible on any machine.
- `profile_measure` (`--profile measure`): forward+backward timed on the device the
  agents train on (the CPU, or the actor's GPU, synchronised around each pass),
  median of a few batches, for prefix+aux, suffix and the whole model.
- `SplitProfile.from_csv` (`--profile path/to/profile.csv`): a saved table.
D[m] is the size of one *encoded* batch (`smashed.encoded_nbytes`): batch * C_m * H_m * W_m *
(4, 2 or 1 bytes for `--smashed-dtype` float32, float16, int8) + batch * 8 (exact int64
labels), + 8 bytes per channel for int8's scale and zero point.  So the solver knows when
offloading became cheaper, and D[m] equals what `train_prefix` puts in the object store.
"""

from __future__ import annotations

import csv
import dataclasses
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from comdml_ray.config import ConfigError
from comdml_ray.learning.models import SplitModel
from comdml_ray.learning.smashed import encoded_nbytes
from solvers import SplitTable


@dataclass(frozen=True)
class SplitProfile:
    source: str  # "flops", "measure" or the CSV path it came from
    batch_size: int
    base_sec_per_batch: float  # c of an agent with slowdown 1: full model, forward+backward, one batch
    model_bytes: int  # floating state of the whole model, bytes on the wire per copy
    split_ids: tuple[int, ...]
    rho_s: tuple[float, ...]  # prefix + aux share of a full batch's compute
    rho_f: tuple[float, ...]  # suffix share
    bytes_per_batch: tuple[int, ...]  # D[m]: one encoded batch of smashed data + labels
    suffix_bytes: tuple[int, ...]  # floating state of suffix(m): sent to the helper and back each round
    smashed_dtype: str = "float32"  # the encoding D[m] was computed for

    def table(self) -> SplitTable:
        return SplitTable(
            split_ids=np.asarray(self.split_ids),
            rho_s=np.asarray(self.rho_s, dtype=float),
            rho_f=np.asarray(self.rho_f, dtype=float),
            bytes_per_batch=np.asarray(self.bytes_per_batch, dtype=float),
        )

    def to_csv(self, path: str) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                [
                    "split",
                    "rho_s",
                    "rho_f",
                    "bytes_per_batch",
                    "suffix_bytes",
                    "base_sec_per_batch",
                    "batch_size",
                    "model_bytes",
                    "source",
                    "smashed_dtype",
                ]
            )
            for i, m in enumerate(self.split_ids):
                w.writerow(
                    [
                        m,
                        f"{self.rho_s[i]:.6f}",
                        f"{self.rho_f[i]:.6f}",
                        self.bytes_per_batch[i],
                        self.suffix_bytes[i],
                        f"{self.base_sec_per_batch:.9f}",
                        self.batch_size,
                        self.model_bytes,
                        self.source,
                        self.smashed_dtype,
                    ]
                )

    @staticmethod
    def from_csv(path: str) -> SplitProfile:
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            return SplitProfile(
                source=path,
                batch_size=int(rows[0]["batch_size"]),
                base_sec_per_batch=float(rows[0]["base_sec_per_batch"]),
                model_bytes=int(rows[0]["model_bytes"]),
                split_ids=tuple(int(r["split"]) for r in rows),
                rho_s=tuple(float(r["rho_s"]) for r in rows),
                rho_f=tuple(float(r["rho_f"]) for r in rows),
                bytes_per_batch=tuple(int(r["bytes_per_batch"]) for r in rows),
                suffix_bytes=tuple(int(r["suffix_bytes"]) for r in rows),
                smashed_dtype=rows[0].get("smashed_dtype") or "float32",  # files from before the column: float32
            )
        except (OSError, KeyError, IndexError, ValueError) as e:
            raise ConfigError(
                f"--profile {path} is not a profile.csv written by an earlier run ({type(e).__name__}: {e}); pass 'flops' or 'measure' instead."
            ) from None

    def check_matches(self, model: SplitModel, batch_size: int) -> None:
        if tuple(model.split_points()) != self.split_ids or batch_size != self.batch_size:
            raise ConfigError(
                f"--profile {self.source} was made for splits {list(self.split_ids)} at batch {self.batch_size}, "
                f"but this run has splits {model.split_points()} at batch {batch_size}; re-profile with --profile flops or measure."
            )

    def with_smashed_dtype(self, model: SplitModel, input_shape: tuple[int, int, int], dtype: str) -> SplitProfile:
        """This profile with D[m] for another activation encoding (compute shares and c are unchanged)."""
        if dtype == self.smashed_dtype:
            return self
        d = tuple(encoded_nbytes(self.batch_size, model.cut_shape(m, input_shape), dtype) for m in self.split_ids)
        return dataclasses.replace(self, bytes_per_batch=d, smashed_dtype=dtype)

    def format(self) -> str:
        lines = [
            f"split profile ({self.source}): base cost {self.base_sec_per_batch * 1e3:.2f} ms/batch of {self.batch_size}, "
            f"model {self.model_bytes / 1e6:.3f} MB, activations sent as {self.smashed_dtype}",
            "  split  rho_s  rho_f  D[m] (KB/batch)",
        ]
        for i, m in enumerate(self.split_ids):
            lines.append(f"  {m:5d}  {self.rho_s[i]:.3f}  {self.rho_f[i]:.3f}  {self.bytes_per_batch[i] / 1e3:10.1f}")
        return "\n".join(lines)


def _split_bytes(model: SplitModel, input_shape: tuple[int, int, int], batch: int, smashed_dtype: str) -> tuple[list[int], list[int], int]:
    from comdml_ray.learning.training import flatten

    d = [encoded_nbytes(batch, model.cut_shape(m, input_shape), smashed_dtype) for m in model.split_points()]
    sfx = [flatten(model, model.suffix_keys(m)).nbytes for m in model.split_points()]
    return d, sfx, flatten(model).nbytes


def _count_macs(module: nn.Module, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Multiply-accumulates of conv and linear layers in one forward of x; returns (macs, output)."""
    total = 0.0

    def hook(mod: nn.Module, inp, out) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            total += out.numel() * k
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            out = module(x)
    finally:
        for h in handles:
            h.remove()
    return total, out


def profile_flops(
    model: SplitModel, input_shape: tuple[int, int, int], batch_size: int, reference_gflops: float, smashed_dtype: str = "float32"
) -> SplitProfile:
    model.eval()
    x = torch.zeros(batch_size, *input_shape)
    block_macs = []
    for blk in model.blocks:
        macs, x = _count_macs(blk, x)
        block_macs.append(macs)
    full = sum(block_macs)
    rho_s, rho_f = [], []
    for m in model.split_points():
        aux_macs, _ = _count_macs(model.make_aux_head(m), torch.zeros(batch_size, *model.cut_shape(m, input_shape)))
        rho_s.append((sum(block_macs[:m]) + aux_macs) / full)
        rho_f.append(sum(block_macs[m:]) / full)
    d, sfx, model_bytes = _split_bytes(model, input_shape, batch_size, smashed_dtype)
    # forward + backward ~ 3 forwards; 2 FLOPs per multiply-accumulate
    base = 3 * 2 * full / (reference_gflops * 1e9)
    return SplitProfile(
        "flops", batch_size, base, model_bytes, tuple(model.split_points()), tuple(rho_s), tuple(rho_f), tuple(d), tuple(sfx), smashed_dtype
    )


def _wait(device: torch.device) -> None:
    """Let the device finish what was queued (CUDA kernels run after the call returns; the CPU's already have)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_fwd_bwd(modules: list[nn.Module], x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    """Median seconds of forward + backward of the modules in sequence on (x, y), on x's device."""
    params = [p for m in modules for p in m.parameters()]
    times = []
    for r in range(repeats + 2):  # two warm-up passes
        _wait(x.device)
        t0 = time.perf_counter()
        out = x
        for m in modules:
            out = m(out)
        F.cross_entropy(out, y).backward()
        _wait(x.device)  # the time of the work, not of queueing it
        for p in params:
            p.grad = None
        if r >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile_measure(
    model: SplitModel,
    input_shape: tuple[int, int, int],
    batch_size: int,
    repeats: int = 5,
    smashed_dtype: str = "float32",
    device: torch.device | str = "cpu",
) -> SplitProfile:
    """Time forward + backward of the whole model, each prefix + aux head and each suffix, on `device` (the agents' own)."""
    device = torch.device(device)
    model = model.to(device).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *input_shape, generator=gen).to(device)  # drawn on the CPU: the same batch on any device
    y = torch.randint(0, model.num_classes, (batch_size,), generator=gen).to(device)
    full = _time_fwd_bwd([model], x, y, repeats)
    rho_s, rho_f = [], []
    for m in model.split_points():
        aux = model.make_aux_head(m).to(device)
        rho_s.append(_time_fwd_bwd([model.prefix(m), aux], x, y, repeats) / full)
        with torch.no_grad():
            z = model.prefix(m)(x)
        rho_f.append(_time_fwd_bwd([model.suffix(m)], z, y, repeats) / full)
    model = model.cpu()
    d, sfx, model_bytes = _split_bytes(model, input_shape, batch_size, smashed_dtype)
    return SplitProfile(
        "measure",
        batch_size,
        full,
        model_bytes,
        tuple(model.split_points()),
        tuple(rho_s),
        tuple(rho_f),
        tuple(d),
        tuple(sfx),
        smashed_dtype,
    )
