"""Optimizer update kernels: one fused sweep per parameter, written in place.

Formulas are PyTorch's (torch.optim.SGD, Adam, Adagrad with their defaults: no
maximize, no amsgrad, foreach off). The learning rate and the step count come from a
small float64 array ``hyper = [lr, step]`` that the Trainer writes before each step, so a
learning-rate schedule changes no compiled kernel and no binding.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from .elementwise import PARALLEL_MIN
from .jit import by_size, parallel_and_serial


def _pick(kernels, p: np.ndarray):
    return by_size(kernels, p.size, PARALLEL_MIN)


def _flat(a: np.ndarray) -> np.ndarray:
    if not a.flags.c_contiguous:
        raise ValueError("optimizer state must be C-contiguous")
    return a.reshape(-1)


def _sgd(p, g, buf, has_buf, lr, mu, damp, wd, nesterov, first):
    for i in prange(p.size):
        d = g[i] + wd * p[i]
        if has_buf:
            b = d if first else mu * buf[i] + (1.0 - damp) * d
            buf[i] = b
            d = d + mu * b if nesterov else b
        p[i] = p[i] - lr * d


# a parameter under PARALLEL_MIN elements (a bias, a BN scale) updates serially
_SGD = parallel_and_serial(_sgd)


@register_kernel("sgd_update", mode="update")
def bind_sgd_update(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    """p -= lr * (momentum buffer or gradient), with weight decay and Nesterov."""
    p, g, hyper = _flat(ins[0]), _flat(ins[1]), ins[-1]
    has_buf = len(ins) == 4
    buf = _flat(ins[2]) if has_buf else np.zeros(1, np.float32)
    mu, damp = float(attrs["momentum"]), float(attrs["dampening"])
    wd, nesterov = float(attrs["weight_decay"]), bool(attrs["nesterov"])
    fn = _pick(_SGD, p)
    return lambda: fn(p, g, buf, has_buf, hyper[0], mu, damp, wd, nesterov, hyper[1] <= 1)


def _adam(p, g, m, v, lr, b1, b2, eps, wd, step):
    bc1 = 1.0 - b1 ** step
    bc2 = 1.0 - b2 ** step
    step_size = lr / bc1
    sq2 = math.sqrt(bc2)
    for i in prange(p.size):
        d = g[i] + wd * p[i]
        mi = b1 * m[i] + (1.0 - b1) * d
        vi = b2 * v[i] + (1.0 - b2) * d * d
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - step_size * mi / (math.sqrt(vi) / sq2 + eps)


_ADAM = parallel_and_serial(_adam)


@register_kernel("adam_update", mode="update")
def bind_adam_update(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    """Adam with bias correction (weight decay added to the gradient, as torch.optim.Adam)."""
    p, g, m, v, hyper = (_flat(a) for a in ins)
    b1, b2 = float(attrs["beta1"]), float(attrs["beta2"])
    eps, wd = float(attrs["eps"]), float(attrs["weight_decay"])
    fn = _pick(_ADAM, p)
    return lambda: fn(p, g, m, v, hyper[0], b1, b2, eps, wd, hyper[1])


def _adagrad(p, g, s, lr, eps, wd, lr_decay, step):
    clr = lr / (1.0 + (step - 1.0) * lr_decay)
    for i in prange(p.size):
        d = g[i] + wd * p[i]
        si = s[i] + d * d
        s[i] = si
        p[i] = p[i] - clr * d / (math.sqrt(si) + eps)


_ADAGRAD = parallel_and_serial(_adagrad)


@register_kernel("adagrad_update", mode="update")
def bind_adagrad_update(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    p, g, s, hyper = (_flat(a) for a in ins)
    eps, wd, decay = float(attrs["eps"]), float(attrs["weight_decay"]), float(attrs["lr_decay"])
    fn = _pick(_ADAGRAD, p)
    return lambda: fn(p, g, s, hyper[0], eps, wd, decay, hyper[1])
