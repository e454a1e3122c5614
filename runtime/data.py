"""Data utilities: datasets, seeded splits, shuffled mini-batches and augmentation.

* ``load_digits()``: scikit-learn's bundled 8x8 handwritten digits (1797 real images,
  no download), as float32 NCHW in [0, 1] with int64 labels.
* ``read_mnist_idx(images, labels)`` and ``read_cifar10_bin(*paths)``: readers for the
  original file formats a user already has on disk (MNIST IDX, optionally gzipped;
  CIFAR-10 binary batches). Nothing is ever downloaded.
* ``stratified_split``: a seeded split that keeps each class's share.
* ``batches``: shuffled mini-batches from a ``numpy.random.Generator``.
* Augmentations are ``f(x_batch, rng) -> x_batch`` callables: ``random_flip``,
  ``random_crop`` (pad then crop, the CIFAR recipe), ``random_shift``; ``compose`` chains them.
"""
from __future__ import annotations

import gzip
import os
import struct
from typing import Callable, Iterator, Sequence

import numpy as np

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class DataError(ValueError):
    """A data file is missing, truncated or not in the format its reader expects."""


# ------------------------------------------------------------------ datasets

def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits: x (1797, 1, 8, 8) float32 in [0, 1], y int64."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError:
        raise ImportError("the digits dataset comes with scikit-learn: "
                          "pip install 'cnncomp[data]'") from None
    d = _load()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    return x, d.target.astype(np.int64)


def _open(path: str):
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _read_idx(path: str) -> np.ndarray:
    with _open(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = data[2], data[3]
    if code not in dtypes:
        raise DataError(f"{path}: unknown IDX element type 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dt = np.dtype(dtypes[code])
    need = int(np.prod(shape)) * dt.itemsize
    if len(data) - header != need:
        raise DataError(f"{path}: IDX header says {shape} ({need} bytes) but the file holds "
                        f"{len(data) - header} bytes of data; the file is truncated or corrupt")
    return np.frombuffer(data, dt, offset=header).reshape(shape)


def read_mnist_idx(images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST (or Fashion-MNIST) IDX files -> x (N, 1, 28, 28) float32 in [0, 1], y int64."""
    x = _read_idx(images)
    y = _read_idx(labels)
    if x.ndim != 3 or y.ndim != 1:
        raise DataError(f"expected images (N, H, W) and labels (N,), got {x.shape} in "
                        f"{images} and {y.shape} in {labels}")
    if len(x) != len(y):
        raise DataError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    return (x.astype(np.float32) / 255.0)[:, None], y.astype(np.int64)


def read_cifar10_bin(*paths: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 binary batches (data_batch_1.bin ...): x (N, 3, 32, 32) in [0, 1], y int64."""
    if not paths:
        raise ValueError("read_cifar10_bin needs at least one batch file")
    record = 1 + 3 * 32 * 32
    xs, ys = [], []
    for p in paths:
        with _open(p) as f:
            raw = np.frombuffer(f.read(), np.uint8)
        if raw.size == 0 or raw.size % record:
            raise DataError(f"{p}: {raw.size} bytes is not a whole number of CIFAR-10 "
                            f"records ({record} bytes each: 1 label + 3x32x32 pixels)")
        rec = raw.reshape(-1, record)
        if rec[:, 0].max() > 9:
            raise DataError(f"{p}: label {rec[:, 0].max()} out of range 0..9: not CIFAR-10")
        ys.append(rec[:, 0].astype(np.int64))
        xs.append(rec[:, 1:].reshape(-1, 3, 32, 32))
    return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys)


# ------------------------------------------------------------------ splitting and batching

def stratified_split(x: np.ndarray, y: np.ndarray, test_fraction: float = 0.2, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, x_test, y_train, y_test): each class split ``test_fraction`` / rest."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test.append(idx[:int(round(len(idx) * test_fraction))])
    mask = np.zeros(len(y), bool)
    mask[np.concatenate(test)] = True
    return x[~mask], x[mask], y[~mask], y[mask]


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator,
            shuffle: bool = True, drop_last: bool = True
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Mini-batches of (x, y), in an order drawn from ``rng`` when shuffling."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
    stop = len(x) - len(x) % batch_size if drop_last else len(x)
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]


# ------------------------------------------------------------------ augmentation

def random_flip(p: float = 0.5) -> Augment:
    """Mirror each image left-right with probability ``p``."""
    def f(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        flip = rng.random(len(x)) < p
        out = x.copy()
        out[flip] = x[flip, ..., ::-1]
        return out
    return f


def random_crop(padding: int = 4) -> Augment:
    """Zero-pad each side by ``padding`` and crop back at a random offset per image."""
    def f(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, _, h, w = x.shape
        padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        dy = rng.integers(0, 2 * padding + 1, n)
        dx = rng.integers(0, 2 * padding + 1, n)
        return np.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    return f


def random_shift(max_shift: int = 1) -> Augment:
    """Translate each image by up to ``max_shift`` pixels per axis, filling with zeros."""
    return random_crop(max_shift)


def compose(*augments: Augment) -> Augment:
    def f(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for a in augments:
            x = a(x, rng)
        return x
    return f


def one_hot(y: np.ndarray, classes: int) -> np.ndarray:
    out = np.zeros((len(y), classes), np.float32)
    out[np.arange(len(y)), y] = 1
    return out


__all__: Sequence[str] = ("DataError", "batches", "compose", "load_digits", "one_hot",
                          "random_crop", "random_flip", "random_shift", "read_cifar10_bin",
                          "read_mnist_idx", "stratified_split")
