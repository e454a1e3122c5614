"""Backward kernels of Conv2d and Linear (NCHW): input, weight and bias gradients.

groups == 1 uses the forward's im2col and BLAS: per image, the weight gradient
accumulates gy (O, P) @ col.T (P, C*kh*kw) and the input gradient is col2im of
W.T (C*kh*kw, O) @ gy (O, P). Grouped and depthwise convolutions use direct loops,
parallel over what each task owns alone (output channel for the weight gradient, input
channel of one image for the input gradient), so no two threads ever write one element.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from .conv import _im2col, _valid_range


def _conv_attrs(attrs: Mapping) -> tuple:
    a = attrs["fwd"]
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["stride"], a["dilation"]
    pt, pl, pb, pr = a["padding"]
    return kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, int(a["groups"])


@numba.njit(cache=True, parallel=True)
def _col2im(col, gx, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    # col: (C*kh*kw, OH*OW) -> gx: (C, H, W), summing every tap that reads an input
    c_in, h, w = gx.shape
    for c in prange(c_in):
        gx[c] = 0.0
        for a in range(kh):
            i0, i1 = _valid_range(oh, h, sh, pt, a * dh)
            for b in range(kw):
                j0, j1 = _valid_range(ow, w, sw, pl, b * dw)
                r = (c * kh + a) * kw + b
                for i in range(i0, i1):
                    y = i * sh - pt + a * dh
                    for j in range(j0, j1):
                        gx[c, y, j * sw - pl + b * dw] += col[r, i * ow + j]


@numba.njit(cache=True, parallel=True)
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
                i0, i1 = _valid_range(oh, h, sh, pt, a * dh)
                for b in range(kw):
                    j0, j1 = _valid_range(ow, wd, sw, pl, b * dw)
                    wv = w[o, c, a, b]
                    for i in range(i0, i1):
                        y = i * sh - pt + a * dh
                        for j in range(j0, j1):
                            acc[y, j * sw - pl + b * dw] += wv * gy[n, o, i, j]
        gx[n, ci] = acc


@numba.njit(cache=True, parallel=True)
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
                i0, i1 = _valid_range(oh, h, sh, pt, a * dh)
                for b in range(kw):
                    j0, j1 = _valid_range(ow, wd, sw, pl, b * dw)
                    s = 0.0
                    for n in range(n_img):
                        for i in range(i0, i1):
                            y = i * sh - pt + a * dh
                            for j in range(j0, j1):
                                s += gy[n, o, i, j] * x[n, ci, y, j * sw - pl + b * dw]
                    gw[o, c, a, b] = s


def _pointwise(kh, kw, sh, sw, pt, pl, pb, pr) -> bool:
    return (kh, kw, sh, sw, pt, pl, pb, pr) == (1, 1, 1, 1, 0, 0, 0, 0)


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
    wt = w.reshape(o_n, c * kh * kw).T
    gy3 = gy.reshape(n, o_n, oh * ow)
    if _pointwise(kh, kw, sh, sw, pt, pl, pb, pr):
        gx3 = gx.reshape(n, c, h * wd)

        def run_pointwise():
            for i in range(n):
                np.dot(wt, gy3[i], out=gx3[i])
        return run_pointwise
    col = np.empty((c * kh * kw, oh * ow), np.float32)

    def run():
        for i in range(n):
            np.dot(wt, gy3[i], out=col)
            _col2im(col, gx[i], kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)
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
    gw2 = gw.reshape(o_n, c * kh * kw)
    gy3 = gy.reshape(n, o_n, oh * ow)
    tmp = np.empty_like(gw2)
    pointwise = _pointwise(kh, kw, sh, sw, pt, pl, pb, pr)
    x3 = x.reshape(n, c, h * wd)
    col = None if pointwise else np.empty((c * kh * kw, oh * ow), np.float32)

    def run():
        for i in range(n):
            if pointwise:
                src = x3[i]
            else:
                _im2col(x[i], col, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)
                src = col
            if i == 0:
                np.dot(gy3[i], src.T, out=gw2)
            else:
                np.dot(gy3[i], src.T, out=tmp)
                np.add(gw2, tmp, out=gw2)
    return run


@numba.njit(cache=True, parallel=True)
def _channel_sum(g, out):
    # g: (N, C, P) -> out[c] = sum over N and P (float64 accumulation)
    n, c_n, p = g.shape
    for c in prange(c_n):
        s = 0.0
        for i in range(n):
            for k in range(p):
                s += g[i, c, k]
        out[c] = s


@register_kernel("bias_grad", mode="backward")
def bind_bias_grad(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    """dL/db: dL/dy summed over every axis but the channel axis."""
    gy, gb = ins[0], outs[0]
    g3 = gy.reshape(gy.shape[0], gy.shape[1], -1)
    return lambda: _channel_sum(g3, gb)


@register_kernel("linear_grad_input", mode="backward")
def bind_linear_grad_input(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                           attrs: Mapping):
    """dL/dx = dL/dy (N, O) @ W (O, F)."""
    gy, w, gx = ins[0], ins[1], outs[0]
    return lambda: np.dot(gy, w, out=gx)


@register_kernel("linear_grad_weight", mode="backward")
def bind_linear_grad_weight(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                            attrs: Mapping):
    """dL/dW = dL/dy.T (O, N) @ x (N, F)."""
    x, gy, gw = ins[0], ins[1], outs[0]
    gyt = gy.T
    return lambda: np.dot(gyt, x, out=gw)
