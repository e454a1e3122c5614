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
from .jit import PARALLEL, parallel_and_serial
from .simd import (LANES, TILE, vfma, vfma_taps, vload, vsplat, vstore, vstore_tile,
                   vzero_taps)

OCB = 4  # output channels per register tile (4 x 16 floats: 8 ymm registers on AVX2)
# C*kh*kw at most (32 channels of 3x3). At b32 on 32x32 images: 16 channels 2.69 vs 4.77 ms
# for im2col + GEMM, 32 channels 11.0 vs 12.9; from 40-48 channels on (360-432 rows) the
# GEMM was as fast or faster (64 channels: 30.6 vs 33.7 ms, at 56x56 64.6 vs 84.1).
MAX_ROWS = 288
GRAD_WEIGHT_MAX_ROWS = 160  # dL/dW: the GEMM (long K = N*OH*OW) wins beyond (64 ch: 1.45x)
# below ~2 MFLOP one thread beats a parallel region (1.8 MFLOP: 76 vs 95 us; a CIFAR
# stem at batch 1, 3.5 MFLOP: 151 vs 139 us). The parallel kernel is the one the compile
# helper warms, so a stem at batch 1 above this does not compile the serial one.
SERIAL_FLOPS = 1 << 21


def suits(c_in: int, kh: int, kw: int, stride: tuple, dilation: tuple, groups: int) -> bool:
    """Whether this kernel runs the layer instead of im2col + GEMM. Measured here (b32,
    fused bias + relu): LeNet-5's c1 and c2 8 -> 33 and 15 -> 45 GFLOP/s; 3x3 convs with
    3-32 input channels 1.2-1.8x faster (see MAX_ROWS)."""
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


def _padded_input(x: np.ndarray, out_shape: tuple, kh: int, kw: int, pads: tuple
                  ) -> tuple[int, int, np.ndarray, bool]:
    """For a binder: (wp, lr, the zeroed (N, C, lp) input scratch, whether to run serially),
    after checking that ``out_shape`` (N, O, OH, OW) is this stride-1 conv's output."""
    n, c, h, w = x.shape
    pt, pl, pb, pr = pads
    o_n, oh, ow = out_shape[1:]
    if (oh, ow) != (h + pt + pb - kh + 1, w + pl + pr - kw + 1):
        raise ValueError(f"conv_direct: input {x.shape} and output {tuple(out_shape)} disagree "
                         f"for a {kh}x{kw} kernel with padding {pads}")
    wp, lr, lp = scratch_sizes(h, w, kh, kw, pt, pl, pb, pr)
    xp = np.zeros((n, c, lp), np.float32)  # zero borders; interiors written per call
    return wp, lr, xp, 2 * n * o_n * oh * ow * c * kh * kw < SERIAL_FLOPS


@numba.njit(cache=True, inline="always")
def _block_channels(ob, o_last):
    """The OCB output channels of the block from ``ob``, clamped to ``o_last``: a partial
    last block recomputes its last channel, and only valid channels are stored."""
    return ob, min(ob + 1, o_last), min(ob + 2, o_last), min(ob + 3, o_last)


@numba.njit(cache=True, inline="always")
def _tile(xp, w2, ob, o_last, p0, wp, kh, kw, c_n):
    # OCB accumulators for the outputs of _block_channels(ob, o_last)
    o0, o1, o2, o3 = _block_channels(ob, o_last)
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
    _block_epilogue(out, yb, n, ob, wp, bias, has_bias, res, has_res, code, alpha)


@numba.njit(cache=True)
def _block_epilogue(out, yb, n, ob, wp, bias, has_bias, res, has_res, code, alpha):
    """A block's rows from the scratch yb (width wp) into out, with bias, residual and
    activation. A call, not inlined: it runs once per block of OCB channels, and inlined
    into both conv kernels its activation loops cost ~2 s of their cold compile."""
    o_n, oh, ow = out.shape[1], out.shape[2], out.shape[3]
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


@numba.njit(cache=True, parallel=PARALLEL)
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


