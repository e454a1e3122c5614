"""Layout transforms between NCHW and the blocked NCHW16c (see conv_blocked.py), and the
blocked layout's data-movement and pooling kernels: max pooling, concat, and global
average pooling, which writes (N, C) so a network's last feature map is not converted
back to NCHW before its classifier."""
from __future__ import annotations

from typing import Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from .jit import PARALLEL, by_size, parallel_and_serial
from .nhwc import bind_max_pool_channels_last
from .simd import vadd, vload, vmul, vsplat, vstore

B = 16
GAP_PARALLEL_MIN = 1 << 16  # input floats: below this the serial global average pool


@numba.njit(cache=True, parallel=PARALLEL)
def _to_blocked(x, out):
    n_img, c, h, w = x.shape
    cb_n = out.shape[1]
    for t in prange(n_img * cb_n):
        n, cb = t // cb_n, t % cb_n
        for k in range(B):
            ch = cb * B + k
            if ch < c:
                for i in range(h):
                    for j in range(w):
                        out[n, cb, i, j, k] = x[n, ch, i, j]
            else:
                for i in range(h):
                    for j in range(w):
                        out[n, cb, i, j, k] = 0.0


@numba.njit(cache=True, parallel=PARALLEL)
def _from_blocked(x, out):
    n_img, c, h, w = out.shape
    for t in prange(n_img * c):
        n, ch = t // c, t % c
        cb, k = ch // B, ch % B
        for i in range(h):
            for j in range(w):
                out[n, ch, i, j] = x[n, cb, i, j, k]


def to_nchwc(x: np.ndarray) -> np.ndarray:
    """NCHW -> NCHW16c (a new array, padded channels zero)."""
    n, c, h, w = x.shape
    out = np.empty((n, -(-c // B), h, w, B), np.float32)
    _to_blocked(np.ascontiguousarray(x, np.float32), out)
    return out


def from_nchwc(x: np.ndarray, channels: int) -> np.ndarray:
    """NCHW16c -> NCHW with ``channels`` channels (a new array)."""
    out = np.empty((x.shape[0], channels, x.shape[2], x.shape[3]), np.float32)
    _from_blocked(np.ascontiguousarray(x), out)
    return out


@register_kernel("layout_transform", "cpu", "NCHW16c")
def bind_layout_transform(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                          attrs: Mapping):
    src, dst = attrs["src"], attrs["dst"]
    x, out = ins[0], outs[0]
    if (src, dst) == ("NCHW", "NCHW16c"):
        return lambda: _to_blocked(x, out)
    if (src, dst) == ("NCHW16c", "NCHW"):
        return lambda: _from_blocked(x, out)
    raise ValueError(f"layout_transform: no conversion from {src} to {dst}")


@register_kernel("max_pool2d", "cpu", "NCHW16c")
def bind_max_pool_blocked(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                          attrs: Mapping):
    """Max pooling on NCHW16c (padding channels: max of zeros stays zero), run as NHWC
    pooling over (N*Cb, H, W, 16): each 16-channel block is a pixel vector."""
    n, cb, h, w, b = ins[0].shape
    out = outs[0]
    return bind_max_pool_channels_last(ins[0].reshape(n * cb, h, w, b),
                                       out.reshape(n * cb, *out.shape[2:]), attrs)


@register_kernel("concat", "cpu", "NCHW16c")
def bind_concat_blocked(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                        attrs: Mapping):
    """Channel concat of NCHW16c tensors whose channel counts are multiples of 16."""
    if int(attrs["axis"]) != 1:
        raise ValueError("concat NCHW16c: only the channel axis is supported")
    out = outs[0]
    starts = np.cumsum([0] + [a.shape[1] for a in ins])
    if starts[-1] != out.shape[1]:
        raise ValueError("concat NCHW16c: every input needs a multiple of 16 channels")

    def run():
        for a, s0 in zip(ins, starts):
            out[:, s0:s0 + a.shape[1]] = a
    return run


def _global_avg(x, sums, out):
    n_img, cb_n, h, w, _ = x.shape
    xf, sf = x.reshape(-1), sums.reshape(-1)
    hw = h * w
    inv = vsplat(np.float32(1.0) / np.float32(hw))
    for t in prange(n_img * cb_n):
        base = t * hw * B
        acc = vload(xf, base)
        for k in range(1, hw):
            acc = vadd(acc, vload(xf, base + k * B))
        vstore(sf, t * B, vmul(acc, inv))
    c = out.shape[1]
    for n in range(n_img):
        for q in range(c):
            out[n, q] = sums[n, q]


_GLOBAL_AVG = parallel_and_serial(_global_avg)


@register_kernel("global_avg_pool2d", "cpu", "NCHW16c")
def bind_global_avg_pool_blocked(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                                 attrs: Mapping):
    """(N, C/16, H, W, 16) -> (N, C): the mean of each channel's plane, summed in float32
    as the NCHW kernel does."""
    x, out = ins[0], outs[0]
    sums = np.empty((x.shape[0], x.shape[1] * B), np.float32)
    fn = by_size(_GLOBAL_AVG, x.size, GAP_PARALLEL_MIN)
    return lambda: fn(x, sums, out)
