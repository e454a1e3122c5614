"""Elementwise training kernels: activation gradients, Dropout (forward and backward),
and the data movement of gradients (reshape, split).

Dropout draws its mask from a counter-based generator (SplitMix64 of seed, step and
element index) rather than a stateful RNG: the mask of step t is a pure function of t,
so a run resumed from a checkpoint draws exactly the masks the uninterrupted run would.
Every kernel here reads element i before writing element i, so each is correct in place.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from .activation import act_code, act_grad
from .elementwise import PARALLEL_MIN
from .jit import PARALLEL, by_size, parallel_and_serial


def _act_grad(gy, s, gx, code, alpha):
    # s: the saved output y (relu, sigmoid, tanh) or input x (leaky_relu)
    for i in prange(gy.size):
        gx[i] = act_grad(gy[i], s[i], code, alpha)


# small tensors (LeNet's, a classifier's) skip the parallel region
_ACT_GRAD = parallel_and_serial(_act_grad)


@register_kernel("activation_grad", mode="backward")
def bind_activation_grad(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                         attrs: Mapping):
    """dL/dx of an activation from dL/dy and its saved output (input for leaky_relu)."""
    gy, s, gx = ins[0].reshape(-1), ins[1].reshape(-1), outs[0].reshape(-1)
    code, alpha = act_code(attrs["activation"]), np.float32(attrs.get("alpha", 0.0))
    fn = by_size(_ACT_GRAD, gy.size, PARALLEL_MIN)
    return lambda: fn(gy, s, gx, code, alpha)


@numba.njit(cache=True, inline="always")
def _splitmix64(z):
    z = (z + np.uint64(0x9E3779B97F4A7C15))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, parallel=PARALLEL)
def _dropout_train(x, y, mask, p, seed, step, first):
    scale = np.float32(0.0) if p >= 1.0 else np.float32(1.0 / (1.0 - p))
    key = _splitmix64(np.uint64(seed) ^ _splitmix64(np.uint64(step)))
    for i in prange(x.size):
        u = (_splitmix64(key + np.uint64(first + i)) >> np.uint64(40)) * (1.0 / 16777216.0)
        m = scale if u >= p else np.float32(0.0)
        mask[i] = m
        y[i] = x[i] * m


@register_kernel("dropout_train")
def bind_dropout_train(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    """Zero each element with probability p and scale the rest by 1/(1-p), as PyTorch.

    An optional third input [sample offset] (distributed training: this rank's first
    sample in the global batch) keys the mask by global element index, so the ranks
    together draw the mask one process would draw for the whole batch."""
    x, hyper = ins[0].reshape(-1), ins[1]
    y, mask = outs[0].reshape(-1), outs[1].reshape(-1)
    p, seed = float(attrs["p"]), int(attrs["seed"])
    if len(ins) > 2:
        offset, per_sample = ins[2], x.size // max(ins[0].shape[0], 1)
        return lambda: _dropout_train(x, y, mask, p, seed, int(hyper[1]),
                                      int(offset[0]) * per_sample)
    return lambda: _dropout_train(x, y, mask, p, seed, int(hyper[1]), 0)


@numba.njit(cache=True, parallel=PARALLEL)
def _mul(a, b, out):
    for i in prange(a.size):
        out[i] = a[i] * b[i]


@register_kernel("dropout_grad", mode="backward")
def bind_dropout_grad(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    gy, mask, gx = ins[0].reshape(-1), ins[1].reshape(-1), outs[0].reshape(-1)
    return lambda: _mul(gy, mask, gx)


@register_kernel("reshape", mode="backward")
def bind_reshape(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    """A copy with a new shape (lowering makes it a view whenever the bytes allow)."""
    src, dst = ins[0].reshape(outs[0].shape), outs[0]
    return lambda: np.copyto(dst, src)


@register_kernel("split", mode="backward")
def bind_split(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    """Cut the input along ``axis`` into consecutive pieces (Concat's gradient)."""
    x, axis = ins[0], int(attrs["axis"])
    pieces, start = [], 0
    for o in outs:
        k = o.shape[axis]
        index = (slice(None),) * axis + (slice(start, start + k),)
        pieces.append((o, x[index]))
        start += k
    if start != x.shape[axis]:
        raise ValueError(f"split: pieces {[o.shape for o in outs]} do not cover {x.shape}")

    def run():
        for o, src in pieces:
            np.copyto(o, src)
    return run

