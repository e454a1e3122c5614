"""Backward kernels of pooling (NCHW). Windows are exactly the forward's (pool.py).

Each (image, channel) plane is independent, and every window of a plane scatters only
into that plane: parallel over planes, race-free. Max pooling recomputes each window's
argmax from the saved input (as PyTorch: the first maximum in row-major order,
but the last NaN, since every NaN replaces the running maximum)
instead of keeping an index tensor alive from the forward.
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
from .pool import _planes, tiles_2x2
from .simd import max2x2_grad


@numba.njit(cache=True, parallel=PARALLEL)
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
                        if by < 0 or v > m or math.isnan(v):
                            m = v
                            by, bz = y, z
                if by >= 0:
                    gx[q, by, bz] += gy[q, i, j]


@numba.njit(cache=True, inline="always")
def _better(v, m):
    # the argmax rule above for a tap after the first: greater, or any NaN
    return (v > m) | (v != v)


@numba.njit(cache=True, inline="always")
def _max_pool_grad_2x2_plane(gy, x, gx, q):
    # 2x2 stride-2 windows do not overlap: each window writes its four gradients (the
    # argmax gets gy, the rest 0) instead of zeroing the plane and scattering into it.
    # Vectors of 16 or 8 windows (max2x2_grad), the last one overlapping the one before
    # (it writes the same values again); rows of fewer than 8 windows one at a time.
    _, h, w = x.shape
    _, oh, ow = gy.shape
    xf, gf, gxf = x.reshape(-1), gy.reshape(-1), gx.reshape(-1)
    for i in range(oh):
        i0, ig = (q * h + 2 * i) * w, (q * oh + i) * ow
        if ow >= 16:
            for s0 in range(0, ow, 16):
                s = min(s0, ow - 16)
                max2x2_grad(xf, gf, gxf, i0 + 2 * s, i0 + w + 2 * s, ig + s, 16)
        elif ow >= 8:
            max2x2_grad(xf, gf, gxf, i0, i0 + w, ig, 8)
            s = ow - 8
            max2x2_grad(xf, gf, gxf, i0 + 2 * s, i0 + w + 2 * s, ig + s, 8)
        else:
            _max_pool_grad_2x2_row(x[q, 2 * i], x[q, 2 * i + 1], gx[q, 2 * i],
                                   gx[q, 2 * i + 1], gy[q, i])
        for j in range(2 * ow, w):  # an odd last column no window covers
            gx[q, 2 * i, j] = 0.0
            gx[q, 2 * i + 1, j] = 0.0
    for i in range(2 * oh, h):  # an odd last row
        gx[q, i] = 0.0


@numba.njit(cache=True, inline="always")
def _max_pool_grad_2x2_row(x0, x1, g0, g1, gr):
    for j in range(gr.shape[0]):
        a, b, c, d = x0[2 * j], x0[2 * j + 1], x1[2 * j], x1[2 * j + 1]
        tb = _better(b, a)
        m = b if tb else a
        k = 1 if tb else 0
        tc = _better(c, m)
        m = c if tc else m
        k = 2 if tc else k
        k = 3 if _better(d, m) else k
        g = gr[j]
        g0[2 * j] = g if k == 0 else np.float32(0.0)
        g0[2 * j + 1] = g if k == 1 else np.float32(0.0)
        g1[2 * j] = g if k == 2 else np.float32(0.0)
        g1[2 * j + 1] = g if k == 3 else np.float32(0.0)


@numba.njit(cache=True, parallel=PARALLEL)
def _max_pool_grad_2x2(gy, x, gx):
    for q in prange(x.shape[0]):
        _max_pool_grad_2x2_plane(gy, x, gx, q)


@numba.njit(cache=True)
def _max_pool_grad_2x2_serial(gy, x, gx):
    for q in range(x.shape[0]):
        _max_pool_grad_2x2_plane(gy, x, gx, q)


@register_kernel("max_pool2d_grad", mode="backward")
def bind_max_pool_grad(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    a = attrs["fwd"]
    gy, x, gx = _planes(ins[0]), _planes(ins[1]), _planes(outs[0])
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["stride"], a["dilation"]
    pt, pl = a["padding"][:2]
    if tiles_2x2(x, gy, kh, kw, sh, sw, pt, pl, dh, dw) and gx.flags.c_contiguous:
        fn = _max_pool_grad_2x2 if x.size >= PARALLEL_MIN else _max_pool_grad_2x2_serial
        return lambda: fn(gy, x, gx)
    return lambda: _max_pool_grad(gy, x, gx, kh, kw, sh, sw, pt, pl, dh, dw)


@numba.njit(cache=True, parallel=PARALLEL)
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


@numba.njit(cache=True, parallel=PARALLEL)
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


@numba.njit(cache=True, parallel=PARALLEL)
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
