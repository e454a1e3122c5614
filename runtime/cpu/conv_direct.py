"""Direct NCHW convolution for layers with few channels (LeNet-5's convs, stems).

With few input channels the im2col matrix is short (C*kh*kw rows: 25 for a 5x5 conv on
one channel) and BLAS runs such a GEMM at a few GFLOP/s; per image it also pays an
im2col pass, a GEMM call and an epilogue call. This kernel instead keeps a register
tile of ``OCB`` output channels x 16 output pixels (``f32x16`` accumulators, see
simd.py) and streams the input through it, one parallel task per image.

The image is first copied into a zero-bordered scratch (its padding) whose rows are
``wp = w + pl + pr`` wide, and outputs are computed on that same flattened grid: output
pixel ``i * wp + j`` reads input ``i * wp + j + a * wp + b`` for tap (a, b), so every
tap of 16 consecutive outputs is one contiguous vector load, across row ends. Columns
``j >= ow`` of that grid are computed and dropped (LeNet-5's c1: 28 of 32 kept). Stride
1, dilation 1, groups 1 only; ``suits`` says when the binder should pick it.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .activation import act_inplace
from .simd import LANES, vfma, vload, vsplat, vstore

OCB = 4  # output channels per register tile (4 x 16 floats: 8 ymm registers on AVX2)
MAX_ROWS = 576  # C*kh*kw at most (64 channels of 3x3): the largest measured to win
SERIAL_FLOPS = 1 << 22  # below ~4 MFLOP one thread beats a parallel region


def suits(c_in: int, c_out: int, kh: int, kw: int, stride: tuple, dilation: tuple,
          groups: int) -> bool:
    """Whether this kernel runs the layer instead of im2col + GEMM. Measured here (b32,
    fused bias + relu): LeNet-5's c1 and c2 8 -> 33 and 15 -> 45 GFLOP/s; 3x3 convs with
    3-64 input channels 1.3-2.1x faster, up to 110 GFLOP/s; equal at 16 -> 128 channels."""
    return (groups == 1 and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
            and kh * kw > 1 and c_in * kh * kw <= MAX_ROWS)  # 1x1: a GEMM is 1.3-2x faster


def scratch_sizes(h: int, w: int, kh: int, kw: int, pt: int, pl: int, pb: int,
                  pr: int) -> tuple[int, int, int]:
    """(padded row width, flattened outputs rounded up to whole vectors, floats per
    padded input channel): vector loads at the last outputs stay inside the scratch."""
    wp = w + pl + pr
    oh = h + pt + pb - kh + 1
    lr = -(-(oh * wp) // LANES) * LANES
    return wp, lr, lr + (kh - 1) * wp + kw


@numba.njit(cache=True, inline="always")
def _tile(xp, w2, ob, o_last, p0, wp, kh, kw, c_n):
    # OCB accumulators for outputs ob..ob+3 (clamped to o_last: a partial last block
    # recomputes the last channel, and only valid channels are stored)
    o0, o1, o2, o3 = ob, min(ob + 1, o_last), min(ob + 2, o_last), min(ob + 3, o_last)
    a0 = vsplat(np.float32(0.0))
    a1 = a0
    a2 = a0
    a3 = a0
    t = 0
    for c in range(c_n):
        xc = xp[c]
        for a in range(kh):
            for b in range(kw):
                xv = vload(xc, p0 + a * wp + b)
                a0 = vfma(vsplat(w2[o0, t]), xv, a0)
                a1 = vfma(vsplat(w2[o1, t]), xv, a1)
                a2 = vfma(vsplat(w2[o2, t]), xv, a2)
                a3 = vfma(vsplat(w2[o3, t]), xv, a3)
                t += 1
    return a0, a1, a2, a3


@numba.njit(cache=True, inline="always")
def _pad_plane(x, xp, t, pt, pl, wp):
    # plane t = (image, channel) into the interior of its zero-bordered scratch row
    c_n, h, w = x.shape[1], x.shape[2], x.shape[3]
    n, c = t // c_n, t % c_n
    for i in range(h):
        dst = xp[n, c, (i + pt) * wp + pl:]
        src = x[n, c, i]
        for j in range(w):
            dst[j] = src[j]


@numba.njit(cache=True, inline="always")
def _block(xp, w2, out, t, yb, wp, lr, kh, kw, bias, has_bias, res, has_res, code, alpha):
    # task t = (image, block of OCB output channels): tiles, then the block's epilogue
    # while it is in cache
    o_n, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    nb = (o_n + OCB - 1) // OCB
    n, ob = t // nb, (t % nb) * OCB
    xn = xp[n]
    for p0 in range(0, lr, LANES):
        a0, a1, a2, a3 = _tile(xn, w2, ob, o_n - 1, p0, wp, kh, kw, xn.shape[0])
        vstore(yb[0], p0, a0)
        vstore(yb[1], p0, a1)
        vstore(yb[2], p0, a2)
        vstore(yb[3], p0, a3)
    for k in range(min(OCB, o_n - ob)):
        o = ob + k
        bv = bias[o] if has_bias else np.float32(0.0)
        for i in range(oh):
            row, src = out[n, o, i], yb[k, i * wp:]
            for j in range(ow):
                row[j] = src[j] + bv
            if has_res:
                r = res[n, o, i]
                for j in range(ow):
                    row[j] += r[j]
            act_inplace(row, code, alpha)


@numba.njit(cache=True, parallel=True)
def conv_direct(x, w2, out, xp, kh, kw, pt, pl, wp, lr, bias, has_bias, res, has_res,
                code, alpha):
    """out = act(conv(x, w) + bias + res). w2: the weight as (O, C*kh*kw); xp: the
    (N, C, lp) scratch from ``scratch_sizes``, zeroed once (only interiors are written)."""
    for t in prange(x.shape[0] * x.shape[1]):
        _pad_plane(x, xp, t, pt, pl, wp)
    for t in prange(x.shape[0] * ((out.shape[1] + OCB - 1) // OCB)):
        yb = np.empty((OCB, lr), np.float32)
        _block(xp, w2, out, t, yb, wp, lr, kh, kw, bias, has_bias, res, has_res, code, alpha)


@numba.njit(cache=True)
def conv_direct_serial(x, w2, out, xp, kh, kw, pt, pl, wp, lr, bias, has_bias, res, has_res,
                       code, alpha):
    """conv_direct without parallel regions, for layers too small to split."""
    for t in range(x.shape[0] * x.shape[1]):
        _pad_plane(x, xp, t, pt, pl, wp)
    yb = np.empty((OCB, lr), np.float32)
    for t in range(x.shape[0] * ((out.shape[1] + OCB - 1) // OCB)):
        _block(xp, w2, out, t, yb, wp, lr, kh, kw, bias, has_bias, res, has_res, code, alpha)
