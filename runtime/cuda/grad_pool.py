"""Backward CUDA kernels of pooling (NCHW); windows are exactly the forward's.

Max, average and Lp pooling gather: one thread per input element visits the output
windows that can cover it (at most kh*kw of them), so no two threads write one element
and no atomics are needed. Max pooling recomputes each window's argmax from the saved
input (first maximum in row-major order, NaN wins, as the CPU kernel and PyTorch).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from numba import cuda, float32, float64

from ..registry import register_kernel
from .common import CudaRun, check_f32
from .grad_elementwise import grid_1d


def _planes(a: Any) -> Any:
    n, c, h, w = a.shape
    return a.reshape(n * c, h, w)


@cuda.jit(device=True)
def window_of(y, pad, a, d, s, n_out):
    """The output index whose window tap ``a`` lands on input ``y``, or -1."""
    t = y + pad - a * d
    if t < 0 or t % s != 0:
        return -1
    i = t // s
    return i if i < n_out else -1


@cuda.jit
def max_pool_grad(gy, x, gx, kh, kw, sh, sw, pt, pl, dh, dw):
    h = x.shape[1]
    w = x.shape[2]
    oh = gy.shape[1]
    ow = gy.shape[2]
    for idx in range(cuda.grid(1), gx.shape[0] * h * w, cuda.gridsize(1)):
        z0 = idx % w
        t = idx // w
        y0 = t % h
        q = t // h
        acc = float32(0.0)
        for a0 in range(kh):
            i = window_of(y0, pt, a0, dh, sh, oh)
            if i < 0:
                continue
            for b0 in range(kw):
                j = window_of(z0, pl, b0, dw, sw, ow)
                if j < 0:
                    continue
                # argmax of window (i, j), as the CPU kernel finds it
                m = float32(0.0)
                by = -1
                bz = -1
                for a in range(kh):
                    yy = i * sh - pt + a * dh
                    if yy < 0 or yy >= h:
                        continue
                    for b in range(kw):
                        zz = j * sw - pl + b * dw
                        if zz < 0 or zz >= w:
                            continue
                        v = x[q, yy, zz]
                        if by < 0 or v > m or math.isnan(v):  # the last NaN wins, as in PyTorch
                            m = v
                            by = yy
                            bz = zz
                if by == y0 and bz == z0:
                    acc += gy[q, i, j]
        gx[q, y0, z0] = acc


@register_kernel("max_pool2d_grad", "cuda", "NCHW", "backward")
def bind_max_pool_grad(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    check_f32(list(ins) + list(outs), "max_pool2d_grad")
    a = attrs["fwd"]
    gy, x, gx = _planes(ins[0]), _planes(ins[1]), _planes(outs[0])
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["stride"], a["dilation"]
    pt, pl = a["padding"][:2]
    return CudaRun().launch(max_pool_grad, *grid_1d(gx.size), gy, x, gx, int(kh),
                            int(kw), int(sh), int(sw), int(pt), int(pl), int(dh), int(dw))


@cuda.jit
def avg_pool_grad(gy, gx, kh, kw, sh, sw, pt, pl, pb, pr, count_include_pad):
    h = gx.shape[1]
    w = gx.shape[2]
    oh = gy.shape[1]
    ow = gy.shape[2]
    for idx in range(cuda.grid(1), gx.shape[0] * h * w, cuda.gridsize(1)):
        z0 = idx % w
        t = idx // w
        y0 = t % h
        q = t // h
        acc = float32(0.0)
        for a0 in range(kh):
            i = window_of(y0, pt, a0, 1, sh, oh)
            if i < 0:
                continue
            hs = i * sh - pt
            he = min(hs + kh, h + pb)
            for b0 in range(kw):
                j = window_of(z0, pl, b0, 1, sw, ow)
                if j < 0:
                    continue
                ws = j * sw - pl
                we = min(ws + kw, w + pr)
                if y0 >= he or z0 >= we:
                    continue
                pool = (he - hs) * (we - ws)
                div = pool
                if not count_include_pad:
                    div = (min(he, h) - max(hs, 0)) * (min(we, w) - max(ws, 0))
                acc += gy[q, i, j] / float32(div)
        gx[q, y0, z0] = acc


@register_kernel("avg_pool2d_grad", "cuda", "NCHW", "backward")
def bind_avg_pool_grad(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    check_f32(list(ins) + list(outs), "avg_pool2d_grad")
    a = attrs["fwd"]
    gy, gx = _planes(ins[0]), _planes(outs[0])
    (kh, kw), (sh, sw) = a["kernel_size"], a["stride"]
    pt, pl, pb, pr = (int(p) for p in a["padding"])
    return CudaRun().launch(avg_pool_grad, *grid_1d(gx.size), gy, gx, int(kh),
                            int(kw), int(sh), int(sw), pt, pl, pb, pr,
                            bool(a["count_include_pad"]))


@cuda.jit
def lp_pool_grad(gy, x, y_out, gx, kh, kw, sh, sw, p_norm):
    # y = (scale * sum x^p)^(1/p); dy/dx = scale * x^(p-1) * y^(1-p)
    h = gx.shape[1]
    w = gx.shape[2]
    oh = gy.shape[1]
    ow = gy.shape[2]
    for idx in range(cuda.grid(1), gx.shape[0] * h * w, cuda.gridsize(1)):
        z0 = idx % w
        t = idx // w
        y0 = t % h
        q = t // h
        acc = 0.0
        for a0 in range(kh):
            i = window_of(y0, 0, a0, 1, sh, oh)
            if i < 0:
                continue
            hs = i * sh
            he = min(hs + kh, h)
            for b0 in range(kw):
                j = window_of(z0, 0, b0, 1, sw, ow)
                if j < 0:
                    continue
                ws = j * sw
                we = min(ws + kw, w)
                yv = float64(y_out[q, i, j])
                if yv == 0.0:
                    continue
                scale = (kh * kw) / ((he - hs) * (we - ws))
                g = float64(gy[q, i, j]) * scale * yv ** (1.0 - p_norm)
                acc += g * float64(x[q, y0, z0]) ** (p_norm - 1.0)
        gx[q, y0, z0] = acc


@register_kernel("lp_pool2d_grad", "cuda", "NCHW", "backward")
def bind_lp_pool_grad(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    check_f32(list(ins) + list(outs), "lp_pool2d_grad")
    a = attrs["fwd"]
    gy, x, y, gx = _planes(ins[0]), _planes(ins[1]), _planes(ins[2]), _planes(outs[0])
    (kh, kw), (sh, sw) = a["kernel_size"], a["stride"]
    return CudaRun().launch(lp_pool_grad, *grid_1d(gx.size), gy, x, y, gx, int(kh),
                            int(kw), int(sh), int(sw), float(a["norm_type"]))


@cuda.jit
def global_avg_grad(gy, gx):
    hw = gx.shape[1]
    for idx in range(cuda.grid(1), gx.shape[0] * hw, cuda.gridsize(1)):
        q = idx // hw
        gx[q, idx % hw] = gy[q] / float32(hw)


@register_kernel("global_avg_pool2d_grad", "cuda", "NCHW", "backward")
def bind_global_avg_pool_grad(ins: Sequence[Any], outs: Sequence[Any],
                              attrs: Mapping) -> CudaRun:
    check_f32(list(ins) + list(outs), "global_avg_pool2d_grad")
    n, c, h, w = outs[0].shape
    gy, gx = ins[0].reshape(n * c), outs[0].reshape(n * c, h * w)
    return CudaRun().launch(global_avg_grad, *grid_1d(gx.size), gy, gx)
