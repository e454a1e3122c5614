"""runtime.data: dataset readers on small files the tests write, splits, batches, augments."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from runtime import data


def write_idx(path, arr: np.ndarray, code: int = 0x08, compress: bool = False) -> None:
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    blob = head + arr.astype(">u1" if code == 0x08 else ">f4").tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(blob)


@pytest.mark.parametrize("compress", [False, True])
def test_read_mnist_idx(tmp_path, compress):
    r = np.random.default_rng(0)
    imgs = r.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = r.integers(0, 10, 5, dtype=np.uint8)
    write_idx(tmp_path / "x.idx", imgs, compress=compress)
    write_idx(tmp_path / "y.idx", labels, compress=compress)
    x, y = data.read_mnist_idx(str(tmp_path / "x.idx"), str(tmp_path / "y.idx"))
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0] * 255, imgs)
    np.testing.assert_array_equal(y, labels)


def test_read_mnist_idx_rejects_bad_files(tmp_path):
    write_idx(tmp_path / "x.idx", np.zeros((3, 4, 4), np.uint8))
    write_idx(tmp_path / "y.idx", np.zeros(2, np.uint8))
    with pytest.raises(data.DataError, match="3 images but .* 2 labels"):
        data.read_mnist_idx(str(tmp_path / "x.idx"), str(tmp_path / "y.idx"))
    blob = (tmp_path / "x.idx").read_bytes()
    (tmp_path / "cut.idx").write_bytes(blob[:-5])
    with pytest.raises(data.DataError, match="truncated or corrupt"):
        data.read_mnist_idx(str(tmp_path / "cut.idx"), str(tmp_path / "y.idx"))
    (tmp_path / "junk.idx").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(data.DataError, match="not an IDX file"):
        data.read_mnist_idx(str(tmp_path / "junk.idx"), str(tmp_path / "y.idx"))
    with pytest.raises(FileNotFoundError):
        data.read_mnist_idx(str(tmp_path / "missing"), str(tmp_path / "y.idx"))


def test_read_cifar10_bin(tmp_path):
    r = np.random.default_rng(1)
    files, want_x, want_y = [], [], []
    for k in range(2):
        labels = r.integers(0, 10, 3, dtype=np.uint8)
        pix = r.integers(0, 256, (3, 3 * 32 * 32), dtype=np.uint8)
        p = tmp_path / f"data_batch_{k}.bin"
        p.write_bytes(np.concatenate([labels[:, None], pix], axis=1).tobytes())
        files.append(str(p))
        want_x.append(pix.reshape(3, 3, 32, 32))
        want_y.append(labels)
    x, y = data.read_cifar10_bin(*files)
    assert x.shape == (6, 3, 32, 32)
    np.testing.assert_allclose(x * 255, np.concatenate(want_x))
    np.testing.assert_array_equal(y, np.concatenate(want_y))
    (tmp_path / "bad.bin").write_bytes(b"\x01" * 100)
    with pytest.raises(data.DataError, match="whole number of CIFAR-10 records"):
        data.read_cifar10_bin(str(tmp_path / "bad.bin"))


def test_load_digits_and_stratified_split():
    x, y = data.load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    xtr, xte, ytr, yte = data.stratified_split(x, y, 0.2, seed=0)
    assert len(xtr) + len(xte) == 1797 and abs(len(xte) - 0.2 * 1797) < 10
    for c in range(10):  # each class keeps its share
        assert abs((yte == c).sum() - 0.2 * (y == c).sum()) <= 1
    again = data.stratified_split(x, y, 0.2, seed=0)
    np.testing.assert_array_equal(again[3], yte)
    other = data.stratified_split(x, y, 0.2, seed=1)
    assert not np.array_equal(other[1], xte)


def test_batches_cover_the_data_once_per_epoch():
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10)
    got = list(data.batches(x, y, 3, np.random.default_rng(0)))
    assert [len(b[1]) for b in got] == [3, 3, 3]
    seen = np.concatenate([b[1] for b in got])
    assert len(set(seen)) == 9
    for xb, yb in got:
        np.testing.assert_array_equal(xb[:, 0], yb)
    all_ = list(data.batches(x, y, 4, np.random.default_rng(0), shuffle=False, drop_last=False))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in all_]), y)


def test_augmentations():
    r = np.random.default_rng(2)
    x = r.random((16, 2, 5, 6)).astype(np.float32)
    flipped = data.random_flip(1.0)(x, r)
    np.testing.assert_array_equal(flipped, x[..., ::-1])
    np.testing.assert_array_equal(data.random_flip(0.0)(x, r), x)
    shifted = data.random_shift(1)(x, np.random.default_rng(3))
    assert shifted.shape == x.shape
    for i in range(len(x)):  # each output is the input moved by at most one pixel
        pad = np.pad(x[i], ((0, 0), (1, 1), (1, 1)))
        assert any(np.array_equal(shifted[i], pad[:, a:a + 5, b:b + 6])
                   for a in range(3) for b in range(3))
    crop = data.random_crop(2)(x, np.random.default_rng(4))
    assert crop.shape == x.shape
    both = data.compose(data.random_flip(1.0), data.random_crop(0))(x, r)
    np.testing.assert_array_equal(both, x[..., ::-1])
