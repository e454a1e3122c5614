"""Backward CUDA kernels of Conv2d and Linear (NCHW): input, weight and bias gradients.

Direct kernels, one thread per gradient element, each summing what it owns alone (no
atomics, deterministic): the input gradient gathers, for input pixel (n, c, y, x), every
(output channel, tap) whose window reads it (the transposed convolution); the weight
gradient of (o, c, a, b) sums dL/dy * x over the batch and the output plane in float64.
Any stride, padding, dilation and groups. The bias gradient (and BN-style channel sums)
is a block per channel with a shared-memory tree reduction.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from numba import cuda, float64

from ..registry import register_kernel
from .common import CudaRun, check_f32
from .grad_elementwise import grid_1d
from .grad_norm import channel_blocks, make_channel_sum_kernel, reduce_threads


def _conv_attrs(attrs: Mapping) -> tuple:
    a = attrs["fwd"]
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["stride"], a["dilation"]
    pt, pl = a["padding"][:2]
    return tuple(int(v) for v in (kh, kw, sh, sw, pt, pl, dh, dw, a["groups"]))


@cuda.jit
def conv_grad_input(gy, w, gx, sh, sw, pt, pl, dh, dw, groups):
    c_in = gx.shape[1]
    h = gx.shape[2]
    wd = gx.shape[3]
    o_n = w.shape[0]
    cg = w.shape[1]
    kh = w.shape[2]
    kw = w.shape[3]
    oh = gy.shape[2]
    ow = gy.shape[3]
    og = o_n // groups
    for idx in range(cuda.grid(1), gx.shape[0] * c_in * h * wd, cuda.gridsize(1)):
        z = idx % wd
        t = idx // wd
        y = t % h
        t = t // h
        ci = t % c_in
        n = t // c_in
        g = ci // cg
        c = ci - g * cg
        acc = 0.0
        for a in range(kh):
            ty = y + pt - a * dh
            if ty < 0 or ty % sh != 0 or ty // sh >= oh:
                continue
            i = ty // sh
            for b in range(kw):
                tz = z + pl - b * dw
                if tz < 0 or tz % sw != 0 or tz // sw >= ow:
                    continue
                j = tz // sw
                for o in range(g * og, (g + 1) * og):
                    acc += float64(w[o, c, a, b]) * float64(gy[n, o, i, j])
        gx[n, ci, y, z] = acc


@register_kernel("conv2d_grad_input", "cuda", "NCHW", "backward")
def bind_conv2d_grad_input(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    """dL/dx of conv2d from dL/dy and the weight."""
    check_f32([ins[0], ins[1], outs[0]], "conv2d_grad_input")
    _, _, sh, sw, pt, pl, dh, dw, groups = _conv_attrs(attrs)
    gx = outs[0]
    return CudaRun().launch(conv_grad_input, *grid_1d(gx.size), ins[0], ins[1], gx,
                            sh, sw, pt, pl, dh, dw, groups)


@cuda.jit
def conv_grad_weight(x, gy, gw, sh, sw, pt, pl, dh, dw, groups):
    n_img = x.shape[0]
    h = x.shape[2]
    wd = x.shape[3]
    o_n = gw.shape[0]
    cg = gw.shape[1]
    kh = gw.shape[2]
    kw = gw.shape[3]
    oh = gy.shape[2]
    ow = gy.shape[3]
    og = o_n // groups
    for idx in range(cuda.grid(1), gw.size, cuda.gridsize(1)):
        b = idx % kw
        t = idx // kw
        a = t % kh
        t = t // kh
        c = t % cg
        o = t // cg
        ci = (o // og) * cg + c
        s = 0.0
        for n in range(n_img):
            for i in range(oh):
                y = i * sh - pt + a * dh
                if y < 0 or y >= h:
                    continue
                for j in range(ow):
                    z = j * sw - pl + b * dw
                    if z >= 0 and z < wd:
                        s += float64(gy[n, o, i, j]) * float64(x[n, ci, y, z])
        gw[o, c, a, b] = s


@register_kernel("conv2d_grad_weight", "cuda", "NCHW", "backward")
def bind_conv2d_grad_weight(ins: Sequence[Any], outs: Sequence[Any],
                            attrs: Mapping) -> CudaRun:
    """dL/dW of conv2d from the forward input and dL/dy, summed over the batch."""
    check_f32([ins[0], ins[1], outs[0]], "conv2d_grad_weight")
    _, _, sh, sw, pt, pl, dh, dw, groups = _conv_attrs(attrs)
    gw = outs[0]
    return CudaRun().launch(conv_grad_weight, *grid_1d(gw.size), ins[0], ins[1],
                            gw, sh, sw, pt, pl, dh, dw, groups)


@register_kernel("bias_grad", "cuda", "NCHW", "backward")
def bind_bias_grad(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    """dL/db: dL/dy summed over every axis but the channel axis (a block per channel)."""
    gy, gb = ins[0], outs[0]
    check_f32([gy, gb], "bias_grad")
    n, c = gy.shape[0], gy.shape[1]
    g3 = gy.reshape(n, c, gy.size // (n * c))
    nt = reduce_threads(gy.size // c)
    return CudaRun().launch(make_channel_sum_kernel(nt), channel_blocks(c), nt, g3, gb,
                            name=f"channel_sum_{nt}")


@cuda.jit
def linear_grad_input(gy, w, gx):
    # gx (N, F) = gy (N, O) @ w (O, F)
    f_n = gx.shape[1]
    for idx in range(cuda.grid(1), gx.shape[0] * f_n, cuda.gridsize(1)):
        m = idx // f_n
        f = idx % f_n
        s = 0.0
        for o in range(w.shape[0]):
            s += float64(gy[m, o]) * float64(w[o, f])
        gx[m, f] = s


@register_kernel("linear_grad_input", "cuda", "NCHW", "backward")
def bind_linear_grad_input(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    """dL/dx = dL/dy (N, O) @ W (O, F)."""
    check_f32([ins[0], ins[1], outs[0]], "linear_grad_input")
    gx = outs[0]
    return CudaRun().launch(linear_grad_input, *grid_1d(gx.size), ins[0], ins[1],
                            gx.reshape(gx.shape[0], gx.size // gx.shape[0]))


@cuda.jit
def linear_grad_weight(x, gy, gw):
    # gw (O, F) = gy.T (O, N) @ x (N, F)
    f_n = gw.shape[1]
    for idx in range(cuda.grid(1), gw.shape[0] * f_n, cuda.gridsize(1)):
        o = idx // f_n
        f = idx % f_n
        s = 0.0
        for m in range(x.shape[0]):
            s += float64(gy[m, o]) * float64(x[m, f])
        gw[o, f] = s


@register_kernel("linear_grad_weight", "cuda", "NCHW", "backward")
def bind_linear_grad_weight(ins: Sequence[Any], outs: Sequence[Any],
                            attrs: Mapping) -> CudaRun:
    """dL/dW = dL/dy.T (O, N) @ x (N, F)."""
    check_f32([ins[0], ins[1], outs[0]], "linear_grad_weight")
    x, gy, gw = ins[0], ins[1], outs[0]
    return CudaRun().launch(linear_grad_weight, *grid_1d(gw.size),
                            x.reshape(x.shape[0], x.size // x.shape[0]), gy, gw)



