"""Backward kernels of pooling (NCHW). Windows are exactly the forward's (pool.py).

Each (image, channel) plane is independent, and every window of a plane scatters only
into that plane: parallel over planes, race-free. Max pooling recomputes each window's
argmax from the saved input (first maximum in row-major order, NaN wins, as PyTorch)
instead of keeping an index tensor alive from the forward.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from .pool import _planes


@numba.njit(cache=True, parallel=True)
def _max_pool_grad(gy, x, gx, kh, kw, sh, sw, pt, pl, dh, dw):
    p, h, w = x.shape
    _, oh, ow = gy.shape
    for q in prange(p):
        gx[q] = 0.0
        for i in range(oh):
            h0 = i * sh - pt
            for j in range(ow):
                w0 = j * sw - pl
                m = -np.inf
                by, bz = -1, -1
                for a in range(kh):
                    y = h0 + a * dh
                    if y < 0 or y >= h:
                        continue
                    for b in range(kw):
                        z = w0 + b * dw
                        if z < 0 or z >= w:
                            continue
                        v = x[q, y, z]
                        if by < 0 or v > m or (math.isnan(v) and not math.isnan(m)):
                            m = v
                            by, bz = y, z
                if by >= 0:
                    gx[q, by, bz] += gy[q, i, j]


@register_kernel("max_pool2d_grad", mode="backward")
def bind_max_pool_grad(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    a = attrs["fwd"]
    gy, x, gx = _planes(ins[0]), _planes(ins[1]), _planes(outs[0])
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["stride"], a["dilation"]
    pt, pl = a["padding"][:2]
    return lambda: _max_pool_grad(gy, x, gx, kh, kw, sh, sw, pt, pl, dh, dw)


@numba.njit(cache=True, parallel=True)
def _avg_pool_grad(gy, gx, kh, kw, sh, sw, pt, pl, pb, pr, count_include_pad):
    p, h, w = gx.shape
    _, oh, ow = gy.shape
    for q in prange(p):
        gx[q] = 0.0
        for i in range(oh):
            hs = i * sh - pt
            he = min(hs + kh, h + pb)
            for j in range(ow):
                ws = j * sw - pl
                we = min(ws + kw, w + pr)
                pool = (he - hs) * (we - ws)
                a0, a1 = max(hs, 0), min(he, h)
                b0, b1 = max(ws, 0), min(we, w)
                div = pool if count_include_pad else (a1 - a0) * (b1 - b0)
                g = gy[q, i, j] / np.float32(div)
                for y in range(a0, a1):
                    for z in range(b0, b1):
                        gx[q, y, z] += g


@register_kernel("avg_pool2d_grad", mode="backward")
def bind_avg_pool_grad(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    a = attrs["fwd"]
    gy, gx = _planes(ins[0]), _planes(outs[0])
    (kh, kw), (sh, sw) = a["kernel_size"], a["stride"]
    pt, pl, pb, pr = a["padding"]
    cip = bool(a["count_include_pad"])
    return lambda: _avg_pool_grad(gy, gx, kh, kw, sh, sw, pt, pl, pb, pr, cip)


@numba.njit(cache=True, parallel=True)
def _lp_pool_grad(gy, x, y_out, gx, kh, kw, sh, sw, p_norm):
    # y = (scale * sum x^p)^(1/p), scale = kh*kw / window count (partial ceil_mode
    # windows); dy/dx = scale * x^(p-1) * y^(1-p)
    p, h, w = x.shape
    _, oh, ow = gy.shape
    for q in prange(p):
        gx[q] = 0.0
        for i in range(oh):
            hs = i * sh
            he = min(hs + kh, h)
            for j in range(ow):
                ws = j * sw
                we = min(ws + kw, w)
                yv = y_out[q, i, j]
                if yv == 0.0:
                    continue
                scale = (kh * kw) / ((he - hs) * (we - ws))
                g = gy[q, i, j] * scale * yv ** (1.0 - p_norm)
                for a in range(hs, he):
                    for b in range(ws, we):
                        gx[q, a, b] += g * x[q, a, b] ** (p_norm - 1.0)


@register_kernel("lp_pool2d_grad", mode="backward")
def bind_lp_pool_grad(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    a = attrs["fwd"]
    gy, x, y, gx = _planes(ins[0]), _planes(ins[1]), _planes(ins[2]), _planes(outs[0])
    (kh, kw), (sh, sw) = a["kernel_size"], a["stride"]
    return lambda: _lp_pool_grad(gy, x, y, gx, kh, kw, sh, sw, float(a["norm_type"]))


@numba.njit(cache=True, parallel=True)
def _global_avg_grad(gy, gx):
    p, hw = gx.shape
    for q in prange(p):
        g = gy[q] / np.float32(hw)
        for k in range(hw):
            gx[q, k] = g


@register_kernel("global_avg_pool2d_grad", mode="backward")
def bind_global_avg_pool_grad(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                              attrs: Mapping):
    n, c, h, w = outs[0].shape
    gy, gx = ins[0].reshape(n * c), outs[0].reshape(n * c, h * w)
    return lambda: _global_avg_grad(gy, gx)
