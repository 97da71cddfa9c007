"""Smashed data (no Ray): encode/decode round trips, D[m] = the measured encoded size, noise and clipping, dCor, flags."""

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.run import config_from_args
from comdml_ray.config import ConfigError, RunConfig
from comdml_ray.learning import leakage
from comdml_ray.learning.costmodel import SplitProfile, profile_flops
from comdml_ray.learning.leakage import Decoder, distance_correlation
from comdml_ray.learning.models import build_model
from comdml_ray.learning.smashed import SmashedEncoder, SmashedSpec, encode, encoded_nbytes, protect, to_host
from comdml_ray.learning.training import OptimConfig, SuffixTrainer, TrainStats, flatten, make_sgd, train_prefix

torch.set_num_threads(1)


def activations(seed: int = 0, shape=(8, 5, 6, 6)) -> torch.Tensor:
    """Channels on different scales and offsets, one constant channel, one all-negative."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g) * torch.tensor([1.0, 100.0, 1e-3, 0.0, 3.0]).view(1, -1, 1, 1)
    z = z + torch.tensor([0.0, 50.0, -2.0, 7.25, -30.0]).view(1, -1, 1, 1)
    return torch.relu(z) if seed % 2 else z


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_int8_round_trip_within_half_a_step_per_channel(seed):
    z = activations(seed)
    y = torch.arange(8) % 3
    b = encode(z, y, "int8")
    assert b.codes.dtype == np.int8 and b.scale.shape == (5,) and b.zero_point.shape == (5,)
    err = np.abs(b.decode() - z.numpy()).max(axis=(0, 2, 3))  # (C,)
    step = b.scale
    # half a quantisation step, plus float32 rounding of the affine map (relative to the channel's magnitude)
    mag = np.abs(z.numpy()).max(axis=(0, 2, 3))
    assert (err <= step / 2 + 1e-6 * (1 + mag)).all(), (err, step / 2)
    assert np.array_equal(b.y, y.numpy()) and b.y.dtype == np.int64  # labels exact
    # the codes use the whole range on every non-constant channel
    assert b.codes.min() == -128 and b.codes.max() == 127


def test_float16_and_float32_round_trips():
    z = activations(0)
    y = torch.arange(8)
    f32 = encode(z, y, "float32")
    assert np.array_equal(f32.decode(), z.numpy())
    f16 = encode(z, y, "float16")
    assert f16.codes.dtype == np.float16
    rel = np.abs(f16.decode() - z.numpy()) <= np.abs(z.numpy()) * 2.0**-11 + 2.0**-24
    assert rel.all()
    big = encode(torch.full((2, 1, 2, 2), 1e6), torch.zeros(2), "float16")
    assert np.isfinite(big.decode()).all()  # clamped to float16's range, not inf


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_nbytes_matches_shapes(dtype):
    z = torch.randn(32, 16, 14, 14)
    b = encode(z, torch.zeros(32, dtype=torch.int64), dtype)
    assert b.nbytes == encoded_nbytes(32, (16, 14, 14), dtype)


def test_int8_is_about_four_times_smaller():
    f32, i8 = encoded_nbytes(32, (16, 14, 14), "float32"), encoded_nbytes(32, (16, 14, 14), "int8")
    assert f32 / i8 >= 3.5


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_profile_D_equals_measured_encoded_size(dtype):
    """D[m] of the split profile is exactly what train_prefix puts in the store per full batch."""
    torch.manual_seed(0)
    model = build_model("cnn", 1, 28, 10)
    prof = profile_flops(model, (1, 28, 28), 32, 10.0, dtype)
    assert prof.smashed_dtype == dtype
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(70, 1, 28, 28, generator=g), torch.randint(0, 10, (70,), generator=g)
    batches = list(torch.arange(70).split(32))  # 32, 32 and a short 6
    enc = SmashedEncoder(SmashedSpec(dtype, noise=0.1), seed=3)
    for row, m in enumerate(prof.split_ids):
        aux = model.make_aux_head(m)
        optim = make_sgd(list(model.prefix(m).parameters()) + list(aux.parameters()), OptimConfig(0.01, 0.0, 0.0))
        sent = [b for chunk in train_prefix(model.prefix(m), aux, x, y, batches, optim, 2, TrainStats(), enc) for b in chunk]
        assert [len(b) for b in sent] == [32, 32, 6]
        assert sent[0].nbytes == sent[1].nbytes == prof.bytes_per_batch[row]
        assert sent[2].nbytes == encoded_nbytes(6, model.cut_shape(m), dtype)


def test_profile_from_csv_takes_the_runs_dtype(tmp_path):
    model = build_model("cnn", 1, 28, 10)
    f32 = profile_flops(model, (1, 28, 28), 32, 10.0)
    f32.to_csv(tmp_path / "profile.csv")
    loaded = SplitProfile.from_csv(str(tmp_path / "profile.csv"))
    assert loaded.smashed_dtype == "float32" and loaded.bytes_per_batch == f32.bytes_per_batch
    i8 = loaded.with_smashed_dtype(model, (1, 28, 28), "int8")
    assert i8.bytes_per_batch == profile_flops(model, (1, 28, 28), 32, 10.0, "int8").bytes_per_batch
    assert i8.rho_s == loaded.rho_s and i8.base_sec_per_batch == loaded.base_sec_per_batch
    assert all(a / b >= 3.5 for a, b in zip(f32.bytes_per_batch, i8.bytes_per_batch, strict=True))


def test_noise_std_is_sigma_times_channel_std():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 3, 8, 8, generator=g) * torch.tensor([0.5, 2.0, 10.0]).view(1, -1, 1, 1)
    out = protect(z, SmashedSpec(noise=0.3), torch.Generator().manual_seed(1))
    added = (out - z).std(dim=(0, 2, 3))
    want = 0.3 * z.std(dim=(0, 2, 3), correction=0)
    assert torch.allclose(added, want, rtol=0.05)
    # seeded: the same stream gives the same noise
    again = protect(z, SmashedSpec(noise=0.3), torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_clip_bounds_each_samples_norm_before_noise():
    z = activations(1, shape=(16, 5, 6, 6))
    out = protect(z, SmashedSpec(clip=2.0), None)
    norms = out.flatten(1).norm(dim=1)
    assert (norms <= 2.0 + 1e-5).all()
    small = z / z.flatten(1).norm(dim=1).max() * 0.5  # already inside the bound: untouched
    assert torch.equal(protect(small, SmashedSpec(clip=2.0), None), small)


def test_plain_spec_sends_the_activations_bit_for_bit():
    z = activations(0)
    b = to_host([SmashedEncoder(SmashedSpec(), seed=0)(z, torch.zeros(8, dtype=torch.int64))])[0]
    assert np.array_equal(b.decode(), z.numpy()) and b.scale is None


def test_suffix_trainer_decodes_int8():
    torch.manual_seed(0)
    model = build_model("cnn", 1, 28, 10)
    z = model.prefix(1)(torch.randn(8, 1, 28, 28)).detach()
    tr = SuffixTrainer(model.suffix(1), OptimConfig(0.1, 0.9, 0.0), torch.device("cpu"))
    tr.train_chunk([encode(z, torch.arange(8) % 10, "int8")])  # the path a helper takes
    assert np.isfinite(tr.stats.loss_sum) and tr.stats.batches == 1 and tr.stats.samples == 8


def test_dcor_copy_is_one_and_independent_noise_near_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 28, 28, generator=g)
    assert distance_correlation(x, x) == pytest.approx(1.0, abs=1e-9)
    assert distance_correlation(x, 3 * x + 1) == pytest.approx(1.0, abs=1e-9)  # rescaled copy: still all of x
    noise = torch.randn(256, 16, 14, 14, generator=g)  # independent, higher-dimensional
    assert distance_correlation(x, noise) < 0.1
    # a noisy copy lies in between
    mid = distance_correlation(x, x + 2 * torch.randn(x.shape, generator=g))
    assert 0.1 < mid < 1.0


def test_decoder_output_has_the_image_shape():
    for cut in [(16, 14, 14), (32, 7, 7), (64, 8, 8)]:
        dec = Decoder(cut, (1, 28, 28))
        assert dec(torch.zeros(2, *cut)).shape == (2, 1, 28, 28)


def test_config_and_flags():
    cfg = config_from_args(["--smashed-dtype", "int8", "--smashed-noise", "0.3", "--smashed-clip", "50"])
    assert (cfg.smashed_dtype, cfg.smashed_noise, cfg.smashed_clip) == ("int8", 0.3, 50.0)
    assert SmashedSpec.from_config(cfg.validate()) == SmashedSpec("int8", 0.3, 50.0)
    assert SmashedSpec.from_config(RunConfig()).is_plain
    for bad, word in [
        (dict(smashed_dtype="int4"), "--smashed-dtype"),
        (dict(smashed_noise=-1.0), "--smashed-noise"),
        (dict(smashed_clip=0.0), "--smashed-clip"),
        (dict(smashed_noise=float("nan")), "--smashed-noise"),
    ]:
        with pytest.raises(ConfigError, match=word):
            RunConfig(**bad).validate()


def test_privacy_csv_of_a_model(tmp_path, monkeypatch):
    """write_privacy_csv end to end on a small probe (the real one: 512 images, 2,048 for the decoder, 12 epochs)."""
    monkeypatch.setattr(leakage, "PROBE_SAMPLES", 64)
    monkeypatch.setattr(leakage, "AUX_SAMPLES", 128)
    monkeypatch.setattr(leakage, "DECODER_EPOCHS", 1)
    cfg = RunConfig(algorithm="comdml", smashed_dtype="int8", smashed_noise=0.3).validate()
    torch.manual_seed(0)
    model = build_model("cnn", 1, 28, 10)
    t = leakage.write_privacy_csv(cfg, flatten(model), str(tmp_path), [2, 1])
    saved = pd.read_csv(tmp_path / "privacy.csv")
    assert saved["split"].tolist() == [1, 2] and (saved["dtype"] == "int8").all() and (saved["sigma"] == 0.3).all()
    assert ((t["dcor"] >= 0) & (t["dcor"] <= 1)).all() and (t["recon_mse"] > 0).all() and (t["mean_image_mse"] > 0).all()
    assert "decoder MSE" in leakage.format_privacy(t)
    assert np.array_equal(np.load(tmp_path / "final_model.npy"), flatten(model))  # the measured model, for re-measuring
