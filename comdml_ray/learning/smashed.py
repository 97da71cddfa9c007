"""Smashed data on the wire: what an offloading agent sends its helper, protected and encoded (no Ray).

Owns
- `SmashedSpec`: the three options (`--smashed-dtype`, `--smashed-noise`, `--smashed-clip`);
- `protect`: what the offloader does to z = prefix(x) before anything leaves it: first
  (optionally) bound each sample's L2 norm, then add Gaussian noise whose std is SIGMA
  times each channel's activation std in this batch;
- `encode` / `SmashedBatch.decode`: float32 (exact), float16, or int8 with a per-channel
  scale and zero point (affine: z ~= scale * (q - zero_point), q in [-128, 127], so the
  error is at most half a quantisation step, scale / 2, per channel); labels always
  travel exact, as int64;
- `SmashedBatch`: one encoded batch, the unit a chunk in the object store is a list of,
  with `nbytes`, the bytes the virtual clock charges;
- `encoded_nbytes`: the same figure from shapes alone, the D[m] of the split profile
  (`costmodel.py`), so the solver plans with what is really sent;
- `SmashedEncoder`: `protect` + `encode_on_device` with one agent's seeded noise stream;
- `DeviceBatch`, `to_host`, `to_device`: an encoded batch stays on the device that made
  it until its chunk leaves (`to_host`: one device-to-host copy per field per chunk),
  and a received chunk crosses to the helper's device in one copy (`to_device`),
  decoded there.  On the CPU neither copies anything.

The prefix and its auxiliary head still train on the clean z (the local loss is the
offloader's own business); only the copy that leaves is protected.  docs/smashed.md
says what these options do and do not protect.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from comdml_ray.config import SMASHED_DTYPES

LABEL_BYTES = 8  # int64 label per sample: labels are never compressed or noised
ITEM_BYTES = {"float32": 4, "float16": 2, "int8": 1}
QPARAM_BYTES = 4  # int8: one float32 scale and one float32 zero point per channel and batch
FP16_MAX = 65504.0  # float16's largest finite value; larger activations are clamped, not turned into inf


@dataclass(frozen=True)
class SmashedSpec:
    dtype: str = "float32"  # one of SMASHED_DTYPES
    noise: float = 0.0  # SIGMA: noise std as a multiple of each channel's activation std (0 = none)
    clip: float | None = None  # bound on each sample's activation L2 norm, applied before the noise (None = none)

    def __post_init__(self) -> None:
        if self.dtype not in SMASHED_DTYPES:
            raise ValueError(f"unknown smashed dtype {self.dtype!r}: choose one of {', '.join(SMASHED_DTYPES)}")

    @staticmethod
    def from_config(cfg) -> SmashedSpec:
        """The spec of a `RunConfig` (duck-typed: anything with the three smashed_* fields)."""
        return SmashedSpec(cfg.smashed_dtype, float(cfg.smashed_noise), cfg.smashed_clip)

    @property
    def is_plain(self) -> bool:
        """True when z leaves exactly as computed: float32, no clip, no noise (the paper's ComDML)."""
        return self.dtype == "float32" and self.noise == 0 and self.clip is None


@dataclass(frozen=True)
class SmashedBatch:
    """One encoded batch of smashed data and its labels, as the helper receives it."""

    codes: np.ndarray  # (B, C_m, H_m, W_m) float32 | float16 | int8
    y: np.ndarray  # (B,) int64, exact
    scale: np.ndarray | None = None  # (C_m,) float32, int8 only: real value of one code step
    zero_point: np.ndarray | None = None  # (C_m,) float32, int8 only: the (fractional) code of 0.0

    @property
    def dtype(self) -> str:
        return str(self.codes.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes on the wire: codes, labels and (int8) the per-channel scale and zero point."""
        n = self.codes.nbytes + self.y.nbytes
        if self.scale is not None:
            n += self.scale.nbytes + self.zero_point.nbytes
        return int(n)

    def __len__(self) -> int:
        return len(self.y)

    def decode(self) -> np.ndarray:
        """The activations as float32, (B, C_m, H_m, W_m)."""
        if self.codes.dtype == np.float32:
            return self.codes
        if self.codes.dtype == np.float16:
            return self.codes.astype(np.float32)
        view = _channel_view(self.codes.ndim)
        return (self.codes.astype(np.float32) - self.zero_point.reshape(view)) * self.scale.reshape(view)


def _channel_view(ndim: int) -> tuple[int, ...]:
    """Shape that broadcasts a (C,) vector over (B, C, ...)."""
    return (1, -1) + (1,) * (ndim - 2)


def _non_channel_dims(ndim: int) -> list[int]:
    return [d for d in range(ndim) if d != 1]


def encoded_nbytes(batch: int, cut_shape: tuple[int, ...], dtype: str) -> int:
    """Bytes of one encoded batch of `batch` samples of shape cut_shape = (C_m, H_m, W_m): D[m]."""
    if dtype not in ITEM_BYTES:
        raise ValueError(f"unknown smashed dtype {dtype!r}: choose one of {', '.join(SMASHED_DTYPES)}")
    n = batch * int(np.prod(cut_shape)) * ITEM_BYTES[dtype] + batch * LABEL_BYTES
    if dtype == "int8":
        n += 2 * cut_shape[0] * QPARAM_BYTES
    return n


def protect(z: torch.Tensor, spec: SmashedSpec, gen: torch.Generator | None = None) -> torch.Tensor:
    """Clip each sample's L2 norm to spec.clip, then add N(0, (SIGMA * channel std)^2) noise; (B, C, ...) -> same.

    The channel std is that of this batch's (clipped) activations, over samples and
    positions.  Noise is drawn on the CPU from `gen` (one seeded stream per agent) so
    a run is reproducible whatever the device.  Returns z itself when there is nothing to do.
    """
    if spec.clip is not None:
        norms = z.detach().flatten(1).norm(dim=1).clamp_min(1e-12)  # (B,)
        factor = (spec.clip / norms).clamp(max=1.0)
        z = z * factor.view(-1, *([1] * (z.dim() - 1)))
    if spec.noise > 0:
        std = z.detach().std(dim=_non_channel_dims(z.dim()), keepdim=True, correction=0)  # (1, C, 1, 1)
        noise = torch.randn(z.shape, generator=gen, dtype=torch.float32).to(device=z.device, dtype=z.dtype)
        z = z + spec.noise * std * noise
    return z


@dataclass(frozen=True)
class DeviceBatch:
    """One encoded batch still on the device that made it (the fields of `SmashedBatch`, as tensors)."""

    codes: torch.Tensor  # (B, C_m, H_m, W_m) float32 | float16 | int8
    y: torch.Tensor  # (B,) int64
    scale: torch.Tensor | None = None  # (C_m,) float32, int8 only
    zero_point: torch.Tensor | None = None  # (C_m,) float32, int8 only


def encode_on_device(z: torch.Tensor, y: torch.Tensor, dtype: str) -> DeviceBatch:
    """Encode a batch (B, C, ...) and its labels (B,) on z's device; `to_host` turns a chunk of them into wire batches."""
    z = z.detach().to(torch.float32)
    labels = y.detach().to(torch.int64)
    if dtype == "float32":
        return DeviceBatch(z, labels)
    if dtype == "float16":
        return DeviceBatch(z.clamp(-FP16_MAX, FP16_MAX).to(torch.float16), labels)
    if dtype != "int8":
        raise ValueError(f"unknown smashed dtype {dtype!r}: choose one of {', '.join(SMASHED_DTYPES)}")
    dims = _non_channel_dims(z.dim())
    lo, hi = z.amin(dim=dims), z.amax(dim=dims)  # (C,)
    # 255 steps span [lo, hi]; a constant channel gets step 1 (its one value is still exact up to rounding).
    scale = torch.where(hi > lo, (hi - lo) / 255.0, torch.ones_like(lo))
    zero_point = -128.0 - lo / scale  # code of 0.0; fractional, so lo maps exactly to -128 and hi to 127
    view = _channel_view(z.dim())
    q = torch.round(z / scale.view(view) + zero_point.view(view)).clamp_(-128, 127).to(torch.int8)
    return DeviceBatch(q, labels, scale, zero_point)


def to_host(chunk: list[DeviceBatch]) -> list[SmashedBatch]:
    """A chunk of encoded batches as wire batches (numpy): one device-to-host copy per field for the whole chunk.

    On the CPU nothing is copied (the arrays share the tensors' memory, as before); on
    a GPU the batches' codes (and labels, and int8's scales) are concatenated on the
    device and copied once, so a chunk of `--chunk-batches` batches waits for the
    device 2 (int8: 4) times instead of that many times per batch.
    """
    if all(b.codes.device.type == "cpu" for b in chunk):
        return [
            SmashedBatch(
                b.codes.numpy(),
                b.y.numpy(),
                None if b.scale is None else b.scale.numpy(),
                None if b.zero_point is None else b.zero_point.numpy(),
            )
            for b in chunk
        ]
    return chunk_to_host(chunk)


def chunk_to_host(chunk: list[DeviceBatch]) -> list[SmashedBatch]:
    """`to_host` of a GPU's chunk: each field concatenated where it is, copied once, then cut back into batches (views)."""
    if not chunk:
        return []
    cuts = np.cumsum([len(b.y) for b in chunk])[:-1]
    codes = np.split(torch.cat([b.codes for b in chunk]).cpu().numpy(), cuts)
    labels = np.split(torch.cat([b.y for b in chunk]).cpu().numpy(), cuts)
    if chunk[0].scale is None:
        return [SmashedBatch(c, y) for c, y in zip(codes, labels, strict=True)]
    q = torch.stack([torch.stack([b.scale, b.zero_point]) for b in chunk]).cpu().numpy()  # (batches, 2, C)
    return [SmashedBatch(c, y, q[i, 0], q[i, 1]) for i, (c, y) in enumerate(zip(codes, labels, strict=True))]


def to_device(chunk: list[SmashedBatch], device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A received chunk as decoded (z float32 (B, C_m, H_m, W_m), y int64 (B,)) pairs on `device`.

    On the CPU each batch is `decode()` viewed as a tensor, as before.  On a GPU the
    chunk's codes and labels cross in one host-to-device copy each (int8: and its
    scales), and decoding runs there: the same float32 operations (widening, then
    (q - zero_point) * scale, each rounded once), so the same values.
    """
    if device.type == "cpu":
        return [(torch.from_numpy(b.decode()), torch.from_numpy(b.y)) for b in chunk]
    return chunk_to_device(chunk, device)


def chunk_to_device(chunk: list[SmashedBatch], device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`to_device` for a GPU: each field concatenated on the host, copied once, decoded on the device (tests run it on the CPU)."""
    if not chunk:
        return []
    sizes = [len(b) for b in chunk]
    codes = torch.from_numpy(np.concatenate([b.codes for b in chunk])).to(device).split(sizes)
    labels = torch.from_numpy(np.concatenate([b.y for b in chunk])).to(device).split(sizes)
    if chunk[0].scale is None:
        return [(c.to(torch.float32), y) for c, y in zip(codes, labels, strict=True)]
    q = torch.from_numpy(np.stack([np.stack([b.scale, b.zero_point]) for b in chunk])).to(device)  # (batches, 2, C)
    view = _channel_view(codes[0].dim())
    return [
        (((c.to(torch.float32) - q[i, 1].view(view)) * q[i, 0].view(view)), y) for i, (c, y) in enumerate(zip(codes, labels, strict=True))
    ]


def encode(z: torch.Tensor, y: torch.Tensor, dtype: str) -> SmashedBatch:
    """Encode a batch (B, C, ...) and its labels (B,) for the wire (CPU numpy arrays).

    The encoding runs on z's device, so a GPU agent copies the smaller codes to the host.
    """
    return to_host([encode_on_device(z, y, dtype)])[0]


def noise_seed(seed: int) -> int:
    """Seed of an agent's noise stream: derived from (its seed, a tag), distinct from its data shuffle's."""
    return int(np.random.SeedSequence([seed, 0x5E1D]).generate_state(1, np.uint64)[0] >> 1)


class SmashedEncoder:
    """The offloader's side: protect, then encode, with one seeded noise stream (agent k: seed + k)."""

    def __init__(self, spec: SmashedSpec, seed: int) -> None:
        self.spec = spec
        self.gen = torch.Generator().manual_seed(noise_seed(seed))

    def __call__(self, z: torch.Tensor, y: torch.Tensor) -> DeviceBatch:
        """The batch as it will leave, still on z's device (`to_host` copies a whole chunk at once)."""
        if self.spec.is_plain:
            return encode_on_device(z, y, "float32")
        return encode_on_device(protect(z.detach(), self.spec, self.gen), y, self.spec.dtype)
