"""The activation epilogue shared by every kernel that can end in an activation.

Fused kernels apply it in registers before their single store. NaN propagates as in
PyTorch (relu(nan) is nan), so comparisons are written so that NaN falls through.
"""
from __future__ import annotations

import math

import numba
import numpy as np

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)

ACT_CODES = {"none": 0, "relu": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 4}


def act_code(name: str) -> int:
    """Integer code of an activation name, for passing into jitted kernels."""
    try:
        return ACT_CODES[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACT_CODES)}") from None


@numba.njit(inline="always", cache=True)
def apply_act(v, code, alpha):
    """Apply activation ``code`` (see ACT_CODES) with parameter ``alpha`` to a float32 v."""
    if code == 0:
        return v
    # "+ 0": in place (out[i] = relu(out[i])) a bare select of the old value becomes a
    # masked store, microcoded on AMD: 5x slower than the add (measured 34 vs 8 us per
    # 64k floats). The add maps -0 to +0 and nothing else.
    if code == 1:
        return (v if not v < _ZERO else _ZERO) + _ZERO
    if code == 2:
        return (v if not v < _ZERO else v * alpha) + _ZERO
    if code == 3:
        # numerically stable logistic: exp of a non-positive number never overflows
        if v >= _ZERO:
            z = np.float32(math.exp(-v))
            return _ONE / (_ONE + z)
        z = np.float32(math.exp(v))
        return z / (_ONE + z)
    return np.float32(math.tanh(v))


@numba.njit(inline="always", cache=True)
def act_inplace(a, code, alpha):
    """Activation ``code`` over the 1-D array ``a`` in place: one plain loop per code, so
    LLVM vectorizes relu and leaky_relu (a per-element switch on ``code`` kept the loop
    scalar: a fused NHWC conv's epilogue cost 6x a separate BN + ReLU sweep)."""
    if code == 1:
        for i in range(a.size):
            a[i] = apply_act(a[i], 1, alpha)
    elif code == 2:
        for i in range(a.size):
            a[i] = apply_act(a[i], 2, alpha)
    elif code != 0:
        for i in range(a.size):
            a[i] = apply_act(a[i], code, alpha)


@numba.njit(inline="always", cache=True)
def act_grad(g, s, code, alpha):
    """dL/dx of activation ``code`` from dL/dy ``g`` and the saved tensor ``s``: the output
    y for relu, sigmoid and tanh; the input x for leaky_relu (its slope may be negative)."""
    if code == 1:
        return g if s > _ZERO else _ZERO
    if code == 2:
        return g if s > _ZERO else g * alpha
    if code == 3:
        return g * s * (_ONE - s)
    if code == 4:
        return g * (_ONE - s * s)
    return g
