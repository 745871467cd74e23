import gzip
import struct

import numpy as np
import pytest

from harness.spec.data import BUNDLED, FILES, batch_schedule, load_mnist, make_subset, read_idx, write_idx
from harness.errors import InputError


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_idx_round_trip_raw_and_gzip(tmp_path):
    a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    for name in ("x-idx3-ubyte", "x-idx3-ubyte.gz"):
        write_idx(tmp_path / name, a)
        assert np.array_equal(read_idx(tmp_path / name, ndim=3), a)
    assert (tmp_path / "x-idx3-ubyte.gz").read_bytes()[:2] == b"\x1f\x8b"


@pytest.mark.parametrize("mutate, message", [
    (lambda raw: b"\x01" + raw[1:], "bad IDX magic 01000803"),
    (lambda raw: raw[:2] + b"\x07" + raw[3:], "bad IDX magic"),
    (lambda raw: raw[:-5], "truncated: 1579 bytes, expected 1584 for shape 2x28x28"),
    (lambda raw: raw + b"\x00", "has trailing bytes"),
    (lambda raw: raw[:6], "truncated IDX header"),
    (lambda raw: raw[:3], "too short"),
])
def test_bad_idx_says_what_is_wrong(tmp_path, mutate, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(mutate(idx_bytes(np.zeros((2, 28, 28), np.uint8))))
    with pytest.raises(InputError) as e:
        read_idx(path, ndim=3)
    assert str(path) in str(e.value) and message in str(e.value)


def test_wrong_dimensions(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros((4, 3), np.uint8)))
    with pytest.raises(InputError, match="2 dimensions, expected 1"):
        read_idx(path, ndim=1)


def test_gzip_name_without_gzip_and_corrupt_gzip(tmp_path):
    fake = tmp_path / "a.gz"
    fake.write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(InputError, match="named .gz but is not gzip"):
        read_idx(fake)
    broken = tmp_path / "b.gz"
    broken.write_bytes(gzip.compress(idx_bytes(np.zeros(3000, np.uint8)))[:-20])
    with pytest.raises(InputError, match="gzip data is corrupt or truncated"):
        read_idx(broken)


def test_label_count_must_match_images(tmp_path):
    make_subset(BUNDLED, tmp_path, 50, 20)
    write_idx(tmp_path / (FILES["train_labels"] + ".gz"), np.zeros(49, np.uint8))
    with pytest.raises(InputError, match="50 train images but 49 train labels"):
        load_mnist(tmp_path)


def test_labels_must_be_digits(tmp_path):
    make_subset(BUNDLED, tmp_path, 10, 10)
    write_idx(tmp_path / (FILES["test_labels"] + ".gz"), np.array([1, 2, 12] + [0] * 7, np.uint8))
    with pytest.raises(InputError, match="label 12 at record 2"):
        load_mnist(tmp_path)


def test_missing_file_is_named(tmp_path):
    make_subset(BUNDLED, tmp_path, 10, 10)
    (tmp_path / (FILES["test_images"] + ".gz")).unlink()
    with pytest.raises(InputError, match="no t10k-images-idx3-ubyte"):
        load_mnist(tmp_path)


def test_bundled_subset_is_real_mnist(mnist, shared_mnist_dir):
    full = load_mnist(shared_mnist_dir)
    assert full.train_images.shape == (60000, 28, 28) and full.test_images.shape == (10000, 28, 28)
    n, t = len(mnist.train_images), len(mnist.test_images)
    assert (n, t) == (4096, 1024)
    assert np.array_equal(mnist.train_images, full.train_images[:n])
    assert np.array_equal(mnist.train_labels, full.train_labels[:n])
    assert np.array_equal(mnist.test_images, full.test_images[:t])
    assert np.array_equal(mnist.test_labels, full.test_labels[:t])


def test_subset_command_is_reproducible(tmp_path, shared_mnist_dir):
    make_subset(shared_mnist_dir, tmp_path, 4096, 1024)
    for stem in FILES.values():
        assert (tmp_path / f"{stem}.gz").read_bytes() == (BUNDLED / f"{stem}.gz").read_bytes()


def test_batch_schedule_is_seeded_permutations():
    s = batch_schedule(1000, 64, 40, seed=3)
    assert s.shape == (40, 64)
    assert np.array_equal(s, batch_schedule(1000, 64, 40, seed=3))
    assert not np.array_equal(s, batch_schedule(1000, 64, 40, seed=4))
    per_epoch = 1000 // 64  # 15 full batches, the rest dropped
    first_epoch = s[:per_epoch].ravel()
    assert len(set(first_epoch.tolist())) == per_epoch * 64  # no repeats within an epoch
    assert not np.array_equal(s[:per_epoch], s[per_epoch:2 * per_epoch])  # a fresh order each epoch
    with pytest.raises(InputError, match="batch size 2000 is larger than the 1000"):
        batch_schedule(1000, 2000, 1, 0)