def bind(x: np.ndarray, w2: np.ndarray, out: np.ndarray, kh: int, kw: int,
         pads: tuple, bias: np.ndarray, has_bias: bool, res: np.ndarray, has_res: bool,
         code: int, alpha: np.float32):
    """A run() computing out = act(conv(x, w2) + bias + res) for a stride-1 layer that
    ``suits``; w2 is (O, C*kh*kw), read on every call (weights updated in place stay seen).
    Its padded-input scratch is allocated here, once."""
    if w2.shape != (out.shape[1], x.shape[1] * kh * kw):
        raise ValueError(f"conv_direct: x {x.shape}, weight {w2.shape}, out {out.shape} "
                         "disagree")
    wp, lr, xp, small = _padded_input(x, out.shape, kh, kw, pads)
    fn = conv_direct_serial if small else conv_direct
    return lambda: fn(x, w2, out, xp, kh, kw, pads[0], pads[1], wp, lr, bias, has_bias, res,
                      has_res, code, alpha)


# ---------------------------------------------------------------- dL/dW (training)
# dW[o, c, a, b] = sum over images n and outputs p of dy[n, o, p] * x[n, c, p + a*wp + b]
# on the same flattened padded grid as the forward: dy is copied onto that grid (zero in
# the dropped columns), and each weight is a dot product of contiguous vectors. A task
# is (block of OCB output channels, input channel); it sums over the whole batch itself,
# so the result is deterministic and needs no reduction across threads.

@numba.njit(cache=True, inline="always")
def _lane_sum(buf, start):
    """The sum of the 16 floats ``buf[start:start + 16]`` (a stored vector's lanes)."""
    s = np.float32(0.0)
    for q in range(LANES):
        s += buf[start + q]
    return s


@numba.njit(cache=True, inline="always")
def _hsum(v, buf):
    vstore(buf, 0, v)
    return _lane_sum(buf, 0)


