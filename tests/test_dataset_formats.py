"""CIFAR-10, CIFAR-100 and CINIC-10 end to end, from tiny copies written in each real on-disk format.

None of the three can be downloaded in CI, so each test writes a few images in the layout the
real archive unpacks to (the pickled "python version" batches of `cifar-10-batches-py` and
`cifar-100-python`; CINIC-10's class folders of PNGs), checks the loader reads the pixels and
labels back exactly, then runs `benchmarks/run.py`'s flags for one round on 4 agents (ComDML
with a measured profile on CIFAR-10, so the 3-channel 32-pixel path offloads too).
A missing dataset is one sentence and exit code 2, before Ray starts; a broken batch one sentence.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.run import config_from_args, main
from comdml_ray.experiment import run_experiment
from comdml_ray.learning.data import DatasetError, load_dataset
from tests.conftest import quiet

RNG = np.random.default_rng(17)


def _pickle(path: Path, batch: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(batch, f)


def _images(n: int) -> np.ndarray:
    return RNG.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 8, test: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """cifar-10-batches-py: data_batch_1..5 and test_batch ({b'data': (N, 3072) uint8 rows of R, G, B planes, b'labels': list}), batches.meta."""
    folder = root / "cifar-10-batches-py"
    xs, ys = [], []
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        x, y = _images(n), RNG.integers(0, 10, n).tolist()
        _pickle(folder / name, {b"batch_label": name.encode(), b"labels": y, b"data": x.reshape(n, -1), b"filenames": [b"x.png"] * n})
        xs.append(x)
        ys.append(y)
    _pickle(
        folder / "batches.meta",
        {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072, b"num_cases_per_batch": per_batch},
    )
    return np.concatenate(xs[:5]), np.concatenate(ys[:5])


def write_cifar100(root: Path, train: int = 40, test: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """cifar-100-python: train and test ({b'data', b'fine_labels', b'coarse_labels'}), meta."""
    folder = root / "cifar-100-python"
    out = None
    for name, n in (("train", train), ("test", test)):
        x, fine = _images(n), RNG.integers(0, 100, n).tolist()
        _pickle(
            folder / name,
            {
                b"filenames": [b"x.png"] * n,
                b"batch_label": name.encode(),
                b"fine_labels": fine,
                b"coarse_labels": [f // 5 for f in fine],
                b"data": x.reshape(n, -1),
            },
        )
        out = out or (x, np.array(fine))
    _pickle(
        folder / "meta",
        {b"fine_label_names": [f"c{i}".encode() for i in range(100)], b"coarse_label_names": [f"s{i}".encode() for i in range(20)]},
    )
    return out


def write_cinic10(root: Path, train_per_class: int = 2, test_per_class: int = 1) -> None:
    """cinic10/{train,test}/<class>/*.png (CINIC-10 also has a valid/ split, which the loader ignores)."""
    from PIL import Image

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for split, n in (("train", train_per_class), ("valid", 1), ("test", test_per_class)):
        for c in classes:
            (root / "cinic10" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    root / "cinic10" / split / c / f"cifar10-{split}-{i}.png"
                )


def test_cifar_pickles_read_back_exactly(tmp_path: Path) -> None:
    x10, y10 = write_cifar10(tmp_path)
    x100, y100 = write_cifar100(tmp_path)
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.train_x.shape == (40, 3, 32, 32) and ds.test_x.shape == (12, 3, 32, 32) and ds.num_classes == 10
    assert np.array_equal(ds.train_x, x10) and np.array_equal(ds.train_y, y10)
    ds = load_dataset("cifar100", str(tmp_path))
    assert ds.num_classes == 100 and np.array_equal(ds.train_x, x100) and np.array_equal(ds.train_y, y100)


def test_truncated_cifar_batch_is_one_sentence(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", str(tmp_path))
    msg = str(err.value)
    assert "data_batch_3" in msg and "fresh copy" in msg and msg.count(". ") == 0


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "cinic10"])
def test_missing_dataset_exits_2_before_ray_starts(tmp_path: Path, name: str, capsys) -> None:
    import ray

    assert main(["--dataset", name, "--data-dir", str(tmp_path), "--agents", "4", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(tmp_path) in err and len(err.splitlines()) == 1
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    "name,extra",
    [
        ("cifar10", ["--algorithm", "comdml", "--profile", "measure"]),
        ("cifar100", ["--rounds", "2", "--eval-samples", "5"]),
        ("cinic10", ["--partition", "dirichlet"]),
    ],
)
def test_one_round_on_4_agents(ray_local, tmp_path: Path, name: str, extra: list[str]) -> None:
    {"cifar10": write_cifar10, "cifar100": write_cifar100, "cinic10": write_cinic10}[name](tmp_path)
    out = tmp_path / "out"
    cfg = config_from_args(
        [
            "--dataset",
            name,
            "--data-dir",
            str(tmp_path),
            "--agents",
            "4",
            "--rounds",
            "1",
            "--batch-size",
            "4",
            "--no-progress",
            "--out",
            str(out),
            *extra,
        ]
    )
    summary = run_experiment(cfg.validate(), log=quiet, keep_ray=True)
    rounds = pd.read_csv(out / "rounds.csv")
    test_size = {"cifar10": 12, "cifar100": 12, "cinic10": 10}[name]
    assert len(rounds) == cfg.rounds and np.isfinite(rounds["train_loss"]).all()
    # Rounds before the last on the fixed subset (CIFAR-100: 5 images), the last on the whole test set.
    assert rounds["eval_images"].tolist() == [5] * (cfg.rounds - 1) + [test_size] and summary["final_accuracy_images"] == test_size
    assert (rounds["eval_wall_s"] > 0).all() and 0 < summary["eval_share"] < 1
    assert 0.0 <= summary["final_accuracy"] <= 1.0
    if name == "cifar10":
        assert summary["split_profile"] == "measure" and rounds["pairs"].iloc[0] >= 1  # the slow agents offloaded
