"""Elementwise CUDA kernels: activations, n-ary add (with the activation epilogue),
inference dropout and flatten copies.

Each works on the flat view of its arrays with a 1-D grid-stride loop, and is correct in
place (the output may be the very memory of an input): every thread reads its element
of every input before it writes that element of the output. The memory planner relies on
that to reuse a dying input's buffer.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from numba import cuda

from ..registry import register_kernel
from .common import THREADS, CudaRun, act_code, apply_act, blocks_for, check_f32, same_memory


@cuda.jit
def act_kernel(x, out, code, alpha):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = apply_act(x[i], code, alpha)


@cuda.jit
def add2(a, b, out, code, alpha):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = apply_act(a[i] + b[i], code, alpha)


@cuda.jit
def copy_kernel(x, out):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = x[i]


@functools.lru_cache(maxsize=None)
def make_add(n: int) -> Any:
    """A kernel summing ``n`` inputs in input order, ((x0 + x1) + x2) + ..., like the CPU.

    Generated per arity so that each thread loads all inputs before its one store (kernel
    arguments cannot be a variable-length list of arrays)."""
    if n < 2:
        raise ValueError(f"add needs at least 2 inputs, got {n}")
    names = [f"x{k}" for k in range(n)]
    total = " + ".join(f"{v}[i]" for v in names)
    src = (f"def add{n}({', '.join(names)}, out, code, alpha):\n"
           f"    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):\n"
           f"        out[i] = apply_act({total}, code, alpha)\n")
    scope: dict[str, Any] = {}
    # the kernel's globals are this module's, so the simulator can swap its `cuda`
    exec(compile(src, f"<cnncomp cuda add{n}>", "exec"), globals(), scope)
    return cuda.jit(scope[f"add{n}"])


def _flat(a: Any) -> Any:
    return a.reshape(a.size)


def _check_sizes(op: str, ins: Sequence[Any], out: Any) -> None:
    check_f32(list(ins) + [out], op)
    for k, a in enumerate(ins):
        if a.size != out.size:
            raise ValueError(f"{op}: input {k} has {a.size} elements {tuple(a.shape)}, "
                             f"output {out.size} {tuple(out.shape)}")
        same_memory(a, out, op)


def _unary_binder(name: str, slope_key: str = "") -> Callable:
    code = act_code(name)

    def bind(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
        _check_sizes(name, ins[:1], outs[0])
        x, out = _flat(ins[0]), _flat(outs[0])
        alpha = np.float32(attrs[slope_key]) if slope_key else np.float32(0.0)
        return CudaRun().launch(act_kernel, blocks_for(out.size), THREADS, x, out, code,
                                alpha, name=name)
    bind.__name__ = bind.__qualname__ = f"bind_{name}"
    bind.__doc__ = f"Standalone {name}: the same apply_act formula as the fused epilogue."
    return bind


bind_relu = register_kernel("relu", "cuda")(_unary_binder("relu"))
bind_sigmoid = register_kernel("sigmoid", "cuda")(_unary_binder("sigmoid"))
bind_tanh = register_kernel("tanh", "cuda")(_unary_binder("tanh"))
bind_leaky_relu = register_kernel("leaky_relu", "cuda")(
    _unary_binder("leaky_relu", "negative_slope"))


@register_kernel("add", "cuda")
def bind_add(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    """Sum of n >= 2 same-shape inputs in input order, then the activation epilogue.
    Correct when the output is the very memory of any input (in place)."""
    if len(ins) < 2:
        raise ValueError(f"add: needs at least 2 inputs, got {len(ins)}")
    _check_sizes("add", ins, outs[0])
    xs = [_flat(a) for a in ins]
    out = _flat(outs[0])
    code = act_code(attrs.get("activation", "none"))
    alpha = np.float32(attrs.get("alpha", 0.0))
    kernel = add2 if len(xs) == 2 else make_add(len(xs))
    return CudaRun().launch(kernel, blocks_for(out.size), THREADS, *xs, out, code, alpha,
                            name=f"add{len(xs)}")


def _copy_binder(op: str) -> Callable:
    def bind(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
        _check_sizes(op, ins[:1], outs[0])
        x, out = _flat(ins[0]), _flat(outs[0])
        if same_memory(x, out, op):
            return CudaRun()
        return CudaRun().launch(copy_kernel, blocks_for(out.size), THREADS, x, out, name=op)
    bind.__name__ = bind.__qualname__ = f"bind_{op}"
    bind.__doc__ = f"{op}: a plain copy of the input (nothing at all when in place)."
    return bind


# Dropout at inference is the identity; Flatten of NCHW keeps C, H, W order. The compiler
# turns both into views when it can; these copies run when it cannot.
bind_dropout = register_kernel("dropout", "cuda")(_copy_binder("dropout"))
bind_flatten = register_kernel("flatten", "cuda")(_copy_binder("flatten"))
