"""Elementwise CPU kernels: activations, n-ary add, inference dropout, flatten copy.

Each works on any rank by viewing its arrays flat, and is correct in place (the output
may be the very memory of an input): every element is read before it is written, at
the same index. The memory planner relies on that to reuse a dying input's buffer.

Each kernel has a serial and a ``prange`` variant; the binder picks one by size, since a
parallel region costs a few microseconds, more than a small array takes in total.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from .activation import act_code, apply_act
from .jit import PARALLEL

PARALLEL_MIN = 1 << 16  # below this many elements a prange region costs more than it saves
# sigmoid/tanh cost 3-12 ns per element (scalar libm exp/tanh): 8k elements take 25-100 us
# serially, far more than the ~5 us a parallel region costs
PARALLEL_MIN_TRANSCENDENTAL = 1 << 13
COPY_PARALLEL_MIN = 1 << 19  # memcpy (np.copyto) beat a 2-thread copy loop below ~512k
ADD_TILE = 1024  # n-ary add: elements summed per scratch tile (4 KiB, stays in L1)
_ZERO_SAFE_ACTS = ("none", "relu", "leaky_relu", "tanh")  # f(0) == 0

Run = Callable[[], None]


# ---------------------------------------------------------------- unary activations

@numba.njit(cache=True)
def _act_serial(x, out, code, alpha):
    for i in range(x.size):
        out[i] = apply_act(x[i], code, alpha)


@numba.njit(cache=True, parallel=PARALLEL)
def _act_parallel(x, out, code, alpha):
    for i in prange(x.size):
        out[i] = apply_act(x[i], code, alpha)


# ---------------------------------------------------------------- add

@numba.njit(cache=True)
def _add2_serial(a, b, out, code, alpha):
    for i in range(out.size):
        out[i] = apply_act(a[i] + b[i], code, alpha)


@numba.njit(cache=True, parallel=PARALLEL)
def _add2_parallel(a, b, out, code, alpha):
    for i in prange(out.size):
        out[i] = apply_act(a[i] + b[i], code, alpha)


# The n-ary sum runs tile by tile through a small scratch accumulator: per tile it reads
# every input's slice before it writes the output's slice, so the output may alias any
# input. Each pass is its own small loop (a separate function) so LLVM vectorizes it; one
# loop indexing the tuple of inputs per element does not vectorize for n >= 4.

@numba.njit(cache=True)
def _sum2(a, b, acc):
    for j in range(acc.size):
        acc[j] = a[j] + b[j]


@numba.njit(cache=True)
def _accumulate(acc, a):
    for j in range(acc.size):
        acc[j] += a[j]


@numba.njit(cache=True)
def _sum_span(xs, out, code, alpha, scratch, start, stop):
    """out[start:stop] = act(((xs[0] + xs[1]) + xs[2]) + ...) over that span."""
    n = len(xs)
    tile = scratch.size
    for s in range(start, stop, tile):
        e = min(s + tile, stop)
        acc = scratch[:e - s]
        _sum2(xs[0][s:e], xs[1][s:e], acc)
        for k in range(2, n - 1):
            _accumulate(acc, xs[k][s:e])
        _add2_serial(acc, xs[n - 1][s:e], out[s:e], code, alpha)


@numba.njit(cache=True)
def _addn_serial(xs, out, code, alpha, scratch):
    _sum_span(xs, out, code, alpha, scratch[0], 0, out.size)


@numba.njit(cache=True, parallel=PARALLEL)
def _addn_parallel(xs, out, code, alpha, scratch):
    spans = scratch.shape[0]  # one contiguous span, and one scratch row, per task
    per = (out.size + spans - 1) // spans
    for p in prange(spans):
        start = min(p * per, out.size)
        _sum_span(xs, out, code, alpha, scratch[p], start, min(start + per, out.size))


# ---------------------------------------------------------------- copy

@numba.njit(cache=True, parallel=PARALLEL)
def _copy_parallel(x, out):
    for i in prange(out.size):
        out[i] = x[i]


# ---------------------------------------------------------------- binders

def use_parallel(size: int, code: int) -> bool:
    """Is an elementwise pass over ``size`` elements ending in activation ``code`` worth
    a parallel region?"""
    expensive = code in (act_code("sigmoid"), act_code("tanh"))
    return size >= (PARALLEL_MIN_TRANSCENDENTAL if expensive else PARALLEL_MIN)


def _flat(a: np.ndarray, what: str, readonly: bool = False) -> np.ndarray:
    """A 1-D view of a C-contiguous float32 array (never a copy: the kernel must hit the
    arena). Inputs get read-only views, so that constant and arena inputs share one
    compiled signature and a tuple of inputs is always homogeneous."""
    if not a.flags.c_contiguous or a.dtype != np.float32:
        raise ValueError(f"{what}: arrays must be C-contiguous float32, got {a.dtype} "
                         f"strides {a.strides}")
    v = a.reshape(-1)
    if readonly:
        v = v.view()
        v.flags.writeable = False
    return v


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Exactly the same bytes (in place)? A partial overlap is an error: no kernel here is
    correct when the output starts part-way into an input."""
    if a.ctypes.data == b.ctypes.data and a.nbytes == b.nbytes:
        return True
    if np.may_share_memory(a, b):
        raise ValueError("output partially overlaps an input; only exact in-place aliasing "
                         "is supported")
    return False


