"""Optimizer update CUDA kernels: one fused grid-stride sweep per parameter, in place.

Formulas and float64 scalar arithmetic are runtime.cpu.optim's (PyTorch's SGD, Adam,
Adagrad). The learning rate and step count are read on the device from the float64
``optimizer.hyper`` = [lr, step] array, which the Trainer uploads before each step, so a
schedule changes no binding and the parameters never leave the device.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence


from numba import cuda, float64

from ..registry import register_kernel
from .common import CudaRun, check_f32
from .grad_elementwise import grid_1d


def _flat(a: Any) -> Any:
    return a.reshape(a.size)


@cuda.jit
def sgd_kernel(p, g, buf, has_buf, hyper, mu, damp, wd, nesterov):
    lr = hyper[0]
    first = hyper[1] <= 1.0
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        d = float64(g[i]) + wd * float64(p[i])
        if has_buf:
            b = d
            if not first:
                b = mu * float64(buf[i]) + (1.0 - damp) * d
            buf[i] = b
            if nesterov:
                d = d + mu * b
            else:
                d = b
        p[i] = float64(p[i]) - lr * d


@register_kernel("sgd_update", "cuda", "NCHW", "update")
def bind_sgd_update(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    """p -= lr * (momentum buffer or gradient), with weight decay and Nesterov."""
    p, g, hyper = _flat(ins[0]), _flat(ins[1]), ins[-1]
    has_buf = len(ins) == 4
    check_f32(list(ins[:-1]), "sgd_update")
    buf = _flat(ins[2]) if has_buf else g  # never written without a buffer
    return CudaRun().launch(sgd_kernel, *grid_1d(p.size), p, g, buf, has_buf, hyper,
                            float(attrs["momentum"]), float(attrs["dampening"]),
                            float(attrs["weight_decay"]), bool(attrs["nesterov"]))


@cuda.jit
def adam_kernel(p, g, m, v, hyper, b1, b2, eps, wd):
    lr = hyper[0]
    step = hyper[1]
    bc1 = 1.0 - b1 ** step
    bc2 = 1.0 - b2 ** step
    step_size = lr / bc1
    sq2 = math.sqrt(bc2)
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        d = float64(g[i]) + wd * float64(p[i])
        mi = b1 * float64(m[i]) + (1.0 - b1) * d
        vi = b2 * float64(v[i]) + (1.0 - b2) * d * d
        m[i] = mi
        v[i] = vi
        p[i] = float64(p[i]) - step_size * mi / (math.sqrt(vi) / sq2 + eps)


@register_kernel("adam_update", "cuda", "NCHW", "update")
def bind_adam_update(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    """Adam with bias correction (weight decay added to the gradient, as torch.optim.Adam)."""
    check_f32(list(ins[:4]), "adam_update")
    p, g, m, v = (_flat(a) for a in ins[:4])
    return CudaRun().launch(adam_kernel, *grid_1d(p.size), p, g, m, v, ins[4],
                            float(attrs["beta1"]), float(attrs["beta2"]), float(attrs["eps"]),
                            float(attrs["weight_decay"]))


@cuda.jit
def adagrad_kernel(p, g, s, hyper, eps, wd, lr_decay):
    clr = hyper[0] / (1.0 + (hyper[1] - 1.0) * lr_decay)
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        d = float64(g[i]) + wd * float64(p[i])
        si = float64(s[i]) + d * d
        s[i] = si
        p[i] = float64(p[i]) - clr * d / (math.sqrt(si) + eps)


@register_kernel("adagrad_update", "cuda", "NCHW", "update")
def bind_adagrad_update(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    check_f32(list(ins[:3]), "adagrad_update")
    p, g, s = (_flat(a) for a in ins[:3])
    return CudaRun().launch(adagrad_kernel, *grid_1d(p.size), p, g, s, ins[3],
                            float(attrs["eps"]), float(attrs["weight_decay"]),
                            float(attrs["lr_decay"]))


