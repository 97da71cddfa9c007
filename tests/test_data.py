"""Tests for comdml_ray.learning.data: embedded Fashion-MNIST, dataset errors, CINIC-10 folders, partitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from comdml_ray.learning.data import DATASETS, DatasetError, load_dataset, partition, to_tensor

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fmnist():
    return load_dataset("fashion-mnist")


def test_embedded_fashion_mnist_shapes_and_counts(fmnist) -> None:
    assert fmnist.train_x.shape == (60000, 1, 28, 28) and fmnist.train_x.dtype == np.uint8
    assert fmnist.test_x.shape == (10000, 1, 28, 28) and fmnist.test_x.dtype == np.uint8
    assert fmnist.train_y.dtype == np.int64 and fmnist.test_y.dtype == np.int64
    assert np.bincount(fmnist.train_y).tolist() == [6000] * 10
    assert np.bincount(fmnist.test_y).tolist() == [1000] * 10
    assert (fmnist.num_classes, fmnist.channels, fmnist.image_size) == (10, 1, 28)
    # The published constants fit the embedded copy (train mean 0.2860, std 0.3530).
    x = fmnist.train_x[::10].astype(np.float64) / 255
    assert abs(x.mean() - fmnist.mean[0]) < 0.005 and abs(x.std() - fmnist.std[0]) < 0.005


def test_to_tensor_normalises_per_channel(fmnist) -> None:
    t = to_tensor(fmnist.train_x[::30], fmnist.mean, fmnist.std)  # strided: rows are class-major
    assert t.dtype == torch.float32 and t.shape == (2000, 1, 28, 28)
    assert abs(t.mean().item()) < 0.05 and abs(t.std().item() - 1) < 0.05
    x = np.full((1, 3, 2, 2), 255, dtype=np.uint8)
    out = to_tensor(x, (0.5, 0.0, 1.0), (0.5, 1.0, 0.25))
    assert out[0, :, 0, 0].tolist() == pytest.approx([1.0, 1.0, 0.0])
    with pytest.raises(ValueError):
        to_tensor(x, (0.5,), (0.5,))


def test_unknown_dataset_is_dataset_error() -> None:
    with pytest.raises(DatasetError, match="choose one of"):
        load_dataset("mnist")
    assert "fashion-mnist" in DATASETS


@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_cifar_names_folder_and_flag(tmp_path: Path, name: str, folder: str) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset(name, data_dir=str(tmp_path))
    msg = str(err.value)
    assert "--download" in msg and folder in msg and str(tmp_path) in msg
    assert msg.count(". ") == 0  # one sentence


def test_missing_cinic_names_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"datashare\.ed\.ac\.uk/handle/10283/3192"):
        load_dataset("cinic10", data_dir=str(tmp_path))


@pytest.mark.parametrize("nested", [True, False])
def test_tiny_cinic_image_folder_loads(tmp_path: Path, nested: bool) -> None:
    from PIL import Image

    base = tmp_path / "cinic10" if nested else tmp_path
    rng = np.random.default_rng(0)
    classes = ["airplane", "cat", "truck"]
    for split, per_class in (("train", 3), ("test", 2)):
        for c in classes:
            (base / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(base / split / c / f"{i}.png")
    # CINIC-10 has a few greyscale images: they must come out as 3 channels.
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), mode="L").save(base / "train" / "cat" / "g.png")

    ds = load_dataset("cinic10", data_dir=str(tmp_path))
    assert ds.train_x.shape == (10, 3, 32, 32) and ds.train_x.dtype == np.uint8
    assert ds.test_x.shape == (6, 3, 32, 32)
    assert ds.num_classes == 3 and np.bincount(ds.train_y).tolist() == [3, 4, 3]
    assert np.bincount(ds.test_y).tolist() == [2, 2, 2]
    # Pixels survive the (H, W, C) -> (C, H, W) move.
    first = np.asarray(Image.open(base / "train" / "airplane" / "0.png"))
    assert np.array_equal(ds.train_x[0], first.transpose(2, 0, 1))


# ---- partitions -------------------------------------------------------------------------------

LABELS = np.repeat(np.arange(10), 500)  # 5,000 samples, balanced like the real sets


def _check_cover(shards: list[np.ndarray], n: int) -> None:
    allidx = np.concatenate(shards)
    assert len(allidx) == n and np.array_equal(np.sort(allidx), np.arange(n))
    assert all(s.dtype == np.int64 and np.all(np.diff(s) > 0) for s in shards)  # sorted, no repeats


@pytest.mark.parametrize("num_agents", [1, 7, 100, 5000])
def test_iid_covers_every_index_once_with_even_sizes(num_agents: int) -> None:
    shards = partition(LABELS, num_agents, "iid", seed=3)
    assert len(shards) == num_agents
    _check_cover(shards, len(LABELS))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("alpha", [0.01, 0.1, 1.0, 100.0])
@pytest.mark.parametrize("num_agents", [10, 100])
def test_dirichlet_covers_every_index_and_keeps_min_samples(alpha: float, num_agents: int) -> None:
    shards = partition(LABELS, num_agents, "dirichlet", alpha=alpha, seed=1, min_samples=8)
    assert len(shards) == num_agents
    _check_cover(shards, len(LABELS))
    assert min(len(s) for s in shards) >= 8


def test_dirichlet_min_samples_capped_by_even_share() -> None:
    # 50 samples over 10 agents: nobody can hold 8, so everyone holds at least 5.
    labels = np.repeat(np.arange(5), 10)
    shards = partition(labels, 10, "dirichlet", alpha=0.05, seed=0, min_samples=8)
    _check_cover(shards, 50)
    assert min(len(s) for s in shards) >= 5


def _mean_skew(shards: list[np.ndarray], labels: np.ndarray) -> float:
    """Mean total-variation distance of each agent's label distribution from the global one."""
    global_p = np.bincount(labels) / len(labels)
    tv = []
    for s in shards:
        p = np.bincount(labels[s], minlength=len(global_p)) / len(s)
        tv.append(0.5 * np.abs(p - global_p).sum())
    return float(np.mean(tv))


def test_label_skew_grows_as_alpha_shrinks() -> None:
    skew = {a: _mean_skew(partition(LABELS, 20, "dirichlet", alpha=a, seed=0), LABELS) for a in (100.0, 1.0, 0.1)}
    assert skew[100.0] < skew[1.0] < skew[0.1]
    assert skew[100.0] < 0.15 and skew[0.1] > 0.5
    assert _mean_skew(partition(LABELS, 20, "iid", seed=0), LABELS) < 0.15


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_same_seed_same_partition(scheme: str) -> None:
    a = partition(LABELS, 13, scheme, alpha=0.3, seed=42)
    b = partition(LABELS, 13, scheme, alpha=0.3, seed=42)
    c = partition(LABELS, 13, scheme, alpha=0.3, seed=43)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_agents": 0}, "positive integer"),
        ({"num_agents": -3}, "positive integer"),
        ({"num_agents": 5001}, "more than the 5000"),
        ({"num_agents": 10, "scheme": "pathological"}, "unknown partition scheme"),
        ({"num_agents": 10, "scheme": "dirichlet", "alpha": 0.0}, "alpha must be > 0"),
        ({"num_agents": 10, "scheme": "dirichlet", "alpha": -1.0}, "alpha must be > 0"),
    ],
)
def test_bad_partition_inputs_raise_value_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        partition(LABELS, **kwargs)
