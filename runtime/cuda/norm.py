"""Normalization CUDA kernels: inference BatchNorm (with the activation epilogue),
LocalResponseNorm and Softmax over axis 1, with the formulas of runtime.cpu.norm."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from numba import cuda, float32, float64

from ..registry import register_kernel
from .common import F32_ZERO, THREADS, CudaRun, act_code, apply_act, blocks_for, check_f32


# ---------------------------------------------------------------- batch norm

@cuda.jit
def bn_prepare(w, b, mean, var, eps, scale, shift):
    # per channel, in float64 like the CPU kernel: scale = w / sqrt(var + eps),
    # shift = b - mean * scale
    j = cuda.grid(1)
    if j < scale.shape[0]:
        inv = 1.0 / math.sqrt(float64(var[j]) + eps)
        scale[j] = float64(w[j]) * inv
        shift[j] = float64(b[j]) - float64(mean[j]) * inv * float64(w[j])


@cuda.jit
def bn_apply(x, out, scale, shift, hw, c, code, alpha):
    # x, out: flat (N*C*HW,); correct in place (each element read, then written)
    for idx in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        j = (idx // hw) % c
        out[idx] = apply_act(x[idx] * scale[j] + shift[j], code, alpha)


@register_kernel("batch_norm", "cuda", "NCHW")
def bind_batch_norm(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    """Inference BN with running statistics; rank 2 or 4; correct in place.

    Each run first recomputes scale/shift from the parameter arrays (one thread per
    channel), so parameters updated in place on the device are seen without re-binding.
    """
    x, w, b, mean, var = ins[:5]
    out = outs[0]
    if len(x.shape) not in (2, 4) or tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"batch_norm: input {tuple(x.shape)} and output {tuple(out.shape)} "
                         "must be equal (N, C) or (N, C, H, W)")
    c = x.shape[1]
    for a, name in ((w, "weight"), (b, "bias"), (mean, "running_mean"), (var, "running_var")):
        if tuple(a.shape) != (c,):
            raise ValueError(f"batch_norm: {name} {tuple(a.shape)} does not fit {c} channels")
    check_f32([x, out, w, b, mean, var], "batch_norm")
    hw = math.prod(x.shape[2:])
    scale = cuda.device_array(c, np.float32)
    shift = cuda.device_array(c, np.float32)
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    flat_x, flat_out = x.reshape(x.size), out.reshape(out.size)
    run = CudaRun()
    run.launch(bn_prepare, blocks_for(c), THREADS, w, b, mean, var, float(attrs["eps"]),
               scale, shift)
    run.launch(bn_apply, blocks_for(x.size), THREADS, flat_x, flat_out, scale, shift,
               int(hw), int(c), code, alpha)
    return run


# ---------------------------------------------------------------- local response norm

@cuda.jit
def lrn(x, out, lo, hi, coef, beta, k):
    # b_c = a_c / (k + alpha/size * sum_{c'=c-lo}^{c+hi} a_c'^2)^beta; x, out (N, C, HW)
    c = x.shape[1]
    hw = x.shape[2]
    total = x.shape[0] * c * hw
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        p = idx % hw
        t = idx // hw
        j = t % c
        i = t // c
        s = F32_ZERO
        for jj in range(max(0, j - lo), min(c, j + hi + 1)):
            v = x[i, jj, p]
            s += v * v
        out[i, j, p] = x[i, j, p] / (k + coef * s) ** beta


@register_kernel("local_response_norm", "cuda", "NCHW")
def bind_lrn(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    x = ins[0]
    if len(x.shape) != 4 or tuple(outs[0].shape) != tuple(x.shape):
        raise ValueError(f"local_response_norm: input {tuple(x.shape)} and output "
                         f"{tuple(outs[0].shape)} must be equal (N, C, H, W)")
    check_f32([x, outs[0]], "local_response_norm")
    n, c = x.shape[:2]
    x3, o3 = x.reshape(n, c, x.size // (n * c)), outs[0].reshape(n, c, x.size // (n * c))
    size = int(attrs["size"])
    coef = np.float32(np.float32(attrs["alpha"]) / size)
    return CudaRun().launch(lrn, blocks_for(x.size), THREADS, x3, o3, size // 2,
                            (size - 1) // 2, coef, np.float32(attrs["beta"]),
                            np.float32(attrs["k"]))


# ---------------------------------------------------------------- softmax

@cuda.jit
def softmax(x, out):
    # over axis 1 of (N, C, HW): one thread per (image, pixel)
    c = x.shape[1]
    hw = x.shape[2]
    for idx in range(cuda.grid(1), x.shape[0] * hw, cuda.gridsize(1)):
        p = idx % hw
        i = idx // hw
        m = x[i, 0, p]
        for j in range(1, c):
            v = x[i, j, p]
            if v > m or math.isnan(v):
                m = v
        s = F32_ZERO
        for j in range(c):
            e = math.exp(x[i, j, p] - m)
            out[i, j, p] = e
            s += e
        inv = float32(1.0) / s
        for j in range(c):
            out[i, j, p] *= inv


@register_kernel("softmax", "cuda", "NCHW")
def bind_softmax(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    x = ins[0]
    if int(attrs.get("axis", 1)) != 1:
        raise ValueError(f"softmax kernel works over axis 1, got axis={attrs['axis']}")
    if len(x.shape) < 2 or tuple(outs[0].shape) != tuple(x.shape):
        raise ValueError(f"softmax: input {tuple(x.shape)} and output "
                         f"{tuple(outs[0].shape)} must be equal, rank >= 2")
    check_f32([x, outs[0]], "softmax")
    n, c = x.shape[:2]
    hw = x.size // (n * c)
    x3, o3 = x.reshape(n, c, hw), outs[0].reshape(n, c, hw)
    return CudaRun().launch(softmax, blocks_for(n * hw), THREADS, x3, o3)