@numba.njit(cache=True, inline="always")
def _grad_weight_block(xp, gyp, gw2, t, kh, kw, wp, lr, buf):
    c_n, o_n = xp.shape[1], gyp.shape[1]
    ob, c = (t // c_n) * OCB, t % c_n
    o_last = o_n - 1
    o0, o1, o2, o3 = _block_channels(ob, o_last)
    for a in range(kh):
        for b in range(kw):
            shift = a * wp + b
            a0 = vsplat(np.float32(0.0))
            a1 = a0
            a2 = a0
            a3 = a0
            for n in range(xp.shape[0]):
                xc, g = xp[n, c], gyp[n]
                g0, g1, g2, g3 = g[o0], g[o1], g[o2], g[o3]
                for p0 in range(0, lr, LANES):
                    xv = vload(xc, p0 + shift)
                    a0 = vfma(vload(g0, p0), xv, a0)
                    a1 = vfma(vload(g1, p0), xv, a1)
                    a2 = vfma(vload(g2, p0), xv, a2)
                    a3 = vfma(vload(g3, p0), xv, a3)
            tap = (c * kh + a) * kw + b
            gw2[o0, tap] = _hsum(a0, buf)
            if ob + 1 <= o_last:
                gw2[o1, tap] = _hsum(a1, buf)
            if ob + 2 <= o_last:
                gw2[o2, tap] = _hsum(a2, buf)
            if ob + 3 <= o_last:
                gw2[o3, tap] = _hsum(a3, buf)


@numba.njit(cache=True, parallel=PARALLEL)
def grad_weight_direct(x, gy, gw2, xp, gyp, kh, kw, pt, pl, wp, lr):
    """gw2 (O, C*kh*kw) = dL/dW of a stride-1 conv from its input x and dL/dy gy; xp and
    gyp: zeroed scratch (N, C, lp) and (N, O, lr) whose interiors are written here."""
    for t in prange(x.shape[0] * x.shape[1]):
        _pad_plane(x, xp, t, pt, pl, wp)
    for t in prange(gy.shape[0] * gy.shape[1]):
        _pad_plane(gy, gyp, t, 0, 0, wp)  # dL/dy onto the grid, no border
    for t in prange(((gy.shape[1] + OCB - 1) // OCB) * x.shape[1]):
        buf = np.empty(LANES, np.float32)
        _grad_weight_block(xp, gyp, gw2, t, kh, kw, wp, lr, buf)


@numba.njit(cache=True)
def grad_weight_direct_serial(x, gy, gw2, xp, gyp, kh, kw, pt, pl, wp, lr):
    """grad_weight_direct without parallel regions, for layers too small to split."""
    for t in range(x.shape[0] * x.shape[1]):
        _pad_plane(x, xp, t, pt, pl, wp)
    for t in range(gy.shape[0] * gy.shape[1]):
        _pad_plane(gy, gyp, t, 0, 0, wp)  # dL/dy onto the grid, no border
    buf = np.empty(LANES, np.float32)
    for t in range(((gy.shape[1] + OCB - 1) // OCB) * x.shape[1]):
        _grad_weight_block(xp, gyp, gw2, t, kh, kw, wp, lr, buf)


# With AVX-512's 32 registers a task can hold a whole kernel row: kw taps x 4 output
# channels (20 accumulators for a 5-wide kernel). Each dL/dy vector is then loaded once
# per row instead of once per tap, and each shifted input vector feeds 4 FMAs: 9 loads
# per 20 FMAs for LeNet-5's 5x5 convs against 5 per 4 tap by tap.
ROW_TAPS_MAX = 5 if TILE == 8 else 0  # AVX2: 20 accumulators would take 40 of 16 ymm


def _grad_weight_rows(x, gy, gw2, xp, gyp, kh, pt, pl, wp, lr, cols):
    """grad_weight_direct a kernel row at a time; ``cols`` is a tuple of kw entries (its
    length, a compile-time constant, sizes the tile of 4 * kw accumulators)."""
    # the two padding loops are written out in each dL/dW kernel: moved into an inlined
    # helper, their prange ran on one thread (LeNet-5's c2 dL/dW 0.27 -> 0.44 ms)
    for t in prange(x.shape[0] * x.shape[1]):
        _pad_plane(x, xp, t, pt, pl, wp)
    for t in prange(gy.shape[0] * gy.shape[1]):
        _pad_plane(gy, gyp, t, 0, 0, wp)  # dL/dy onto the grid, no border
    n_img, c_n, lp = xp.shape
    o_n = gy.shape[1]
    kw = len(cols)
    zero = vzero_taps(cols)
    xf, gf = xp.reshape(-1), gyp.reshape(-1)
    for t in prange(((o_n + OCB - 1) // OCB) * c_n):
        buf = np.empty(4 * kw * LANES, np.float32)
        ob, c = (t // c_n) * OCB, t % c_n
        o0, o1, o2, o3 = _block_channels(ob, o_n - 1)
        for a in range(kh):
            accs = zero
            for n in range(n_img):
                xb, gb = (n * c_n + c) * lp + a * wp, n * o_n * lr
                for p0 in range(0, lr, LANES):
                    accs = vfma_taps(accs, xf, xb + p0, vload(gf, gb + o0 * lr + p0),
                                     vload(gf, gb + o1 * lr + p0), vload(gf, gb + o2 * lr + p0),
                                     vload(gf, gb + o3 * lr + p0))
            vstore_tile(accs, buf, 0, LANES)
            for b in range(kw):
                for k in range(min(OCB, o_n - ob)):
                    gw2[ob + k, (c * kh + a) * kw + b] = _lane_sum(buf, (4 * b + k) * LANES)


_GRAD_WEIGHT_ROWS = parallel_and_serial(_grad_weight_rows)


def suits_grad_weight(c_in: int, kh: int, kw: int, stride: tuple, dilation: tuple,
                      groups: int) -> bool:
    """Whether ``bind_grad_weight`` beats im2col + GEMM. Measured here: LeNet-5's c1 and
    c2 (b64) 2.7 -> 0.65 ms and 1.9 -> 1.25 ms; 3 -> 64 channels 1.2x; 64 -> 64 0.7x."""
    return (suits(c_in, kh, kw, stride, dilation, groups)
            and c_in * kh * kw <= GRAD_WEIGHT_MAX_ROWS)


def bind_grad_weight(x: np.ndarray, gy: np.ndarray, gw: np.ndarray, kh: int, kw: int,
                     pads: tuple):
    """A run() writing dL/dW (O, C, kh, kw) of a stride-1 layer that ``suits_grad_weight``."""
    n, c = x.shape[:2]
    o_n = gy.shape[1]
    if gw.shape != (o_n, c, kh, kw):
        raise ValueError(f"conv_direct: x {x.shape}, dy {gy.shape}, dW {gw.shape} disagree")
    wp, lr, xp, small = _padded_input(x, gy.shape, kh, kw, pads)
    gyp = np.zeros((n, o_n, lr), np.float32)
    gw2 = gw.reshape(o_n, c * kh * kw)
    if kw <= ROW_TAPS_MAX:
        fn = _GRAD_WEIGHT_ROWS[1] if small else _GRAD_WEIGHT_ROWS[0]
        cols = (0,) * kw
        return lambda: fn(x, gy, gw2, xp, gyp, kh, pads[0], pads[1], wp, lr, cols)
    fn = grad_weight_direct_serial if small else grad_weight_direct
    return lambda: fn(x, gy, gw2, xp, gyp, kh, kw, pads[0], pads[1], wp, lr)
