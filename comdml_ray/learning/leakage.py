"""Measured leakage of the smashed data: how much of x a helper can recover from what it receives (no Ray).

Owns
- `distance_correlation`: dCor(x, z) between raw inputs and what leaves the agent, the
  bias-corrected estimator of Szekely & Rizzo (2014, "Partial distance correlation",
  U-centred distance matrices).  The plain (V-statistic) sample dCor is biased towards 1
  in high dimension: for 512 Fashion-MNIST images (784 values) against independent
  Gaussian noise of the shape of split 1 (3,136 values) it reads 0.48, the corrected
  one 0.05.  We report sqrt(max(R*, 0)), R* the corrected squared dCor: 1 for an exact
  copy (or any rescaling), ~0 for independent data;
- `Decoder` and `reconstruction_mse`: the second signal, a reconstruction attack.  The
  helper knows the round-start model (all agents average the whole model, so the
  prefix is public), so it can compute z for images of its own, apply the same
  protection, and train a small decoder z -> x; we train it on `AUX_SAMPLES` training
  images and report its mean squared error on the fixed probe images (normalised
  pixel units), beside the error of guessing the mean image (the "learned nothing" line);
- `released`: what leaves the agent for inputs x at split m (prefix in eval mode,
  then `smashed.protect` per batch and encode/decode), the z both signals see;
- `measure_leakage`, `LeakageRow`, `leakage_table`, `write_privacy_csv`: one row per
  split point (and setting), the `privacy.csv` (with the measured `final_model.npy`) of
  a run's output folder and of `benchmarks/privacy.py`.
The probe sample is fixed (`PROBE_SEED`), not the run's seed, so every run and
setting is measured on the same 512 training images.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from comdml_ray.learning.models import SplitModel
from comdml_ray.learning.smashed import SmashedSpec, encode, protect

PROBE_SAMPLES = 512  # fixed sample of training images dCor and the decoder's test error are measured on
AUX_SAMPLES = 2048  # the attacker's own images, disjoint from the probe, to train the decoder on
PROBE_SEED = 0
DECODER_EPOCHS = 12
DECODER_BATCH = 64
DECODER_WIDTH = 32


@dataclass(frozen=True)
class LeakageRow:
    split: int
    cut_shape: str  # "C x H x W" of z
    dtype: str
    sigma: float
    clip: float | None
    dcor: float  # bias-corrected distance correlation of (x, released z) on the probe, in [0, 1]
    recon_mse: float  # decoder's mean squared error on the probe (normalised pixels)
    mean_image_mse: float  # error of predicting the attacker's mean image: a decoder that learned nothing
    decoder_s: float  # wall seconds to train the decoder


def _u_centred(x: torch.Tensor) -> torch.Tensor:
    """U-centred pairwise distance matrix of the rows of x (n, d), float64, zero diagonal."""
    a = torch.cdist(x, x)  # (n, n)
    n = a.shape[0]
    u = a - a.sum(0, keepdim=True) / (n - 2) - a.sum(1, keepdim=True) / (n - 2) + a.sum() / ((n - 1) * (n - 2))
    u.fill_diagonal_(0.0)
    return u


def distance_correlation(x: np.ndarray | torch.Tensor, z: np.ndarray | torch.Tensor) -> float:
    """Bias-corrected distance correlation of paired samples x (n, ...) and z (n, ...), n >= 4; in [0, 1]."""
    xs = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().to("cpu", torch.float64).flatten(1)
    zs = torch.as_tensor(np.asarray(z) if not torch.is_tensor(z) else z).detach().to("cpu", torch.float64).flatten(1)
    if len(xs) != len(zs) or len(xs) < 4:
        raise ValueError(f"distance correlation needs the same number (>= 4) of x and z samples, got {len(xs)} and {len(zs)}")
    a, b = _u_centred(xs), _u_centred(zs)
    vxy, vxx, vyy = float((a * b).sum()), float((a * a).sum()), float((b * b).sum())
    if vxx <= 0 or vyy <= 0:
        return 0.0  # a constant sample carries no information
    return math.sqrt(max(vxy / math.sqrt(vxx * vyy), 0.0))


@torch.no_grad()
def released(model: SplitModel, m: int, x: torch.Tensor, spec: SmashedSpec, gen: torch.Generator, batch_size: int = 32) -> torch.Tensor:
    """What leaves an offloader at split m for inputs x (n, C, H, W): z (n, C_m, H_m, W_m) as the helper decodes it.

    The prefix runs in eval mode (BatchNorm's running statistics); clip and noise are
    applied per batch of `batch_size`, as in training, since the noise std is a batch's
    channel std.
    """
    modes = [(mod, mod.training) for mod in model.modules()]
    model.eval()
    try:
        prefix = model.prefix(m)
        out = []
        for i in range(0, len(x), batch_size):
            z = protect(prefix(x[i : i + batch_size]), spec, gen)
            out.append(torch.from_numpy(encode(z, torch.zeros(len(z), dtype=torch.int64), spec.dtype).decode().copy()))
        return torch.cat(out)
    finally:
        for mod, mode in modes:
            mod.training = mode


class Decoder(nn.Module):
    """A small conv decoder z (B, C_m, h, w) -> x (B, C, H, W): two 3x3 convs, then sub-pixel upsampling."""

    def __init__(self, cut_shape: tuple[int, int, int], image_shape: tuple[int, int, int], width: int = DECODER_WIDTH) -> None:
        super().__init__()
        c_m, h, _ = cut_shape
        c, self.size, _ = image_shape
        self.up = max(1, math.ceil(self.size / h))
        self.body = nn.Sequential(
            nn.Conv2d(c_m, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, c * self.up * self.up, 3, padding=1),
            nn.PixelShuffle(self.up),  # (B, C, h*up, w*up)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.body(z)
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x


def reconstruction_mse(
    z_aux: torch.Tensor, x_aux: torch.Tensor, z_probe: torch.Tensor, x_probe: torch.Tensor, seed: int = 0, epochs: int | None = None
) -> tuple[float, float]:
    """Train a `Decoder` on (z_aux -> x_aux) for `epochs` (default DECODER_EPOCHS); return (its MSE on the probe, the mean-image MSE on the probe)."""
    epochs = DECODER_EPOCHS if epochs is None else epochs
    torch.manual_seed(seed)
    dec = Decoder(tuple(z_aux.shape[1:]), tuple(x_aux.shape[1:]))
    opt = torch.optim.Adam(dec.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    dec.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(z_aux), generator=gen).split(DECODER_BATCH):
            opt.zero_grad(set_to_none=True)
            F.mse_loss(dec(z_aux[idx]), x_aux[idx]).backward()
            opt.step()
    dec.eval()
    with torch.no_grad():
        mse = float(F.mse_loss(dec(z_probe), x_probe))
        base = float(F.mse_loss(x_aux.mean(0, keepdim=True).expand_as(x_probe), x_probe))
    return mse, base


def probe_indices(n_train: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed probe sample (PROBE_SAMPLES indices) and the attacker's disjoint images (AUX_SAMPLES)."""
    perm = np.random.default_rng(PROBE_SEED).permutation(n_train)
    return np.sort(perm[:PROBE_SAMPLES]), np.sort(perm[PROBE_SAMPLES : PROBE_SAMPLES + AUX_SAMPLES])


def measure_leakage(
    model: SplitModel, splits: list[int], x_probe: torch.Tensor, x_aux: torch.Tensor, spec: SmashedSpec, seed: int = 0, batch_size: int = 32
) -> list[LeakageRow]:
    """One row per split: dCor(x, released z) and the reconstruction attack's error, on the probe images.

    Runs on one CPU thread: the figures are small and, on a shared machine, more
    threads mostly wait for each other (we saw 7 s become 150 s).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [_measure_split(model, m, x_probe, x_aux, spec, seed, batch_size) for m in splits]
    finally:
        torch.set_num_threads(threads)


def _measure_split(
    model: SplitModel, m: int, x_probe: torch.Tensor, x_aux: torch.Tensor, spec: SmashedSpec, seed: int, batch_size: int
) -> LeakageRow:
    gen = torch.Generator().manual_seed(seed + m)
    z_probe = released(model, m, x_probe, spec, gen, batch_size)
    z_aux = released(model, m, x_aux, spec, gen, batch_size)
    t0 = time.perf_counter()
    mse, base = reconstruction_mse(z_aux, x_aux, z_probe, x_probe, seed)
    return LeakageRow(
        split=m,
        cut_shape=" x ".join(map(str, model.cut_shape(m))),
        dtype=spec.dtype,
        sigma=spec.noise,
        clip=spec.clip,
        dcor=distance_correlation(x_probe, z_probe),
        recon_mse=mse,
        mean_image_mse=base,
        decoder_s=time.perf_counter() - t0,
    )


def leakage_table(cfg, flat_model: np.ndarray, splits: list[int], specs: list[SmashedSpec] | None = None) -> pd.DataFrame:
    """Leakage of a model (flat, as `training.flatten` makes it) at `splits`, one row per split and spec.

    `cfg` is the run's RunConfig (dataset, model, seed, batch size); `specs` default to
    the run's own --smashed-* setting.
    """
    from comdml_ray.learning.data import load_dataset, to_tensor
    from comdml_ray.learning.models import build_model
    from comdml_ray.learning.training import unflatten_into

    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
    model = build_model(cfg.model, data.channels, data.image_size, data.num_classes)
    unflatten_into(model, np.array(flat_model, dtype=np.float32))  # a writable copy: arrays from Ray's store are read-only
    probe, aux = probe_indices(len(data.train_y))
    x_probe = to_tensor(data.train_x[probe], data.mean, data.std)
    x_aux = to_tensor(data.train_x[aux], data.mean, data.std)
    rows = [
        r
        for spec in (specs or [SmashedSpec.from_config(cfg)])
        for r in measure_leakage(model, sorted(splits), x_probe, x_aux, spec, cfg.seed, cfg.batch_size)
    ]
    return pd.DataFrame([dataclasses.asdict(r) for r in rows])


def write_privacy_csv(cfg, flat_model: np.ndarray, out: str, splits: list[int]) -> pd.DataFrame:
    """Measure the run's final model at `splits`; write out/privacy.csv and the model itself, out/final_model.npy.

    The model file (flat float32, `training.flatten` order) lets anyone re-measure it,
    e.g. at other noise levels (benchmarks/privacy.py does).
    """
    table = leakage_table(cfg, flat_model, splits)
    os.makedirs(out, exist_ok=True)
    table.to_csv(os.path.join(out, "privacy.csv"), index=False)
    np.save(os.path.join(out, "final_model.npy"), np.asarray(flat_model, dtype=np.float32))
    return table


def report_privacy(cfg, plans: pd.DataFrame, final_model, out: str, splits: list[int] | None, log=print) -> pd.DataFrame | None:
    """The run's privacy.csv, if it has one: `run_experiment` calls this after the last round.

    `splits` None: a ComDML run whose smashed data was protected or compressed
    (any --smashed-* option set) is measured at every split its plans used; otherwise
    nothing is written.  A list (benchmarks/privacy.py): always, at those splits.
    `final_model()` fetches the final model's flat vector (agent 0's) only when needed.
    """
    if splits is None:
        if cfg.algorithm != "comdml" or SmashedSpec.from_config(cfg).is_plain or plans.empty:
            return None
        splits = sorted({int(m) for m in plans.loc[plans["partner"] >= 0, "split"]})
    if not splits:
        return None
    table = write_privacy_csv(cfg, final_model(), out, splits)
    log(format_privacy(table))
    return table


def format_privacy(t: pd.DataFrame) -> str:
    lines = [
        "leakage of the smashed data (fixed 512 training images; dCor 1 = a copy of x, 0 = independent; "
        "MSE of a decoder that learned nothing = mean-image MSE):",
        f"  {'split':>5} {'z':>14} {'dtype':>7} {'SIGMA':>5} {'dCor':>6} {'decoder MSE':>11} {'mean-image MSE':>14}",
    ]
    for r in t.itertuples():
        lines.append(
            f"  {r.split:5d} {r.cut_shape:>14} {r.dtype:>7} {r.sigma:5.2f} {r.dcor:6.3f} {r.recon_mse:11.4f} {r.mean_image_mse:14.4f}"
        )
    return "\n".join(lines)
