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


def _planes(a: np.ndarray) -> np.ndarray:
    n, c, h, w = a.shape
    return a.reshape(n * c, h, w)


@numba.njit(cache=True, parallel=True)
def _max_pool(x, out, kh, kw, sh, sw, pt, pl, dh, dw):
    p, h, w = x.shape
    _, oh, ow = out.shape
    for q in prange(p):
        for i in range(oh):
            h0 = i * sh - pt
            for j in range(ow):
                w0 = j * sw - pl
                m = -np.inf
                for a in range(kh):
                    y = h0 + a * dh
                    if y < 0 or y >= h:
                        continue
                    for b in range(kw):
                        z = w0 + b * dw
                        if z < 0 or z >= w:
                            continue
                        v = x[q, y, z]
                        if v > m or math.isnan(v):  # NaN wins, as in PyTorch
                            m = v
                out[q, i, j] = m


@numba.njit(cache=True, parallel=True)
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


@numba.njit(cache=True, parallel=True)
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
    return lambda: _max_pool(x, out, kh, kw, sh, sw, pt, pl, dh, dw)


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


@numba.njit(cache=True, parallel=True)
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
