"""Backward kernels of Conv2d and Linear (NCHW): input, weight and bias gradients.

groups == 1 uses the forward's im2col and BLAS: per group of images (as many as
``images_per_gemm`` allows, so deep layers get square GEMMs), the weight gradient
accumulates gy (O, k*P) @ col.T (k*P, C*kh*kw) and the input gradient is col2im of
W.T (C*kh*kw, O) @ gy (O, k*P). Grouped and depthwise convolutions use direct loops,
parallel over what each task owns alone (output channel for the weight gradient, input
channel of one image for the input gradient), so no two threads ever write one element.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from . import blas, conv_blocked, conv_direct
from .conv import _gather_images, _im2col_group, _scatter_epilogue, images_per_gemm
from .elementwise import PARALLEL_MIN
from .jit import PARALLEL, by_size, parallel_and_serial, valid_range

_NO_BIAS, _NO_RES = np.zeros(1, np.float32), np.zeros((1, 1, 1), np.float32)
_NO_RES4 = np.zeros((1, 1, 1, 1), np.float32)


def _conv_attrs(attrs: Mapping) -> tuple:
    a = attrs["fwd"]
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["stride"], a["dilation"]
    pt, pl, pb, pr = a["padding"]
    return kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, int(a["groups"])


@numba.njit(cache=True, parallel=PARALLEL)
def _col2im_group(col, gx, i0, k, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    # col (C*kh*kw, k*OH*OW) of images i0..i0+k (image j in columns [j*P, (j+1)*P))
    # -> gx (N, C, H, W), summing every tap that reads an input; one call per GEMM. Flat
    # arrays and unsigned offsets, as in conv._im2col_group (the runs then vectorize).
    c_in, h, w = gx.shape[1], gx.shape[2], gx.shape[3]
    p = oh * ow
    gf, cf = gx.reshape(-1), col.reshape(-1)
    ld = col.shape[1]
    for t in prange(c_in * k):
        c = t // k
        base = (t % k) * p
        g0 = ((i0 + t % k) * c_in + c) * h * w
        for q in range(h * w):
            gf[np.uint64(g0 + q)] = 0.0
        for a in range(kh):
            i_lo, i_hi = valid_range(oh, h, sh, pt, a * dh)
            for b in range(kw):
                j0, j1 = valid_range(ow, w, sw, pl, b * dw)
                r0 = ((c * kh + a) * kw + b) * ld + base
                for i in range(i_lo, i_hi):
                    s = np.uint64(r0 + i * ow + j0)
                    d = np.uint64(g0 + (i * sh - pt + a * dh) * w + j0 * sw - pl + b * dw)
                    if sw == 1:
                        for q in range(j1 - j0):
                            gf[d + np.uint64(q)] += cf[s + np.uint64(q)]
                    else:
                        for q in range(j1 - j0):
                            gf[d + np.uint64(q * sw)] += cf[s + np.uint64(q)]


@numba.njit(cache=True, parallel=PARALLEL)
def _grad_input_direct(gy, w, gx, sh, sw, pt, pl, dh, dw, groups):
    n_img, c_in, h, wd = gx.shape
    o_n, cg, kh, kw = w.shape
    _, _, oh, ow = gy.shape
    og = o_n // groups
    for t in prange(n_img * c_in):
        n = t // c_in
        ci = t % c_in
        g = ci // cg
        c = ci - g * cg
        acc = np.zeros((h, wd), np.float32)
        for o in range(g * og, (g + 1) * og):
            for a in range(kh):
                i0, i1 = valid_range(oh, h, sh, pt, a * dh)
                for b in range(kw):
                    j0, j1 = valid_range(ow, wd, sw, pl, b * dw)
                    wv = w[o, c, a, b]
                    for i in range(i0, i1):
                        y = i * sh - pt + a * dh
                        for j in range(j0, j1):
                            acc[y, j * sw - pl + b * dw] += wv * gy[n, o, i, j]
        gx[n, ci] = acc


@numba.njit(cache=True, parallel=PARALLEL)
def _grad_weight_direct(x, gy, gw, sh, sw, pt, pl, dh, dw, groups):
    n_img, c_in, h, wd = x.shape
    o_n, cg, kh, kw = gw.shape
    _, _, oh, ow = gy.shape
    og = o_n // groups
    for o in prange(o_n):
        g = o // og
        for c in range(cg):
            ci = g * cg + c
            for a in range(kh):
                i0, i1 = valid_range(oh, h, sh, pt, a * dh)
                for b in range(kw):
                    j0, j1 = valid_range(ow, wd, sw, pl, b * dw)
                    s = 0.0
                    for n in range(n_img):
                        for i in range(i0, i1):
                            y = i * sh - pt + a * dh
                            for j in range(j0, j1):
                                s += gy[n, o, i, j] * x[n, ci, y, j * sw - pl + b * dw]
                    gw[o, c, a, b] = s


def _pointwise(kh, kw, sh, sw, pt, pl, pb, pr) -> bool:
    return (kh, kw, sh, sw, pt, pl, pb, pr) == (1, 1, 1, 1, 0, 0, 0, 0)


def _prefix(buf: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A C-contiguous (rows, cols) view of the start of a flat scratch buffer."""
    return buf[:rows * cols].reshape(rows, cols)


