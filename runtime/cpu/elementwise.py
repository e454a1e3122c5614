"""Elementwise CPU kernels: activations, n-ary add, inference dropout, flatten copy.

Each works on any rank by viewing its arrays flat, and is correct in place (the output
may be the very memory of an input): every element is read before it is written, at
the same index. The memory planner relies on that to reuse a dying input's buffer.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from .activation import act_code, apply_act

PARALLEL_MIN = 1 << 16  # below this many elements a prange region costs more than it saves


@numba.njit(cache=True)
def _act_serial(x, out, code, alpha):
    for i in range(x.size):
        out[i] = apply_act(x[i], code, alpha)


@numba.njit(cache=True, parallel=True)
def _act_parallel(x, out, code, alpha):
    for i in prange(x.size):
        out[i] = apply_act(x[i], code, alpha)


@numba.njit(cache=True)
def _add2_serial(a, b, out, code, alpha):
    for i in range(out.size):
        out[i] = apply_act(a[i] + b[i], code, alpha)


@numba.njit(cache=True, parallel=True)
def _add2_parallel(a, b, out, code, alpha):
    for i in prange(out.size):
        out[i] = apply_act(a[i] + b[i], code, alpha)


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1)


def _activation_binder(name: str, slope_key: str = ""):
    code = act_code(name)

    def bind(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
        x, out = _flat(ins[0]), _flat(outs[0])
        alpha = np.float32(attrs[slope_key]) if slope_key else np.float32(0.0)
        fn = _act_parallel if x.size >= PARALLEL_MIN else _act_serial
        return lambda: fn(x, out, code, alpha)
    bind.__name__ = f"bind_{name}"
    return bind


bind_relu = register_kernel("relu")(_activation_binder("relu"))
bind_sigmoid = register_kernel("sigmoid")(_activation_binder("sigmoid"))
bind_tanh = register_kernel("tanh")(_activation_binder("tanh"))
bind_leaky_relu = register_kernel("leaky_relu")(_activation_binder("leaky_relu",
                                                                  "negative_slope"))
# Zero-preserving elementwise ops (f(0) == 0) run unchanged on the flat buffer of a
# blocked NCHW16c tensor: its padding channels stay zero. (Sigmoid is not among them.)
for _op, _bind in [("relu", bind_relu), ("tanh", bind_tanh), ("leaky_relu", bind_leaky_relu)]:
    register_kernel(_op, "cpu", "NCHW16c")(_bind)


@register_kernel("add")
def bind_add(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    """Sum of n >= 2 inputs in order, then the activation epilogue (in place safe)."""
    xs = [_flat(a) for a in ins]
    out = _flat(outs[0])
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    fn = _add2_parallel if out.size >= PARALLEL_MIN else _add2_serial
    if len(xs) == 2:
        return lambda: fn(xs[0], xs[1], out, code, alpha)
    # n-ary: accumulate left to right; only the last sum applies the activation. The output
    # may alias any input, so accumulate into it only after the inputs it aliases are read.
    first, rest = xs[0], xs[1:]

    def run():
        acc = first + rest[0]
        for a in rest[1:-1]:
            acc += a
        fn(acc, rest[-1], out, code, alpha)
    return run


def _copy_binder(op: str):
    def bind(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
        x, out = _flat(ins[0]), _flat(outs[0])
        if x.size != out.size:
            raise ValueError(f"{op}: input has {x.size} elements, output {out.size}")
        if np.shares_memory(x, out):
            return lambda: None
        return lambda: np.copyto(out, x)
    bind.__name__ = f"bind_{op}"
    return bind


# Dropout at inference is the identity; Flatten of NCHW keeps C, H, W order. The compiler
# turns both into views when it can; these copies run when it cannot.
bind_dropout = register_kernel("dropout")(_copy_binder("dropout"))
bind_flatten = register_kernel("flatten")(_copy_binder("flatten"))
register_kernel("add", "cpu", "NCHW16c")(bind_add)  # zero-preserving with relu/leaky/tanh
register_kernel("dropout", "cpu", "NCHW16c")(bind_dropout)
