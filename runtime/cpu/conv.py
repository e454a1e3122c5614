"""Conv2d CPU kernel for NCHW, with the fused epilogue (bias, residual, activation).

Five paths, picked once at bind time:
* groups 1, 16 or more input and output channels: the blocked NCHW16c kernel
  (conv_blocked.py) between two layout conversions into scratch, ~2x im2col + BLAS with
  the conversions (what training runs, whose tensors are NCHW).
* stride 1, groups 1, C*kh*kw <= 576: conv_direct.py, a register-tiled direct loop
  (LeNet-5's convs, stems); BLAS runs short GEMMs slowly.
* 1x1, stride 1, no padding, groups 1: a GEMM per image, weight (O, C) @ x (C, H*W).
* groups 1 otherwise: im2col per image into a scratch matrix (C*kh*kw, OH*OW), then a
  BLAS GEMM straight into the output. Deep layers with few pixels per image im2col
  several images side by side so one GEMM is not skinny (``images_per_gemm``). Measured here, BLAS beats auto-vectorized direct
  loops 3-5x; the blocked NCHW16c kernel (conv_nchwc.py) is the fast path beyond that.
* grouped and depthwise: a direct loop per (image, output channel) whose inner loop runs
  over a contiguous output row, with the valid range of columns computed per kernel tap
  so padding costs no per-element branch.
After each image's product, one jitted sweep adds bias and residual and applies the
activation while that image's output is still in cache.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from . import blas, conv_blocked, conv_direct
from .activation import act_code, act_inplace, apply_act
from .jit import PARALLEL, valid_range

CHUNK_FLOATS = 1 << 21  # 8 MiB of im2col scratch per GEMM


def images_per_gemm(n: int, rows: int, pixels: int) -> int:
    """How many images' im2col columns one GEMM takes: deep layers have few pixels per
    image, so a GEMM per image is skinny (K = 16 at 4x4) and slow in BLAS; batching
    images up to CHUNK_FLOATS of scratch makes it square enough."""
    return max(1, min(n, CHUNK_FLOATS // max(rows * pixels, 1)))


@numba.njit(cache=True, parallel=PARALLEL)
def _im2col_group(x, col, i0, k, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    # images i0..i0+k of x (N, C, H, W) -> col (C*kh*kw, k*OH*OW), image j in columns
    # [j*P, (j+1)*P): one parallel call per GEMM instead of one per image. A task is one
    # input plane (its kh*kw rows of col). Flat arrays and unsigned offsets: with 2-D
    # signed indexing each element paid Numba's negative-index check and the row copies
    # stayed scalar (2-5x slower, measured on ResNet-18's layers).
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    p = oh * ow
    xf, cf = x.reshape(-1), col.reshape(-1)
    ld = col.shape[1]
    for t in prange(c_in * k):
        c = t // k
        base = (t % k) * p
        src = ((i0 + t % k) * c_in + c) * h * w
        for a in range(kh):
            i_lo, i_hi = valid_range(oh, h, sh, pt, a * dh)
            for b in range(kw):
                j0, j1 = valid_range(ow, w, sw, pl, b * dw)
                d0 = ((c * kh + a) * kw + b) * ld + base
                for i in range(oh):
                    d = np.uint64(d0 + i * ow)
                    # columns [lo, hi) read the input, the rest are zero padding (all of
                    # them in rows whose tap is above or below the image)
                    lo, hi = (j0, j1) if i_lo <= i < i_hi else (ow, ow)
                    for j in range(lo):
                        cf[d + np.uint64(j)] = 0.0
                    if lo < hi:
                        # input index of output column lo (>= 0: lo is the first valid one)
                        s = np.uint64(src + (i * sh - pt + a * dh) * w + lo * sw - pl + b * dw)
                        dl = d + np.uint64(lo)
                        if sw == 1:  # a contiguous run: a vectorized copy
                            for q in range(hi - lo):
                                cf[dl + np.uint64(q)] = xf[s + np.uint64(q)]
                        else:
                            for q in range(hi - lo):
                                cf[dl + np.uint64(q)] = xf[s + np.uint64(q * sw)]
                    for j in range(hi, ow):
                        cf[d + np.uint64(j)] = 0.0


@numba.njit(cache=True, parallel=PARALLEL)
def _gather_images(src, i0, k, dst):
    # src (N, R, P): images i0..i0+k side by side -> dst (R, k*P)
    r_n, p = src.shape[1], src.shape[2]
    for t in prange(r_n * k):
        r = t // k
        j = t % k
        for q in range(p):
            dst[r, j * p + q] = src[i0 + j, r, q]


@numba.njit(cache=True, parallel=PARALLEL)
def _scatter_epilogue(prod, out, i0, k, bias, has_bias, res, has_res, code, alpha):
    # prod (O, k*P) of a batched GEMM -> out (N, O, P) images i0..i0+k, adding bias and
    # residual and applying the activation in the same sweep
    o_n, p = out.shape[1], out.shape[2]
    for t in prange(o_n * k):
        o = t // k
        j = t % k
        bv = bias[o] if has_bias else np.float32(0.0)
        dst, src = out[i0 + j, o], prod[o, j * p:(j + 1) * p]
        for q in range(p):  # simple loops, each vectorized (see act_inplace)
            dst[q] = src[q] + bv
        if has_res:
            r = res[i0 + j, o]
            for q in range(p):
                dst[q] += r[q]
        act_inplace(dst, code, alpha)


@numba.njit(cache=True, parallel=PARALLEL)
def _epilogue(out, bias, has_bias, res, has_res, code, alpha):
    # out, res: (O, P) for one image
    o_n, p_n = out.shape
    for o in prange(o_n):
        row = out[o]
        if has_bias:
            bv = bias[o]
            for p in range(p_n):
                row[p] += bv
        if has_res:
            r = res[o]
            for p in range(p_n):
                row[p] += r[p]
        act_inplace(row, code, alpha)


@numba.njit(cache=True, parallel=PARALLEL)
def _direct(x, w, out, bias, has_bias, res, has_res, code, alpha,
            sh, sw, pt, pl, dh, dw, groups):
    n_img, c_in, h, wd = x.shape
    o_n, cg, kh, kw = w.shape
    _, _, oh, ow = out.shape
    og = o_n // groups
    for t in prange(n_img * o_n):
        n = t // o_n
        o = t % o_n
        g = o // og
        acc = np.zeros((oh, ow), np.float32)
        for c in range(cg):
            ci = g * cg + c
            for a in range(kh):
                i0, i1 = valid_range(oh, h, sh, pt, a * dh)
                for b in range(kw):
                    j0, j1 = valid_range(ow, wd, sw, pl, b * dw)
                    wv = w[o, c, a, b]
                    for i in range(i0, i1):
                        y = i * sh - pt + a * dh
                        base = j0 * sw - pl + b * dw
                        for j in range(j0, j1):
                            acc[i, j] += wv * x[n, ci, y, base + (j - j0) * sw]
        bv = bias[o] if has_bias else np.float32(0.0)
        for i in range(oh):
            for j in range(ow):
                v = acc[i, j] + bv
                if has_res:
                    v += res[n, o, i, j]
                out[n, o, i, j] = apply_act(v, code, alpha)


@register_kernel("conv2d")
def bind_conv2d(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    """2-D convolution exactly as torch.nn.functional.conv2d, plus the fused epilogue."""
    x, w, out = ins[0], ins[1], outs[0]
    has_bias, has_res = bool(attrs["bias"]), bool(attrs.get("residual", False))
    bias = ins[2] if has_bias else np.zeros(1, np.float32)
    res = ins[-1] if has_res else np.zeros((1, 1, 1, 1), np.float32)
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel_size"], attrs["stride"], attrs["dilation"]
    pt, pl, pb, pr = attrs["padding"]
    groups = int(attrs["groups"])
    n, c, h, wd = x.shape
    o_n = w.shape[0]
    oh, ow = out.shape[2], out.shape[3]
    if w.shape != (o_n, c // groups, kh, kw) or out.shape[:2] != (n, o_n):
        raise ValueError(f"conv2d: x {x.shape}, weight {w.shape}, out {out.shape} disagree "
                         f"for groups={groups}")

    if groups != 1:
        return lambda: _direct(x, w, out, bias, has_bias, res, has_res, code, alpha,
                               sh, sw, pt, pl, dh, dw, groups)
    if conv_blocked.suits_nchw(c, o_n, groups, attrs.get("activation", "none")):
        return conv_blocked.bind_nchw(ins, outs, attrs)
    if conv_direct.suits(c, kh, kw, (sh, sw), (dh, dw), groups):
        return conv_direct.bind(x, w.reshape(o_n, c * kh * kw), out, kh, kw,
                                (pt, pl, pb, pr), bias, has_bias, res, has_res, code, alpha)

    rows, p = c * kh * kw, oh * ow
    w2 = w.reshape(o_n, rows)
    out3 = out.reshape(n, o_n, p)
    res3 = res.reshape(res.shape[0], res.shape[1], -1)
    plain = not has_bias and not has_res and code == 0
    pointwise = (kh, kw, sh, sw, pt, pl, pb, pr) == (1, 1, 1, 1, 0, 0, 0, 0)
    x3 = x.reshape(n, c, h * wd)
    ch = images_per_gemm(n, rows, p)
    col_buf = None if pointwise and ch == 1 else np.empty(rows * ch * p, np.float32)
    out_buf = np.empty(o_n * ch * p, np.float32) if ch > 1 else None

    def epilogue(i0: int, k: int) -> None:
        if not plain:
            for i in range(i0, i0 + k):
                _epilogue(out3[i], bias, has_bias, res3[i] if has_res else res3[0], has_res,
                          code, alpha)

    col1 = None if col_buf is None else col_buf[:rows * p].reshape(rows, p)

    def run_per_image():
        for i in range(n):
            if pointwise:
                blas.dot(w2, x3[i], out3[i])
            else:
                _im2col_group(x, col1, i, 1, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)
                blas.dot(w2, col1, out3[i])
            epilogue(i, 1)

    def run_batched():
        # deep layers: few pixels per image, so one GEMM covers several images
        for i0 in range(0, n, ch):
            k = min(ch, n - i0)
            col = col_buf[:rows * k * p].reshape(rows, k * p)
            if pointwise:
                _gather_images(x3, i0, k, col)
            else:
                _im2col_group(x, col, i0, k, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)
            prod = out_buf[:o_n * k * p].reshape(o_n, k * p)
            blas.dot(w2, col, prod)
            _scatter_epilogue(prod, out3, i0, k, bias, has_bias, res3, has_res, code, alpha)
    return run_batched if ch > 1 else run_per_image
