"""Pooling CUDA kernels: max, average, power-average (LP) and global average.

Windows follow runtime.cpu.pool (and so PyTorch) exactly: padding (top, left, bottom,
right), dilation for max pooling, ceil_mode windows that run past the input, PyTorch's
divisor rules for average pooling, NaN winning a max. The windowed pools give each
thread one output element (a 1-D grid-stride loop over the flat output, so neighbouring
threads write neighbouring addresses). Global average pooling reduces each plane with a
block of threads through shared memory; tiny planes (at most SMALL_PLANE elements) use
one thread per plane instead.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from numba import cuda, float32

from ..registry import register_kernel
from .common import F32_ZERO, THREADS, CudaRun, blocks_for, check_f32

GAP_THREADS = 128   # threads reducing one plane
SMALL_PLANE = 64    # planes up to this size: one thread each
NEG_INF = np.float32(-np.inf)


def _planes(a: Any) -> Any:
    n, c, h, w = a.shape
    return a.reshape(n * c, h, w)


@cuda.jit
def max_pool(x, out, kh, kw, sh, sw, pt, pl, dh, dw):
    h = x.shape[1]
    w = x.shape[2]
    oh = out.shape[1]
    ow = out.shape[2]
    total = out.shape[0] * oh * ow
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = idx % ow
        t = idx // ow
        i = t % oh
        q = t // oh
        h0 = i * sh - pt
        w0 = j * sw - pl
        m = NEG_INF
        for a in range(kh):
            y = h0 + a * dh
            if y >= 0 and y < h:
                for b in range(kw):
                    z = w0 + b * dw
                    if z >= 0 and z < w:
                        v = x[q, y, z]
                        if v > m or math.isnan(v):  # NaN wins, as in PyTorch
                            m = v
        out[q, i, j] = m


@cuda.jit
def avg_pool(x, out, kh, kw, sh, sw, pt, pl, pb, pr, count_include_pad):
    h = x.shape[1]
    w = x.shape[2]
    oh = out.shape[1]
    ow = out.shape[2]
    total = out.shape[0] * oh * ow
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = idx % ow
        t = idx // ow
        i = t % oh
        q = t // oh
        hs = i * sh - pt
        he = min(hs + kh, h + pb)
        ws = j * sw - pl
        we = min(ws + kw, w + pr)
        pool = (he - hs) * (we - ws)
        a0 = max(hs, 0)
        a1 = min(he, h)
        b0 = max(ws, 0)
        b1 = min(we, w)
        s = F32_ZERO
        for y in range(a0, a1):
            for z in range(b0, b1):
                s += x[q, y, z]
        div = pool if count_include_pad else (a1 - a0) * (b1 - b0)
        out[q, i, j] = s / float32(div)


@cuda.jit
def lp_pool(x, out, kh, kw, sh, sw, p_norm, inv_p, square):
    # PyTorch: avg_pool(x**p) * kh*kw, then **(1/p), partial windows averaged over their
    # in-bounds elements first (as runtime.cpu.pool)
    h = x.shape[1]
    w = x.shape[2]
    oh = out.shape[1]
    ow = out.shape[2]
    total = out.shape[0] * oh * ow
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = idx % ow
        t = idx // ow
        i = t % oh
        q = t // oh
        hs = i * sh
        he = min(hs + kh, h)
        ws = j * sw
        we = min(ws + kw, w)
        s = F32_ZERO
        for y in range(hs, he):
            for z in range(ws, we):
                v = x[q, y, z]
                if square:
                    s += v * v
                else:
                    s += v ** p_norm
        s = s * float32(kh * kw) / float32((he - hs) * (we - ws))
        if square:
            out[q, i, j] = math.sqrt(s)
        else:
            out[q, i, j] = s ** inv_p


@cuda.jit
def global_avg_small(x, out):
    # one thread per (image, channel) plane; x (P, HW), out (P,)
    hw = x.shape[1]
    inv = float32(1.0) / float32(hw)
    for q in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        s = F32_ZERO
        for k in range(hw):
            s += x[q, k]
        out[q] = s * inv


@cuda.jit
def global_avg_block(x, out):
    # one block of GAP_THREADS per plane: strided partial sums, then a tree in shared memory
    part = cuda.shared.array(GAP_THREADS, float32)
    hw = x.shape[1]
    t = cuda.threadIdx.x
    for q in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
        s = F32_ZERO
        for k in range(t, hw, GAP_THREADS):
            s += x[q, k]
        part[t] = s
        cuda.syncthreads()
        step = GAP_THREADS // 2
        while step > 0:
            if t < step:
                part[t] += part[t + step]
            cuda.syncthreads()
            step //= 2
        if t == 0:
            out[q] = part[0] / float32(hw)
        cuda.syncthreads()


def _window_attrs(attrs: Mapping) -> tuple:
    (kh, kw), (sh, sw) = attrs["kernel_size"], attrs["stride"]
    return int(kh), int(kw), int(sh), int(sw)


def _check(ins: Sequence[Any], outs: Sequence[Any], what: str) -> None:
    if len(ins[0].shape) != 4 or len(outs[0].shape) != 4 or \
            tuple(ins[0].shape[:2]) != tuple(outs[0].shape[:2]):
        raise ValueError(f"{what}: input {tuple(ins[0].shape)} and output "
                         f"{tuple(outs[0].shape)} must be (N, C, H, W) with equal N, C")
    check_f32([ins[0], outs[0]], what)


@register_kernel("max_pool2d", "cuda", "NCHW")
def bind_max_pool(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    _check(ins, outs, "max_pool2d")
    x, out = _planes(ins[0]), _planes(outs[0])
    kh, kw, sh, sw = _window_attrs(attrs)
    dh, dw = (int(d) for d in attrs["dilation"])
    pt, pl = (int(p) for p in attrs["padding"][:2])
    return CudaRun().launch(max_pool, blocks_for(out.size), THREADS,
                            x, out, kh, kw, sh, sw, pt, pl, dh, dw)


@register_kernel("avg_pool2d", "cuda", "NCHW")
def bind_avg_pool(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    _check(ins, outs, "avg_pool2d")
    x, out = _planes(ins[0]), _planes(outs[0])
    kh, kw, sh, sw = _window_attrs(attrs)
    pt, pl, pb, pr = (int(p) for p in attrs["padding"])
    return CudaRun().launch(avg_pool, blocks_for(out.size), THREADS,
                            x, out, kh, kw, sh, sw, pt, pl, pb, pr,
                            bool(attrs["count_include_pad"]))


@register_kernel("lp_pool2d", "cuda", "NCHW")
def bind_lp_pool(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    _check(ins, outs, "lp_pool2d")
    x, out = _planes(ins[0]), _planes(outs[0])
    kh, kw, sh, sw = _window_attrs(attrs)
    p = float(attrs["norm_type"])
    return CudaRun().launch(lp_pool, blocks_for(out.size), THREADS,
                            x, out, kh, kw, sh, sw, np.float32(p), np.float32(1.0 / p),
                            p == 2.0)


@register_kernel("global_avg_pool2d", "cuda", "NCHW")
def bind_global_avg_pool(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping,
                         block: bool | None = None) -> CudaRun:
    """Mean over H, W of each plane; ``block`` forces the block-reduction path (tests)."""
    x = ins[0]
    if len(x.shape) != 4 or tuple(outs[0].shape) != tuple(x.shape[:2]):
        raise ValueError(f"global_avg_pool2d: input {tuple(x.shape)} -> output "
                         f"{tuple(outs[0].shape)}, want (N, C, H, W) -> (N, C)")
    check_f32([x, outs[0]], "global_avg_pool2d")
    n, c, h, w = x.shape
    x2, out = x.reshape(n * c, h * w), outs[0].reshape(n * c)
    if block is None:
        block = h * w > SMALL_PLANE
    if block:
        return CudaRun().launch(global_avg_block, min(n * c, 65535), GAP_THREADS, x2, out)
    return CudaRun().launch(global_avg_small, blocks_for(n * c), THREADS, x2, out)
