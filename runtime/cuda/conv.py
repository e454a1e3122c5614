"""Conv2d CUDA kernel for NCHW: a shared-memory tiled implicit GEMM, plus the fused
epilogue (bias, residual, activation), exactly as runtime.cpu.conv.

Per group g the convolution is the product out[m, o] = sum_k A[m, k] * W[o, k] with
m = (image, output pixel), o = output channel of the group, k = (input channel of the
group, kernel row, kernel column); A is the im2col matrix, gathered on the fly while
a tile of it is loaded into shared memory (never materialized). A block of 16 x 16
threads computes a BM x BN tile of ``out`` (BM = 16*RM pixels, BN = 16*RN channels),
each thread an RM x RN register tile, stepping through K in slices of TK: each slice of
A and W is loaded once into shared memory (coalesced: neighbouring threads read
neighbouring pixels of x and neighbouring k of a weight row) and reused by all 256
threads. Padding, stride, dilation and asymmetric padding only change the gather (the
bottom/right padding only changes the output size); out-of-bounds taps read as zero.
The epilogue runs on the registers before the single store.

Depthwise convolutions (one input channel per group) are a poor GEMM (K = kh*kw, one
output channel per group): a direct kernel computes one output element per thread.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import numpy as np
from numba import cuda, float32

from ..registry import register_kernel
from .common import (F32_ZERO, THREADS, CudaRun, act_code, apply_act, blocks_for, check_f32,
                     device_function, dummy)

TX = TY = 16          # threads per block along output pixels (x) and output channels (y)
NT = TX * TY
TK = 16               # K slice held in shared memory per step


@functools.lru_cache(maxsize=None)
def make_mma(rm: int, rn: int, tk: int) -> Any:
    """Device function: acc[rm, rn] += sA[:, tx + 16 i] (x) sB[:, ty + 16 j] over tk."""
    @device_function
    def mma(sA, sB, acc, tx, ty):
        a = cuda.local.array(rm, float32)
        b = cuda.local.array(rn, float32)
        for kk in range(tk):
            for i in range(rm):
                a[i] = sA[kk, tx + i * TX]
            for j in range(rn):
                b[j] = sB[kk, ty + j * TY]
            for i in range(rm):
                for j in range(rn):
                    acc[i, j] += a[i] * b[j]
    return mma


@functools.lru_cache(maxsize=None)
def make_conv_gemm(rm: int, rn: int, tk: int = TK) -> Any:
    """The implicit-GEMM conv kernel for register tile rm x rn (tile BM x BN)."""
    bm, bn = TX * rm, TY * rn
    a_rows = max(1, NT // bm)   # rows of the A slice one pass of the block loads
    b_cols = max(1, NT // tk)   # columns of the W slice one pass loads
    mma = make_mma(rm, rn, tk)

    @cuda.jit
    def conv_gemm(x, w, out, bias, has_bias, res, has_res, code, alpha,
                  kh, kw, sh, sw, pt, pl, dh, dw, ow, cg, og):
        # x (N, C, H, W); w (O, K); out, res (N, O, OH*OW)
        sA = cuda.shared.array((tk, bm), float32)
        sB = cuda.shared.array((tk, bn), float32)
        acc = cuda.local.array((rm, rn), float32)
        for i in range(rm):
            for j in range(rn):
                acc[i, j] = F32_ZERO
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TX + tx
        h = x.shape[2]
        wd = x.shape[3]
        ohw = out.shape[2]
        big_m = x.shape[0] * ohw
        khw = kh * kw
        big_k = cg * khw
        g = cuda.blockIdx.z
        m0 = cuda.blockIdx.x * bm
        o0 = cuda.blockIdx.y * bn
        # the A column (output pixel) this thread loads is the same for every K slice
        am = tid % bm
        m = m0 + am
        m_ok = m < big_m
        img = m // ohw
        p = m - img * ohw
        iy0 = (p // ow) * sh - pt
        ix0 = (p % ow) * sw - pl
        c0 = g * cg
        bk = tid % tk   # and so is the k of the W row it loads
        for k0 in range(0, big_k, tk):
            for kk in range(tid // bm, tk, a_rows):
                k = k0 + kk
                v = F32_ZERO
                if m_ok and k < big_k:
                    c = k // khw
                    r = k - c * khw
                    a = r // kw
                    y = iy0 + a * dh
                    z = ix0 + (r - a * kw) * dw
                    if y >= 0 and y < h and z >= 0 and z < wd:
                        v = x[img, c0 + c, y, z]
                sA[kk, am] = v
            k = k0 + bk
            for oo in range(tid // tk, bn, b_cols):
                o = o0 + oo
                v = F32_ZERO
                if o < og and k < big_k:
                    v = w[g * og + o, k]
                sB[bk, oo] = v
            cuda.syncthreads()
            mma(sA, sB, acc, tx, ty)
            cuda.syncthreads()
        for i in range(rm):
            m = m0 + tx + i * TX
            if m < big_m:
                img = m // ohw
                p = m - img * ohw
                for j in range(rn):
                    o = o0 + ty + j * TY
                    if o < og:
                        oc = g * og + o
                        v = acc[i, j]
                        if has_bias:
                            v += bias[oc]
                        if has_res:
                            v += res[img, oc, p]
                        out[img, oc, p] = apply_act(v, code, alpha)
    return conv_gemm


@cuda.jit
def conv_depthwise(x, w, out, bias, has_bias, res, has_res, code, alpha,
                   kh, kw, sh, sw, pt, pl, dh, dw, ow, og):
    # one input channel per group; x (N, C, H, W); w (O, kh*kw); out, res (N, O, OH*OW)
    o_n = out.shape[1]
    ohw = out.shape[2]
    h = x.shape[2]
    wd = x.shape[3]
    total = out.shape[0] * o_n * ohw
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        p = idx % ohw
        t = idx // ohw
        oc = t % o_n
        img = t // o_n
        ci = oc // og
        iy0 = (p // ow) * sh - pt
        ix0 = (p % ow) * sw - pl
        acc = F32_ZERO
        for a in range(kh):
            y = iy0 + a * dh
            if y >= 0 and y < h:
                for b in range(kw):
                    z = ix0 + b * dw
                    if z >= 0 and z < wd:
                        acc += w[oc, a * kw + b] * x[img, ci, y, z]
        if has_bias:
            acc += bias[oc]
        if has_res:
            acc += res[img, oc, p]
        out[img, oc, p] = apply_act(acc, code, alpha)


def tile_for(m: int, og: int) -> tuple[int, int]:
    """Register tile (rm, rn): the smallest of 1, 2, 4 whose block tile covers the extent,
    so a small layer does not launch mostly idle threads."""
    pick = lambda n: 1 if n <= 16 else (2 if n <= 32 else 4)  # noqa: E731
    return pick(m), pick(og)


@register_kernel("conv2d", "cuda", "NCHW")
def bind_conv2d(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping,
                tile: tuple[int, int] | None = None) -> CudaRun:
    """2-D convolution exactly as torch.nn.functional.conv2d, plus the fused epilogue.

    ``tile`` forces the GEMM's register tile (tests use it to cover every variant).
    """
    x, w, out = ins[0], ins[1], outs[0]
    has_bias, has_res = bool(attrs["bias"]), bool(attrs.get("residual", False))
    if len(ins) != 2 + has_bias + has_res:
        raise ValueError(f"conv2d: expected {2 + has_bias + has_res} inputs, got {len(ins)}")
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel_size"], attrs["stride"], attrs["dilation"]
    pt, pl = attrs["padding"][:2]
    groups = int(attrs["groups"])
    n, c, h, wd = x.shape
    o_n = w.shape[0]
    oh, ow = out.shape[2], out.shape[3]
    if tuple(w.shape) != (o_n, c // groups, kh, kw) or tuple(out.shape[:2]) != (n, o_n) \
            or c % groups or o_n % groups:
        raise ValueError(f"conv2d: x {tuple(x.shape)}, weight {tuple(w.shape)}, out "
                         f"{tuple(out.shape)} disagree for groups={groups}")
    check_f32([x, w, out] + list(ins[2:]), "conv2d")
    cg, og = c // groups, o_n // groups
    out3 = out.reshape(n, o_n, oh * ow)
    w2 = w.reshape(o_n, cg * kh * kw)
    bias = ins[2] if has_bias else dummy(1)
    res = ins[-1].reshape(n, o_n, oh * ow) if has_res else dummy(3)
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    args = (x, w2, out3, bias, has_bias, res, has_res, code, alpha,
            int(kh), int(kw), int(sh), int(sw), int(pt), int(pl), int(dh), int(dw), int(ow))
    run = CudaRun()
    if cg == 1 and groups > 1 and tile is None:
        total = n * o_n * oh * ow
        return run.launch(conv_depthwise, blocks_for(total), THREADS, *args, og)
    m = n * oh * ow
    rm, rn = tile or tile_for(m, og)
    grid = (-(-m // (TX * rm)), -(-og // (TY * rn)), groups)
    if grid[1] > 65535 or grid[2] > 65535:
        raise ValueError(f"conv2d: grid {grid} exceeds CUDA's limits")
    return run.launch(make_conv_gemm(rm, rn), grid, (TX, TY), *args, cg, og,
                      name=f"conv_gemm_{TX * rm}x{TY * rn}")
