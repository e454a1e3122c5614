"""Channels-last (NHWC) CPU kernels: the layout TensorFlow and cuDNN's fast paths use.

In NHWC a pixel's channels are contiguous, so convolution as a GEMM needs no transpose
at all: the im2col rows of a batch of images, (N*OH*OW, kh*kw*C), times the weight
packed once at bind as (kh*kw*C, O), is the output (N*OH*OW, O) in place. Per-channel
work (bias, BN scale/shift, pooling windows) runs along the contiguous channel axis.
Ops without an NHWC kernel here (LRN, softmax, LP pooling, Flatten) make select_layout
convert back to NCHW before them.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from . import blas
from .activation import act_code, apply_act
from .conv import CHUNK_FLOATS
from .elementwise import PARALLEL_MIN, bind_add, bind_dropout, bind_leaky_relu, bind_relu, bind_sigmoid, bind_tanh
from .jit import PARALLEL
from .linear import _readonly, bind_concat, epilogue_rows
from .norm import bn_scale_shift
from .simd import (LANES, TILE, fmax_nan, store_tile, vfma, vfma_tile, vload, vload_tile,
                   vmax_nan, vsplat, vstore, vstore_tile, vtile, wide_tiles)

NHWC = "NHWC"

# elementwise ops work on the flat buffer whatever the layout
for _op, _bind in [("relu", bind_relu), ("tanh", bind_tanh), ("leaky_relu", bind_leaky_relu),
                   ("sigmoid", bind_sigmoid), ("dropout", bind_dropout), ("add", bind_add)]:
    register_kernel(_op, "cpu", NHWC)(_bind)


@register_kernel("layout_transform", "cpu", NHWC)
def bind_layout_transform_nhwc(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                               attrs: Mapping):
    src, dst = attrs["src"], attrs["dst"]
    x, out = ins[0], outs[0]
    if (src, dst) == ("NCHW", NHWC):
        return lambda: np.copyto(out, x.transpose(0, 2, 3, 1))
    if (src, dst) == (NHWC, "NCHW"):
        return lambda: np.copyto(out, x.transpose(0, 3, 1, 2))
    raise ValueError(f"layout_transform: no conversion from {src} to {dst}")


@numba.njit(cache=True, parallel=PARALLEL)
def _im2col_nhwc(x, col, r0, r1, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    # output rows r0..r1 of the batch (row r = image r // OH, row r % OH) of x (N, H, W, C)
    # -> col ((r1-r0)*OW, kh*kw*C); taps outside the input are zero
    n_img, h, w, c = x.shape
    for r in prange(r1 - r0):
        n = (r0 + r) // oh
        i = (r0 + r) % oh
        for j in range(ow):
            row = r * ow + j
            for a in range(kh):
                y = i * sh - pt + a * dh
                for b in range(kw):
                    z = j * sw - pl + b * dw
                    base = (a * kw + b) * c
                    if y < 0 or y >= h or z < 0 or z >= w:
                        for q in range(c):
                            col[row, base + q] = 0.0
                    else:
                        for q in range(c):
                            col[row, base + q] = x[n, y, z, q]


@numba.njit(cache=True, parallel=PARALLEL)
def _conv_direct_nhwc(x, w, out, bias, has_bias, res, has_res, code, alpha,
                      sh, sw, pt, pl, dh, dw, groups):
    # grouped and depthwise: w (O, C/groups, kh, kw); inner loop over contiguous channels
    n_img, h, wd, c_in = x.shape
    o_n, cg, kh, kw = w.shape
    _, oh, ow, _ = out.shape
    og = o_n // groups
    for t in prange(n_img * oh):
        n = t // oh
        i = t % oh
        acc = np.zeros(o_n, np.float32)
        for j in range(ow):
            acc[:] = 0.0
            for a in range(kh):
                y = i * sh - pt + a * dh
                if y < 0 or y >= h:
                    continue
                for b in range(kw):
                    z = j * sw - pl + b * dw
                    if z < 0 or z >= wd:
                        continue
                    for o in range(o_n):
                        g0 = (o // og) * cg
                        s = acc[o]
                        for q in range(cg):
                            s += w[o, q, a, b] * x[n, y, z, g0 + q]
                        acc[o] = s
            for o in range(o_n):
                v = acc[o]
                if has_bias:
                    v += bias[o]
                if has_res:
                    v += res[n, i, j, o]
                out[n, i, j, o] = apply_act(v, code, alpha)


# The NHWC conv's GEMM: c (M, N) = a (M, K) @ b (K, N), b packed in strips of 16 columns
# (pack_strips). A task is one strip and a chunk of GEMM_CHUNK rows; its register tile is
# TILE rows x 16 columns (6 on AVX2, like the blocked conv's), over K in blocks of
# GEMM_KC rows of b (16 KiB of the strip, reused from L1 by every tile of the chunk; the
# partial sums wait in c). Against OpenBLAS on this Zen 3 (hot caches, interleaved): the
# ResNet-18 / Inception shapes 1.03-1.17x faster (M 1024, K 576-2304, N 64-256), narrow N
# 1.2-1.65x (Inception's 1x1 and 5x5 convs, N 16-32), and small M 1.4-4.6x (VGG-11's
# 512-channel layers at batch 1: BLAS ran 4 or 16 rows on one thread).
GEMM_CHUNK = 96
GEMM_KC = 256


# inlined, not called: a call passed the arrays by value with atomic reference counts and
# the accumulators back through memory (0.67x on a K=27 stem, 0.90x at K=576, M=1024)
@numba.njit(cache=True, inline="always")
def _gemm_tile(accs, af, bf, r, k0, k1, k_n, s0):
    """accs += a[r:r + T, k0:k1] @ b[k0:k1, strip] (T = len(accs): one compile per width)."""
    for k in range(k0, k1):
        accs = vfma_tile(accs, af, np.uint64(r * k_n + k), np.uint64(k_n),
                         vload(bf, np.uint64(s0 + k * LANES)))
    return accs


@numba.njit(cache=True, inline="always")
def _gemm_rows(init, af, bf, cf, r, k0, k1, k_n, n_n, n0, s0, rf, has_res, act, alpha):
    """One tile (the width of ``init``, the bias) of rows r.. of c's strip at n0, over
    k0..k1; the last K block adds the residual and applies the activation in registers."""
    accs = init if k0 == 0 else vload_tile(init, cf, r * n_n + n0, n_n)
    accs = _gemm_tile(accs, af, bf, r, k0, k1, k_n, s0)
    if k1 == k_n:
        store_tile(accs, cf, r * n_n + n0, n_n, rf, has_res, act, alpha)
    else:
        vstore_tile(accs, cf, r * n_n + n0, n_n)


@numba.njit(cache=True, parallel=PARALLEL)
def _gemm_strips(a, bs, c, bias, res, has_res, act, alpha):
    """c = act(a @ b + bias (+ res)) with b packed by pack_strips (N a multiple of 16);
    ``res`` has c's shape when ``has_res``; act 0 none, 1 relu, 2 leaky_relu."""
    m_n, k_n = a.shape
    n_n = c.shape[1]
    af, bf, cf, rf = a.reshape(-1), bs.reshape(-1), c.reshape(-1), res.reshape(-1)
    chunks = (m_n + GEMM_CHUNK - 1) // GEMM_CHUNK
    for t in prange((n_n // LANES) * chunks):
        strip, ch = t // chunks, t % chunks
        n0, s0 = strip * LANES, strip * k_n * LANES
        r0, r1 = ch * GEMM_CHUNK, min(m_n, (ch + 1) * GEMM_CHUNK)
        n_wide = wide_tiles(r1 - r0)
        bvec = vload(bias, n0)
        for k0 in range(0, k_n, GEMM_KC):
            k1 = min(k_n, k0 + GEMM_KC)
            for i in range(n_wide):
                _gemm_rows(vtile(bvec, TILE), af, bf, cf, r0 + i * TILE, k0, k1, k_n, n_n,
                           n0, s0, rf, has_res, act, alpha)
            r = r0 + n_wide * TILE
            while r + 4 <= r1:
                _gemm_rows(vtile(bvec, 4), af, bf, cf, r, k0, k1, k_n, n_n, n0, s0, rf,
                           has_res, act, alpha)
                r += 4
            while r < r1:
                _gemm_rows(vtile(bvec, 1), af, bf, cf, r, k0, k1, k_n, n_n, n0, s0, rf,
                           has_res, act, alpha)
                r += 1


def pack_strips(b: np.ndarray) -> np.ndarray:
    """(K, N) -> (N / LANES, K, LANES): each strip of LANES columns contiguous, so a task
    of _gemm_strips streams its part of a weight that is not in cache (read as (K, N)
    rows, a 16-column strip ran 1.4x slower than BLAS inside VGG-11)."""
    k, n = b.shape
    return np.ascontiguousarray(b.reshape(k, n // LANES, LANES).transpose(1, 0, 2))


# The im2col + GEMM steps of an NHWC conv, in output rows of the batch (a step may end
# mid-image). Measured on ResNet-18's layers at batch 32 (Zen 3, OpenBLAS, interleaved
# A/B): steps of ~1024 GEMM rows ran the 64-channel 3x3 layer 1.1-1.5x and the
# 128-channel one 1.05-1.2x faster than steps that fill the 8 MiB of scratch (3 and 7
# images), whose columns no longer stay in cache between im2col and the GEMM; on deeper
# layers the two were within noise. The 3-channel stem (27 columns) ran 1.4x slower in
# 1024-row steps: a step also needs MIN_FLOATS of columns. At batch 1 on 224x224 images
# whole-image steps were as slow: the 56x56 layer 3.8 -> 2.8-3.1 ms, the 7x7 stride-2
# stem 5.5 -> 4.2 ms in steps of 1-3k rows.
ROWS_PER_GEMM = 1024
MIN_FLOATS = 1 << 19  # 2 MiB


def rows_per_gemm_nhwc(rows: int, k: int, ow: int) -> int:
    """Output rows (of ``ow`` pixels) per im2col + GEMM step of an NHWC conv with ``k`` =
    kh*kw*C columns and ``rows`` = N*OH output rows in all: at least ROWS_PER_GEMM GEMM
    rows and MIN_FLOATS of columns, at most CHUNK_FLOATS, and the rows cut into equal
    steps (32 images as 28 + 4 ran the last GEMM skinny)."""
    per_row = max(k * ow, 1)
    want = max(-(-ROWS_PER_GEMM // ow), -(-MIN_FLOATS // per_row))
    step = max(1, min(rows, want, CHUNK_FLOATS // per_row))
    steps = -(-rows // step)
    return -(-rows // steps)


@register_kernel("conv2d", "cpu", NHWC)
def bind_conv2d_nhwc(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    """Conv2d on NHWC tensors with the fused epilogue; weights packed (kh*kw*C, O) at bind."""
    x, w, out = ins[0], ins[1], outs[0]
    has_bias, has_res = bool(attrs["bias"]), bool(attrs.get("residual", False))
    bias = ins[2] if has_bias else np.zeros(w.shape[0], np.float32)
    res = ins[-1] if has_res else np.zeros((1, 1, 1, 1), np.float32)
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel_size"], attrs["stride"], attrs["dilation"]
    pt, pl = attrs["padding"][:2]
    groups = int(attrs["groups"])
    n, h, wd, c = x.shape
    _, oh, ow, o_n = out.shape
    if groups != 1:
        return lambda: _conv_direct_nhwc(x, w, out, bias, has_bias, res, has_res, code, alpha,
                                         sh, sw, pt, pl, dh, dw, groups)
    k = kh * kw * c
    wk = np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(k, o_n))  # (a, b, c) x O
    rows_n = n * oh
    step = rows_per_gemm_nhwc(rows_n, k, ow)
    out2 = out.reshape(n * oh * ow, o_n)
    res2 = res.reshape(-1, o_n) if has_res else np.zeros((1, 1), np.float32)
    plain = not has_bias and not has_res and code == 0
    bias, res2 = _readonly(bias), _readonly(res2)  # Linear's signature: compiled once
    strips = o_n % LANES == 0  # else (a classifier's 10 channels, say) BLAS
    if strips:  # the packed weight replaces the (K, O) one: the run holds one copy
        wk = pack_strips(wk)
    # bias, residual and relu / leaky_relu in the GEMM's registers (no pass over the
    # output); sigmoid and tanh, or BLAS, take the row epilogue after
    fused = strips and code in (0, 1, 2)
    zeros = _readonly(np.zeros(o_n, np.float32))  # read-only like bias and res2: one
    no_res = _readonly(np.zeros((1, LANES), np.float32))  # compiled signature for all
    # a 1x1 stride-1 conv's im2col rows are its input's pixels: read them in place
    pointwise = (kh, kw, sh, sw) == (1, 1, 1, 1) and not any(attrs["padding"]) \
        and x.flags.c_contiguous
    x2 = x.reshape(n * h * wd, c) if pointwise else None
    col_buf = None if pointwise else np.empty(step * ow * k, np.float32)

    def run():
        for r0 in range(0, rows_n, step):
            r1 = min(r0 + step, rows_n)
            if pointwise:
                col = x2[r0 * ow:r1 * ow]
            else:
                col = col_buf[:(r1 - r0) * ow * k].reshape((r1 - r0) * ow, k)
                _im2col_nhwc(x, col, r0, r1, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)
            rows = out2[r0 * ow:r1 * ow]
            if fused:
                _gemm_strips(col, wk, rows, bias,
                             res2[r0 * ow:r1 * ow] if has_res else no_res, has_res, code,
                             alpha)
            elif strips:
                _gemm_strips(col, wk, rows, zeros, no_res, False, 0, alpha)
            else:
                blas.dot(col, wk, rows)
        if not plain and not fused:  # the rows are (pixels, O) like a Linear's: its
            epilogue_rows(out2, bias, res2, has_res, code, alpha)  # row epilogue, once
    return run


@numba.njit(cache=True, parallel=PARALLEL)
def _bn_nhwc(x, out, scale, shift, code, alpha):
    rows, c = x.shape
    for r in prange(rows):
        for q in range(c):
            out[r, q] = apply_act(x[r, q] * scale[q] + shift[q], code, alpha)


@register_kernel("batch_norm", "cpu", NHWC)
def bind_batch_norm_nhwc(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                         attrs: Mapping):
    x, w, b, mean, var = ins[:5]
    c = x.shape[-1]
    x2, o2 = x.reshape(-1, c), outs[0].reshape(-1, c)
    eps = float(attrs["eps"])
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))

    def run():
        _bn_nhwc(x2, o2, *bn_scale_shift(w, b, mean, var, eps), code, alpha)
    return run


@numba.njit(cache=True, inline="always")
def _max_pool_row(x, out, t, kh, kw, sh, sw, pt, pl, dh, dw):
    # one output row of a pixel-vector layout (N, H, W, C): every tap is a contiguous
    # C-vector max into the output pixel, which LLVM vectorizes; slices starting at
    # index 0 keep Numba's negative-index wraparound out of the inner loop
    _, h, w, c = x.shape
    _, oh, ow, _ = out.shape
    n, i = t // oh, t % oh
    for j in range(ow):
        o = out[n, i, j]
        for q in range(c):
            o[q] = -np.inf
        for a in range(kh):
            y = i * sh - pt + a * dh
            if y < 0 or y >= h:
                continue
            for b in range(kw):
                z = j * sw - pl + b * dw
                if z < 0 or z >= w:
                    continue
                v = x[n, y, z]
                for q in range(c):
                    o[q] = fmax_nan(v[q], o[q])


@numba.njit(cache=True, inline="always")
def _max_pool_row_vec(x, out, t, kh, kw, sh, sw, pt, pl, dh, dw):
    # _max_pool_row for C == 16 (NCHW16c's blocks seen as pixels): each output pixel's
    # running max stays in one f32x16 register and is stored once. The row kernel's
    # per-tap slice and 16-trip loop ran 2.5-4x slower on Inception's and ResNet's pools
    # (b32 64 x 32x32 3x3/1: 7.4 -> 2.9 ms); with wide C (NHWC) the row kernel's long
    # contiguous loops are 1.2-1.6x faster than this one.
    _, h, w, _ = x.shape
    _, oh, ow, _ = out.shape
    xf, of = x.reshape(-1), out.reshape(-1)
    n, i = t // oh, t % oh
    for j in range(ow):
        acc = vsplat(np.float32(-np.inf))
        for a in range(kh):
            y = i * sh - pt + a * dh
            if y < 0 or y >= h:
                continue
            row = (n * h + y) * w
            for b in range(kw):
                z = j * sw - pl + b * dw
                if 0 <= z < w:
                    acc = vmax_nan(acc, vload(xf, np.uint64((row + z) * LANES)))
        vstore(of, ((n * oh + i) * ow + j) * LANES, acc)


@numba.njit(cache=True, inline="always")
def _max_pool_any_row(x, out, t, kh, kw, sh, sw, pt, pl, dh, dw):
    if x.shape[3] == LANES and x.flags.c_contiguous and out.flags.c_contiguous:
        _max_pool_row_vec(x, out, t, kh, kw, sh, sw, pt, pl, dh, dw)
    else:
        _max_pool_row(x, out, t, kh, kw, sh, sw, pt, pl, dh, dw)


@numba.njit(cache=True, parallel=PARALLEL)
def _max_pool_nhwc(x, out, kh, kw, sh, sw, pt, pl, dh, dw):
    for t in prange(out.shape[0] * out.shape[1]):
        _max_pool_any_row(x, out, t, kh, kw, sh, sw, pt, pl, dh, dw)


@numba.njit(cache=True)
def _max_pool_nhwc_serial(x, out, kh, kw, sh, sw, pt, pl, dh, dw):
    for t in range(out.shape[0] * out.shape[1]):
        _max_pool_any_row(x, out, t, kh, kw, sh, sw, pt, pl, dh, dw)


def bind_max_pool_channels_last(x: np.ndarray, out: np.ndarray, attrs: Mapping):
    """Max pooling over (N, H, W, C) arrays: NHWC, and NCHW16c seen as (N*Cb, H, W, 16)."""
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel_size"], attrs["stride"], attrs["dilation"]
    pt, pl = attrs["padding"][:2]
    fn = _max_pool_nhwc if out.size * kh * kw >= PARALLEL_MIN else _max_pool_nhwc_serial
    return lambda: fn(x, out, kh, kw, sh, sw, pt, pl, dh, dw)


@numba.njit(cache=True, parallel=PARALLEL)
def _avg_pool_nhwc(x, out, kh, kw, sh, sw, pt, pl, pb, pr, count_include_pad):
    n_img, h, w, c = x.shape
    _, oh, ow, _ = out.shape
    for t in prange(n_img * oh):
        n = t // oh
        i = t % oh
        for j in range(ow):
            o = out[n, i, j]
            for q in range(c):
                o[q] = 0.0
            hs, ws = i * sh - pt, j * sw - pl
            cnt = 0
            for a in range(kh):
                y = hs + a
                if y < 0 or y >= h:
                    continue
                for b in range(kw):
                    z = ws + b
                    if z < 0 or z >= w:
                        continue
                    cnt += 1
                    v = x[n, y, z]
                    for q in range(c):
                        o[q] += v[q]
            # PyTorch's divisor: the window clipped to the padded input, or the count
            he, we = min(hs + kh, h + pb), min(ws + kw, w + pr)
            div = np.float32((he - hs) * (we - ws) if count_include_pad else cnt)
            for q in range(c):
                o[q] /= div


@register_kernel("max_pool2d", "cpu", NHWC)
def bind_max_pool_nhwc(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    return bind_max_pool_channels_last(ins[0], outs[0], attrs)


@register_kernel("avg_pool2d", "cpu", NHWC)
def bind_avg_pool_nhwc(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    (kh, kw), (sh, sw) = attrs["kernel_size"], attrs["stride"]
    pt, pl, pb, pr = attrs["padding"]
    x, out = ins[0], outs[0]
    cip = bool(attrs["count_include_pad"])
    return lambda: _avg_pool_nhwc(x, out, kh, kw, sh, sw, pt, pl, pb, pr, cip)


@numba.njit(cache=True)
def _global_avg_nhwc(x, out):
    # x (N, P, C) -> out (N, C): rows of C channels summed (vectorized), float32 like
    # the NCHW kernel's sums
    n, p, c = x.shape
    inv = np.float32(1.0) / np.float32(p)
    for i in range(n):
        o = out[i]
        for q in range(c):
            o[q] = 0.0
        for k in range(p):
            v = x[i, k]
            for q in range(c):
                o[q] += v[q]
        for q in range(c):
            o[q] *= inv


@register_kernel("global_avg_pool2d", "cpu", NHWC)
def bind_global_avg_pool_nhwc(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                              attrs: Mapping):
    """Serial: a pass over the last feature map (8k floats for ResNet-18 at batch 1). It
    replaces np.mean, which took 150-200 us there inside the network (12 us here)."""
    n, h, w, c = ins[0].shape
    x3, out = ins[0].reshape(n, h * w, c), outs[0]
    return lambda: _global_avg_nhwc(x3, out)


@register_kernel("concat", "cpu", NHWC)
def bind_concat_nhwc(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    """Channel concat: the channel axis of NHWC is the last one."""
    if int(attrs["axis"]) != 1:
        raise ValueError("concat NHWC: only the channel axis is supported")
    return bind_concat(ins, outs, {**attrs, "axis": 3})