class _ImageGroups:
    """The batch in groups of ``images_per_gemm`` images, with scratch for a group's
    im2col columns (rows, k*P) and its dL/dy gathered as (O, k*P)."""

    def __init__(self, gy: np.ndarray, rows: int):
        n, self.o_n, oh, ow = gy.shape
        self.n, self.p, self.rows = n, oh * ow, rows
        self.gy3 = gy.reshape(n, self.o_n, self.p)
        self.size = images_per_gemm(n, rows, self.p)
        self.gy_buf = np.empty(self.o_n * self.size * self.p, np.float32)
        self.col_buf = np.empty(rows * self.size * self.p, np.float32)

    def __iter__(self):
        p = self.p
        for i0 in range(0, self.n, self.size):
            k = min(self.size, self.n - i0)
            gyc = _prefix(self.gy_buf, self.o_n, k * p)
            _gather_images(self.gy3, i0, k, gyc)
            yield i0, k, gyc, _prefix(self.col_buf, self.rows, k * p)


@register_kernel("conv2d_grad_input", mode="backward")
def bind_conv2d_grad_input(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                           attrs: Mapping):
    """dL/dx of conv2d from dL/dy and the weight (any stride, padding, dilation, groups)."""
    gy, w, gx = ins[0], ins[1], outs[0]
    kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, groups = _conv_attrs(attrs)
    n, c, h, wd = gx.shape
    _, o_n, oh, ow = gy.shape
    if groups != 1:
        return lambda: _grad_input_direct(gy, w, gx, sh, sw, pt, pl, dh, dw, groups)
    full = (kh - 1 - pt, kw - 1 - pl, kh - 1 - pb, kw - 1 - pr)
    if ((sh, sw, dh, dw) == (1, 1, 1, 1) and min(full) >= 0
            and conv_blocked.suits_nchw(o_n, c, groups, "none")):
        # stride 1: dL/dx is the "full" convolution of dL/dy with the weight flipped in
        # space and transposed, i.e. a forward conv: the blocked kernel, packing the
        # flipped weight itself (before every call: the weights change); Winograd where
        # the forward conv is marked for it (a 3x3 conv's dL/dx is one too)
        return conv_blocked.bind_nchw([gy, w], [gx], dict(
            kernel_size=(kh, kw), stride=(1, 1), dilation=(1, 1), padding=full, groups=1,
            bias=False, activation="none", residual=False,
            algorithm=attrs["fwd"].get("algorithm", "direct")), flip=True)
    if (conv_direct.suits(o_n, kh, kw, (sh, sw), (dh, dw), groups)
            and min(full) >= 0):
        # the same full convolution (fewer than 16 channels): the direct kernel
        flipped = np.empty((c, o_n, kh, kw), np.float32)
        conv = conv_direct.bind(gy, flipped.reshape(c, o_n * kh * kw), gx, kh, kw, full,
                                _NO_BIAS, False, _NO_RES4, False, 0, np.float32(0.0))

        def run_direct():
            np.copyto(flipped, w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])  # weights change
            conv()
        return run_direct
    rows, p = c * kh * kw, oh * ow
    wt = w.reshape(o_n, rows).T
    gx3 = gx.reshape(n, c, h * wd)
    pointwise = _pointwise(kh, kw, sh, sw, pt, pl, pb, pr)
    groups_of = _ImageGroups(gy, rows)

    def run():
        for i0, k, gyc, col in groups_of:
            blas.dot(wt, gyc, col)  # (C*kh*kw, k*P): every tap's contribution
            if pointwise:
                _scatter_epilogue(col, gx3, i0, k, _NO_BIAS, False, _NO_RES, False, 0,
                                  np.float32(0.0))
                continue
            _col2im_group(col, gx, i0, k, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)
    return run


