"""Elementwise CUDA training kernels: activation gradients, Dropout in training (forward
and backward) and the data movement of gradients (reshape, split).

Formulas are runtime.cpu.grad_elementwise's: the activation gradient is the same
``act_grad`` rule, the Dropout mask comes from the same counter-based SplitMix64 of
(seed, step, element index), with the step read on the device from ``optimizer.hyper``,
so CPU and GPU draw bit-identical masks. Every kernel is a 1-D grid-stride loop that
reads element i before writing element i (correct in place).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
from numba import cuda, uint64

from ..cuda_status import simulator_enabled
from ..registry import register_kernel
from .common import (F32_ONE, F32_ZERO, THREADS, CudaRun, act_code, blocks_for, check_f32,
                     device_function, same_memory)
from .elementwise import copy_kernel


@device_function
def act_grad(g, s, code, alpha):
    """dL/dx of an activation from dL/dy ``g`` and its saved value ``s`` (the output y,
    or the input x for leaky_relu): runtime.cpu.activation.act_grad's formulas."""
    if code == 1:
        return g if s > F32_ZERO else F32_ZERO
    if code == 2:
        return g if s > F32_ZERO else g * alpha
    if code == 3:
        return g * s * (F32_ONE - s)
    if code == 4:
        return g * (F32_ONE - s * s)
    return g


@cuda.jit
def act_grad_kernel(gy, s, gx, code, alpha):
    for i in range(cuda.grid(1), gx.shape[0], cuda.gridsize(1)):
        gx[i] = act_grad(gy[i], s[i], code, alpha)


def _flat(a: Any) -> Any:
    return a.reshape(a.size)


SIM_THREADS = 32  # simulator: one block of this many threads walks the whole grid-stride loop


def grid_1d(n: int) -> tuple[int, int]:
    """(blocks, threads) of a 1-D grid-stride launch over ``n`` items. On a GPU: enough
    blocks of THREADS (a smaller block for tiny arrays). Under the simulator, where each
    thread costs about a millisecond to start but a loop iteration far less, one block of
    SIM_THREADS: the same kernel code and loop, with each thread taking more items."""
    n = max(int(n), 1)
    if simulator_enabled():
        return 1, min(SIM_THREADS, n)
    threads = min(THREADS, -(-n // 32) * 32)
    return blocks_for(n, threads), threads


@register_kernel("activation_grad", "cuda", "NCHW", "backward")
def bind_activation_grad(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    """dL/dx of an activation from dL/dy and its saved output (input for leaky_relu)."""
    check_f32([ins[0], ins[1], outs[0]], "activation_grad")
    gy, s, gx = _flat(ins[0]), _flat(ins[1]), _flat(outs[0])
    code, alpha = act_code(attrs["activation"]), np.float32(attrs.get("alpha", 0.0))
    return CudaRun().launch(act_grad_kernel, *grid_1d(gx.size), gy, s, gx, code,
                            alpha)


@device_function
def splitmix64(z):
    z = z + uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> uint64(27))) * uint64(0x94D049BB133111EB)
    return z ^ (z >> uint64(31))


@cuda.jit
def dropout_train_kernel(x, y, mask, p, scale, seed, hyper, offset, has_offset, per_sample):
    step = uint64(hyper[1])
    key = splitmix64(uint64(seed) ^ splitmix64(step))
    first = uint64(0)
    if has_offset:
        first = uint64(offset[0]) * uint64(per_sample)
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        u = float64_of(splitmix64(key + first + uint64(i)) >> uint64(40)) * (1.0 / 16777216.0)
        m = scale if u >= p else F32_ZERO
        mask[i] = m
        y[i] = x[i] * m


@device_function
def float64_of(z):
    return float(z)


class _QuietRun(CudaRun):
    """Under the simulator, uint64 products wrap with numpy overflow warnings: silence
    them (a real GPU wraps silently, and wrapping is what SplitMix64 wants)."""

    def __call__(self) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
            super().__call__()


@register_kernel("dropout_train", "cuda", "NCHW")
def bind_dropout_train(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    """Zero each element with probability p and scale the rest by 1/(1-p); the mask is a
    pure function of (seed, step, element) as on the CPU. Optional third input: this
    rank's first sample in the global batch (distributed training)."""
    check_f32([ins[0], outs[0], outs[1]], "dropout_train")
    x, hyper = _flat(ins[0]), ins[1]
    y, mask = _flat(outs[0]), _flat(outs[1])
    p, seed = float(attrs["p"]), int(attrs["seed"])
    scale = np.float32(0.0) if p >= 1.0 else np.float32(1.0 / (1.0 - p))
    has_offset = len(ins) > 2
    offset = ins[2] if has_offset else hyper
    per_sample = x.size // max(ins[0].shape[0], 1)
    run = _QuietRun() if simulator_enabled() else CudaRun()
    return run.launch(dropout_train_kernel, *grid_1d(x.size), x, y, mask, p, scale,
                      np.uint64(seed), hyper, offset, has_offset, per_sample)


@cuda.jit
def mul_kernel(a, b, out):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = a[i] * b[i]


@register_kernel("dropout_grad", "cuda", "NCHW", "backward")
def bind_dropout_grad(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    check_f32([ins[0], ins[1], outs[0]], "dropout_grad")
    gy, mask, gx = _flat(ins[0]), _flat(ins[1]), _flat(outs[0])
    return CudaRun().launch(mul_kernel, *grid_1d(gx.size), gy, mask, gx)


@register_kernel("reshape", "cuda", "NCHW", "backward")
def bind_reshape(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    """A copy with a new shape (nothing when lowering made it a view of the same bytes)."""
    x, out = _flat(ins[0]), _flat(outs[0])
    if x.size != out.size:
        raise ValueError(f"reshape: {tuple(ins[0].shape)} -> {tuple(outs[0].shape)} changes "
                         "the element count")
    if same_memory(x, out, "reshape"):
        return CudaRun()
    return CudaRun().launch(copy_kernel, *grid_1d(out.size), x, out, name="reshape")


@cuda.jit
def split_copy(x, out, start):
    # x (A, K, B) -> out (A, k, B) = x[:, start:start + k, :]
    k = out.shape[1]
    b = out.shape[2]
    total = out.shape[0] * k * b
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = idx % b
        t = idx // b
        c = t % k
        a = t // k
        out[a, c, j] = x[a, start + c, j]


@register_kernel("split", "cuda", "NCHW", "backward")
def bind_split(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    """Cut the input along ``axis`` into consecutive pieces (Concat's gradient)."""
    x, axis = ins[0], int(attrs["axis"])
    shape = tuple(x.shape)
    a = math.prod(shape[:axis])
    b = math.prod(shape[axis + 1:])
    x3 = x.reshape(a, shape[axis], b)
    run, start = CudaRun(), 0
    for o in outs:
        k = o.shape[axis]
        run.launch(split_copy, *grid_1d(o.size), x3, o.reshape(a, k, b), start)
        start += k
    if start != shape[axis]:
        raise ValueError(f"split: pieces {[tuple(o.shape) for o in outs]} do not cover "
                         f"{shape}")
    return run
