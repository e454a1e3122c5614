"""Pooling CPU kernels: max, average, power-average (LP) and global average.

Windows follow PyTorch exactly: padding (top, left, bottom, right), dilation for max
pooling, ceil_mode windows that may run past the input, and PyTorch's divisor rules
for average pooling. Each (image, channel) plane is independent: parallel over planes.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from .elementwise import PARALLEL_MIN
from .jit import PARALLEL
from .simd import fmax_nan


def _planes(a: np.ndarray) -> np.ndarray:
    n, c, h, w = a.shape
    return a.reshape(n * c, h, w)


@numba.njit(cache=True, inline="always")
def _max_sel(v, m):
    # NaN wins, as in PyTorch. As a select this vectorizes well where the result goes to
    # a fresh location; a running max in memory needs fmax_nan (see its docstring).
    return v if v > m or v != v else m


@numba.njit(cache=True, inline="always")
def _max_pool_2x2(x, out, q):
    # the common 2x2 stride-2 window with no padding: one branch-free pass per output row
    _, oh, ow = out.shape
    for i in range(oh):
        r0, r1, o = x[q, 2 * i], x[q, 2 * i + 1], out[q, i]
        for j in range(ow):
            o[j] = _max_sel(r1[2 * j + 1], _max_sel(r1[2 * j], _max_sel(r0[2 * j + 1], r0[2 * j])))


@numba.njit(cache=True, inline="always")
def _max_pool_plane(x, out, q, kh, kw, sh, sw, pt, pl, dh, dw):
    # Row at a time: the output row is the accumulator, and each tap is one branch-free
    # pass over the output columns whose window holds that tap (found once per tap, not
    # tested per element), so LLVM vectorizes the passes.
    _, h, w = x.shape
    _, oh, ow = out.shape
    for i in range(oh):
        for j in range(ow):
            out[q, i, j] = -np.inf
        for a in range(kh):
            y = i * sh - pt + a * dh
            if y < 0 or y >= h:
                continue
            for b in range(kw):
                off = b * dw - pl  # input column of output column j: j * sw + off
                j0 = max(0, -(off // sw))  # first j with j * sw + off >= 0
                j1 = min(ow, (w - off + sw - 1) // sw)  # past the last j with it < w
                if j1 <= j0:
                    continue
                # slices from the first column in bounds: indices that start at 0 need no
                # negative-index wraparound, which would keep LLVM from vectorizing
                orow = out[q, i, j0:j1]
                xrow = x[q, y, j0 * sw + off:]
                if sw == 1:
                    for t in range(j1 - j0):
                        orow[t] = fmax_nan(xrow[t], orow[t])
                elif sw == 2:
                    for t in range(j1 - j0):
                        orow[t] = fmax_nan(xrow[2 * t], orow[t])
                else:
                    for t in range(j1 - j0):
                        orow[t] = fmax_nan(xrow[t * sw], orow[t])


def tiles_2x2(x: np.ndarray, out: np.ndarray, kh: int, kw: int, sh: int, sw: int,
              pt: int, pl: int, dh: int, dw: int) -> bool:
    """Whether a max pool over planes ``x`` -> ``out`` (P, H, W) is 2x2 windows at stride 2
    with no padding or dilation, each inside the input (a ceil_mode window past the edge
    is not), on C-contiguous planes: disjoint windows, the fast path of the forward and
    backward kernels (the backward reads the planes as flat rows)."""
    return ((kh, kw, sh, sw, pt, pl, dh, dw) == (2, 2, 2, 2, 0, 0, 1, 1)
            and 2 * out.shape[1] <= x.shape[1] and 2 * out.shape[2] <= x.shape[2]
            and x.flags.c_contiguous and out.flags.c_contiguous)


@numba.njit(cache=True, inline="always")
def _max_pool_any(x, out, q, fast, kh, kw, sh, sw, pt, pl, dh, dw):
    if fast:
        _max_pool_2x2(x, out, q)
    else:
        _max_pool_plane(x, out, q, kh, kw, sh, sw, pt, pl, dh, dw)


@numba.njit(cache=True, parallel=PARALLEL)
def _max_pool(x, out, fast, kh, kw, sh, sw, pt, pl, dh, dw):
    for q in prange(x.shape[0]):
        _max_pool_any(x, out, q, fast, kh, kw, sh, sw, pt, pl, dh, dw)


@numba.njit(cache=True)
def _max_pool_serial(x, out, fast, kh, kw, sh, sw, pt, pl, dh, dw):
    for q in range(x.shape[0]):
        _max_pool_any(x, out, q, fast, kh, kw, sh, sw, pt, pl, dh, dw)


@numba.njit(cache=True, parallel=PARALLEL)
def _avg_pool(x, out, kh, kw, sh, sw, pt, pl, pb, pr, count_include_pad):
    p, h, w = x.shape
    _, oh, ow = out.shape
    for q in prange(p):
        for i in range(oh):
            hs = i * sh - pt
            he = min(hs + kh, h + pb)
            for j in range(ow):
                ws = j * sw - pl
                we = min(ws + kw, w + pr)
                pool = (he - hs) * (we - ws)
                a0, a1 = max(hs, 0), min(he, h)
                b0, b1 = max(ws, 0), min(we, w)
                s = np.float32(0.0)
                for y in range(a0, a1):
                    for z in range(b0, b1):
                        s += x[q, y, z]
                div = pool if count_include_pad else (a1 - a0) * (b1 - b0)
                out[q, i, j] = s / np.float32(div)


@numba.njit(cache=True, parallel=PARALLEL)
def _lp_pool(x, out, kh, kw, sh, sw, p_norm, inv_p, square):
    # PyTorch: avg_pool(x**p) * kh*kw, then **(1/p); a partial (ceil_mode) window is
    # averaged over its in-bounds elements before that scaling, so we do the same.
    p, h, w = x.shape
    _, oh, ow = out.shape
    for q in prange(p):
        for i in range(oh):
            hs = i * sh
            he = min(hs + kh, h)
            for j in range(ow):
                ws = j * sw
                we = min(ws + kw, w)
                s = np.float32(0.0)
                for y in range(hs, he):
                    for z in range(ws, we):
                        v = x[q, y, z]
                        s += v * v if square else v ** p_norm
                s = s * np.float32(kh * kw) / np.float32((he - hs) * (we - ws))
                out[q, i, j] = math.sqrt(s) if square else s ** inv_p


@register_kernel("max_pool2d")
def bind_max_pool(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    x, out = _planes(ins[0]), _planes(outs[0])
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel_size"], attrs["stride"], attrs["dilation"]
    pt, pl = attrs["padding"][:2]
    fn = _max_pool if out.size * kh * kw >= PARALLEL_MIN else _max_pool_serial
    fast = tiles_2x2(x, out, kh, kw, sh, sw, pt, pl, dh, dw)
    return lambda: fn(x, out, fast, kh, kw, sh, sw, pt, pl, dh, dw)


@register_kernel("avg_pool2d")
def bind_avg_pool(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    x, out = _planes(ins[0]), _planes(outs[0])
    (kh, kw), (sh, sw) = attrs["kernel_size"], attrs["stride"]
    pt, pl, pb, pr = attrs["padding"]
    cip = bool(attrs["count_include_pad"])
    return lambda: _avg_pool(x, out, kh, kw, sh, sw, pt, pl, pb, pr, cip)


@register_kernel("lp_pool2d")
def bind_lp_pool(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    x, out = _planes(ins[0]), _planes(outs[0])
    (kh, kw), (sh, sw) = attrs["kernel_size"], attrs["stride"]
    p = float(attrs["norm_type"])
    square = p == 2.0
    return lambda: _lp_pool(x, out, kh, kw, sh, sw, np.float32(p), np.float32(1.0 / p), square)


@numba.njit(cache=True, parallel=PARALLEL)
def _global_avg(x, out):
    p, hw = x.shape
    inv = np.float32(1.0) / np.float32(hw)
    for q in prange(p):
        s = np.float32(0.0)
        for k in range(hw):
            s += x[q, k]
        out[q] = s * inv


@register_kernel("global_avg_pool2d")
def bind_global_avg_pool(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                         attrs: Mapping):
    n, c, h, w = ins[0].shape
    x, out = ins[0].reshape(n * c, h * w), outs[0].reshape(n * c)
    return lambda: _global_avg(x, out)