def _check_sizes(op: str, ins: Sequence[np.ndarray], out: np.ndarray) -> None:
    for k, a in enumerate(ins):
        if a.size != out.size:
            raise ValueError(f"{op}: input {k} has {a.size} elements {a.shape}, "
                             f"output {out.size} {out.shape}")
        _same_memory(a, out)


def _unary_binder(name: str, slope_key: str = "") -> Callable:
    code = act_code(name)

    def bind(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping) -> Run:
        _check_sizes(name, ins[:1], outs[0])
        x, out = _flat(ins[0], name, True), _flat(outs[0], name)
        alpha = np.float32(attrs[slope_key]) if slope_key else np.float32(0.0)
        fn = _act_parallel if use_parallel(x.size, code) else _act_serial
        return lambda: fn(x, out, code, alpha)
    bind.__name__ = bind.__qualname__ = f"bind_{name}"
    bind.__doc__ = f"Standalone {name}: the same apply_act formula as the fused epilogue."
    return bind


bind_relu = register_kernel("relu")(_unary_binder("relu"))
bind_sigmoid = register_kernel("sigmoid")(_unary_binder("sigmoid"))
bind_tanh = register_kernel("tanh")(_unary_binder("tanh"))
bind_leaky_relu = register_kernel("leaky_relu")(_unary_binder("leaky_relu", "negative_slope"))


@register_kernel("add")
def bind_add(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping) -> Run:
    """Sum of n >= 2 same-shape inputs in input order, then the activation epilogue.

    Correct when the output is the very memory of any input (in place).
    """
    if len(ins) < 2:
        raise ValueError(f"add: needs at least 2 inputs, got {len(ins)}")
    _check_sizes("add", ins, outs[0])
    xs = tuple(_flat(a, "add", True) for a in ins)
    out = _flat(outs[0], "add")
    code = act_code(attrs.get("activation", "none"))
    alpha = np.float32(attrs.get("alpha", 0.0))
    parallel = use_parallel(out.size, code)
    if len(xs) == 2:
        a, b = xs
        fn2 = _add2_parallel if parallel else _add2_serial
        return lambda: fn2(a, b, out, code, alpha)
    spans = max(1, numba.get_num_threads()) if parallel else 1
    scratch = np.empty((spans, max(1, min(ADD_TILE, out.size))), np.float32)
    fnn = _addn_parallel if parallel else _addn_serial
    return lambda: fnn(xs, out, code, alpha, scratch)


def _copy_binder(op: str) -> Callable:
    def bind(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping) -> Run:
        _check_sizes(op, ins[:1], outs[0])
        x, out = _flat(ins[0], op, True), _flat(outs[0], op)
        if _same_memory(x, out):
            return lambda: None
        if out.size >= COPY_PARALLEL_MIN:
            return lambda: _copy_parallel(x, out)
        return lambda: np.copyto(out, x)
    bind.__name__ = bind.__qualname__ = f"bind_{op}"
    bind.__doc__ = f"{op}: a plain copy of the input (nothing at all when in place)."
    return bind


# Dropout at inference is the identity; Flatten of NCHW keeps C, H, W order, which is the
# flat order of the input. The compiler turns both into views when it can; these copies
# run when it cannot.
bind_dropout = register_kernel("dropout")(_copy_binder("dropout"))
bind_flatten = register_kernel("flatten")(_copy_binder("flatten"))


# Zero-preserving elementwise ops (f(0) == 0) run unchanged on the flat buffer of a
# blocked NCHW16c tensor: its padding channels stay zero. Sigmoid (0.5 at 0) is not one.
for _op, _bind in [("relu", bind_relu), ("tanh", bind_tanh), ("leaky_relu", bind_leaky_relu),
                   ("dropout", bind_dropout)]:
    register_kernel(_op, "cpu", "NCHW16c")(_bind)


@register_kernel("add", "cpu", "NCHW16c")
def bind_add_blocked(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                     attrs: Mapping) -> Run:
    """Add on NCHW16c buffers: the flat kernel, if the epilogue keeps padding at zero."""
    act = attrs.get("activation", "none")
    if act not in _ZERO_SAFE_ACTS:
        raise ValueError(f"add NCHW16c: activation {act!r} maps 0 to non-zero and would "
                         f"corrupt the zero padding channels")
    return bind_add(ins, outs, attrs)