@register_kernel("conv2d_grad_weight", mode="backward")
def bind_conv2d_grad_weight(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                            attrs: Mapping):
    """dL/dW of conv2d from the forward input and dL/dy, summed over the batch."""
    x, gy, gw = ins[0], ins[1], outs[0]
    kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, groups = _conv_attrs(attrs)
    n, c, h, wd = x.shape
    _, o_n, oh, ow = gy.shape
    if groups != 1:
        return lambda: _grad_weight_direct(x, gy, gw, sh, sw, pt, pl, dh, dw, groups)
    if conv_blocked.suits_nchw(c, o_n, groups, "none"):
        return conv_blocked.bind_nchw_grad_weight(x, gy, gw, attrs["fwd"])
    if conv_direct.suits_grad_weight(c, kh, kw, (sh, sw), (dh, dw), groups):
        return conv_direct.bind_grad_weight(x, gy, gw, kh, kw, (pt, pl, pb, pr))
    rows, p = c * kh * kw, oh * ow
    gw2 = gw.reshape(o_n, rows)
    x3 = x.reshape(n, c, h * wd)
    tmp = np.empty_like(gw2)
    pointwise = _pointwise(kh, kw, sh, sw, pt, pl, pb, pr)
    groups_of = _ImageGroups(gy, rows)

    def run():
        for i0, k, gyc, col in groups_of:
            if pointwise:
                _gather_images(x3, i0, k, col)
            else:
                _im2col_group(x, col, i0, k, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)
            if i0 == 0:
                blas.dot(gyc, col.T, gw2)
            else:
                blas.dot(gyc, col.T, tmp)
                np.add(gw2, tmp, out=gw2)
    return run


def _channel_sum(g, out):
    # g: (N, C, P) -> out[c] = sum over N and P, accumulated in float64; "reassoc" lets
    # LLVM split each sum into vector lanes (a single float64 chain ran ~1 ns an element:
    # LeNet-5's first conv bias, b64, 0.13 ms)
    n, c_n, p = g.shape
    for c in prange(c_n):
        s = 0.0
        for i in range(n):
            row = g[i, c]
            for k in range(p):
                s += row[k]
        out[c] = s


_CHANNEL_SUM = parallel_and_serial(_channel_sum, fastmath={"reassoc"})


@register_kernel("bias_grad", mode="backward")
def bind_bias_grad(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    """dL/db: dL/dy summed over every axis but the channel axis."""
    gy, gb = ins[0], outs[0]
    g3 = gy.reshape(gy.shape[0], gy.shape[1], -1)
    if g3.shape[2] == 1:  # a Linear's (N, O): rows added in order, vectorized over O
        return lambda: _row_sum(g3[:, :, 0], gb)
    fn = by_size(_CHANNEL_SUM, g3.size, PARALLEL_MIN)
    return lambda: fn(g3, gb)


@numba.njit(cache=True)
def _row_sum(g, out):
    acc = np.zeros(g.shape[1])
    for i in range(g.shape[0]):
        for c in range(g.shape[1]):
            acc[c] += g[i, c]
    for c in range(g.shape[1]):
        out[c] = acc[c]


@register_kernel("linear_grad_input", mode="backward")
def bind_linear_grad_input(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                           attrs: Mapping):
    """dL/dx = dL/dy (N, O) @ W (O, F)."""
    gy, w, gx = ins[0], ins[1], outs[0]
    return lambda: blas.dot(gy, w, gx)


@register_kernel("linear_grad_weight", mode="backward")
def bind_linear_grad_weight(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                            attrs: Mapping):
    """dL/dW = dL/dy.T (O, N) @ x (N, F)."""
    x, gy, gw = ins[0], ins[1], outs[0]
    gyt = gy.T
    return lambda: blas.dot(gyt, x, gw)
