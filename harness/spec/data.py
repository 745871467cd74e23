"""MNIST from IDX files (gzip or raw), the bundled subset, and the seeded batch schedule."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED = REPO_ROOT / "fixtures" / "mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"{path}: gzip data is corrupt or truncated ({e})") from None
    if path.suffix == ".gz":
        raise InputError(f"{path}: named .gz but is not gzip (first bytes {raw[:4].hex()}, gzip starts 1f8b)")
    return raw


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file, checking magic, dimensions and length; say exactly what is wrong."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise InputError(f"{path}: {len(raw)} bytes is too short for an IDX header (4-byte magic)")
    zero, code, dims = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in IDX_TYPES:
        raise InputError(f"{path}: bad IDX magic {raw[:4].hex()}; expected 0000 then a type byte "
                         f"(08 for unsigned bytes) and the number of dimensions")
    if ndim is not None and dims != ndim:
        raise InputError(f"{path}: IDX file has {dims} dimensions, expected {ndim}")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise InputError(f"{path}: truncated IDX header: {len(raw)} bytes, need {header} for {dims} dimensions")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    dtype = np.dtype(IDX_TYPES[code])
    expected = header + math.prod(shape) * dtype.itemsize  # Python ints: 2^32-sized dimensions do not wrap
    if math.prod(d for d in shape if d) * dtype.itemsize >= 2**63:  # numpy cannot shape even an empty array so
        raise InputError(f"{path}: dimensions {'x'.join(map(str, shape))} are too large for any array")
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise InputError(f"{path}: {what}: {len(raw)} bytes, expected {expected} for shape "
                         f"{'x'.join(map(str, shape))} of {dtype.name}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise InputError(f"{directory}: no {stem} or {stem}.gz (the four standard MNIST file names are expected)")


@dataclass(frozen=True)
class Mnist:
    """Images (n, rows, cols) uint8 (28x28 for MNIST) and labels (n,) uint8 for the training and test sets."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    @property
    def pixels(self) -> int:
        """Pixels per image: 784 for MNIST."""
        return int(np.prod(self.train_images.shape[1:]))


def load_mnist(directory: str | Path | None = None) -> Mnist:
    """Load the four standard files from `directory`, or the bundled subset when None."""
    directory = Path(directory) if directory is not None else BUNDLED
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory of MNIST files")
    arrays = {}
    for key, stem in FILES.items():
        path = _find(directory, stem)
        arr = read_idx(path, ndim=3 if key.endswith("images") else 1)
        if arr.dtype != np.uint8:
            raise InputError(f"{path}: expected unsigned bytes (IDX type 08), got {arr.dtype}")
        if key.endswith("images") and min(arr.shape[1:]) < 1:
            raise InputError(f"{path}: images are {arr.shape[1]}x{arr.shape[2]}, expected at least 1x1 pixels")
        if key.endswith("labels") and arr.size and arr.max() > 9:
            bad = int(np.argmax(arr > 9))
            raise InputError(f"{path}: label {arr[bad]} at record {bad} is not a digit 0-9")
        arrays[key] = arr
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise InputError(f"{directory}: training images are {'x'.join(map(str, arrays['train_images'].shape[1:]))}, "
                         f"test images {'x'.join(map(str, arrays['test_images'].shape[1:]))}: expected one size")
    for part in ("train", "test"):
        n_img, n_lab = len(arrays[f"{part}_images"]), len(arrays[f"{part}_labels"])
        if n_img != n_lab:
            raise InputError(f"{directory}: {n_img} {part} images but {n_lab} {part} labels")
    return Mnist(**arrays, source=str(directory))


def batch_schedule(n_train: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """Training-set indices of every step's batch, (steps, batch_size).

    Each epoch is a fresh permutation from the seed; its last partial batch is dropped.
    """
    if batch_size > n_train:
        raise InputError(f"batch size {batch_size} is larger than the {n_train} training images")
    rng = np.random.default_rng([seed, 1])  # stream 1: batches (stream 0 is parameter init)
    per_epoch = n_train // batch_size
    out = np.empty((steps, batch_size), dtype=np.int64)
    for step in range(steps):
        if step % per_epoch == 0:
            order = rng.permutation(n_train)
        k = step % per_epoch
        out[step] = order[k * batch_size:(k + 1) * batch_size]
    return out


def dropout_masks(seed: int, layer: int, width: int, batch_size: int, p: float, first: int, last: int) -> np.ndarray:
    """The keep masks of hidden layer `layer` (1-based) for steps first..last, (steps, batch_size, width) uint8:
    1 keeps a unit, 0 drops it, each unit kept with probability 1 - p. Step s's mask comes from its own
    stream [seed, 2, layer, s], so a replay of steps 40..49 hands out exactly the masks the full run did."""
    out = np.empty((last + 1 - first, batch_size, width), dtype=np.uint8)
    for i, step in enumerate(range(first, last + 1)):
        out[i] = np.random.default_rng([seed, 2, layer, step]).random((batch_size, width)) >= p
    return out


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write uint8 data as IDX; gzip (with a fixed timestamp, so bytes are reproducible) for .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0) if path.suffix == ".gz" else raw)


def make_subset(source: str | Path, target: str | Path, n_train: int, n_test: int) -> Mnist:
    """The first n_train training and n_test test images of `source`, written to `target`."""
    full = load_mnist(source)
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    parts = {"train_images": full.train_images[:n_train], "train_labels": full.train_labels[:n_train],
             "test_images": full.test_images[:n_test], "test_labels": full.test_labels[:n_test]}
    for key, stem in FILES.items():
        write_idx(target / f"{stem}.gz", parts[key])
    return load_mnist(target)


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m harness.spec.data", description="MNIST file tools")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("subset", help="write the first N training and test images of SRC to DST")
    s.add_argument("source")
    s.add_argument("target")
    s.add_argument("--train", type=int, default=4096)
    s.add_argument("--test", type=int, default=1024)
    args = p.parse_args(argv)
    try:
        subset = make_subset(args.source, args.target, args.train, args.test)
    except InputError as e:
        print(f"error: {e}")
        return 2
    print(f"{args.target}: {len(subset.train_images)} training and {len(subset.test_images)} test images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
