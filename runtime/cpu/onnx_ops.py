"""CPU kernels of the ops that imported (ONNX) models need beyond the DSL's layers:
transpose, pad, broadcasting binary ops (add, sub, mul, div, max, min), clip and
log-softmax.

They follow ONNX's definitions (which onnxruntime is tested against): Pad's modes
constant / reflect / edge / wrap with negative pads cropping, Clip with min > max giving
max, numpy broadcasting for the binary ops. The batch axis is always axis 0 and is never
moved, padded or broadcast.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from .jit import PARALLEL

Run = Callable[[], None]
PARALLEL_MIN = 1 << 15


@register_kernel("transpose")
def bind_transpose(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                   attrs: Mapping) -> Run:
    """out = x.transpose(perm) (a strided copy)."""
    x, out = ins[0], outs[0]
    perm = tuple(int(p) for p in attrs["perm"])
    if len(perm) != x.ndim or perm[0] != 0:
        raise ValueError(f"transpose: perm {perm} does not fit input {x.shape} (the batch "
                         "axis stays first)")
    src = x.transpose(perm)
    if src.shape != out.shape:
        raise ValueError(f"transpose: input {x.shape} permuted by {perm} is {src.shape}, "
                         f"output is {out.shape}")
    return lambda: np.copyto(out, src)


def _pad_plan(shape: tuple, pads: Sequence[int]) -> tuple[tuple, tuple, list]:
    """Slices of the input that survive cropping, where they land in the output, and the
    (begin, end) widths still to fill around them (per axis, batch included)."""
    k = len(shape) - 1
    src, dst, widths = [slice(None)], [slice(None)], [(0, 0)]
    for i in range(k):
        b, e = int(pads[i]), int(pads[i + k])
        d = shape[i + 1]
        src.append(slice(max(-b, 0), d - max(-e, 0)))
        kept = d - max(-b, 0) - max(-e, 0)
        dst.append(slice(max(b, 0), max(b, 0) + kept))
        widths.append((max(b, 0), max(e, 0)))
    return tuple(src), tuple(dst), widths


@register_kernel("pad")
def bind_pad(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping) -> Run:
    """ONNX Pad over the non-batch axes: constant (value), reflect, edge, wrap."""
    x, out = ins[0], outs[0]
    mode = attrs.get("mode", "constant")
    src, dst, widths = _pad_plan(x.shape, attrs["pads"])
    inner = x[src]
    want = tuple(s + b + e for s, (b, e) in zip(inner.shape, widths))
    if want != out.shape:
        raise ValueError(f"pad: input {x.shape} with pads {tuple(attrs['pads'])} gives {want}, "
                         f"output is {out.shape}")
    if mode == "constant":
        value = np.float32(attrs.get("value", 0.0))
        border = any(b or e for b, e in widths)

        def run_constant():
            if border:
                out.fill(value)
            out[dst] = inner
        return run_constant
    np_mode = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}.get(mode)
    if np_mode is None:
        raise ValueError(f"pad: unknown mode {mode!r}")
    return lambda: np.copyto(out, np.pad(inner, widths, mode=np_mode))


_UFUNCS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
           "max": np.maximum, "min": np.minimum}


@register_kernel("binary")
def bind_binary(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping) -> Run:
    """out = a fn b with numpy broadcasting; correct in place (out may be a or b)."""
    a, b, out = ins[0], ins[1], outs[0]
    fn = _UFUNCS.get(attrs.get("fn", "mul"))
    if fn is None:
        raise ValueError(f"binary: unknown fn {attrs.get('fn')!r}; known: {', '.join(_UFUNCS)}")
    if np.broadcast_shapes(a.shape, b.shape) != out.shape:
        raise ValueError(f"binary: {a.shape} and {b.shape} do not broadcast to {out.shape}")
    if fn is np.divide:
        def run_div():
            with np.errstate(divide="ignore", invalid="ignore"):
                np.divide(a, b, out=out)
        return run_div
    return lambda: fn(a, b, out=out)


@register_kernel("clip")
def bind_clip(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping) -> Run:
    """out = min(max(x, lo), hi); NaN stays NaN; correct in place."""
    x, out = ins[0], outs[0]
    lo, hi = np.float32(attrs.get("min", -math.inf)), np.float32(attrs.get("max", math.inf))

    def run():
        np.maximum(x, lo, out=out)
        np.minimum(out, hi, out=out)
    return run


@numba.njit(cache=True)
def _log_softmax_row(x, out, i, p):
    c = x.shape[1]
    m = x[i, 0, p]
    for j in range(1, c):
        v = x[i, j, p]
        if v > m or math.isnan(v):
            m = v
    s = 0.0
    for j in range(c):
        s += math.exp(x[i, j, p] - m)
    lse = m + np.float32(math.log(s))
    for j in range(c):
        out[i, j, p] = x[i, j, p] - lse


@numba.njit(cache=True)
def _log_softmax_serial(x, out):
    n, _, hw = x.shape
    for i in range(n):
        for p in range(hw):
            _log_softmax_row(x, out, i, p)


@numba.njit(cache=True, parallel=PARALLEL)
def _log_softmax_parallel(x, out):
    n, _, hw = x.shape
    for t in prange(n * hw):
        _log_softmax_row(x, out, t // hw, t % hw)


@register_kernel("log_softmax")
def bind_log_softmax(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                     attrs: Mapping) -> Run:
    """log(softmax(x)) over axis 1, computed as x - max - log(sum(exp(x - max)))."""
    x = ins[0]
    if int(attrs.get("axis", 1)) != 1:
        raise ValueError(f"log_softmax kernel works over axis 1, got axis={attrs['axis']}")
    n, c = x.shape[:2]
    x3, o3 = x.reshape(n, c, -1), outs[0].reshape(n, c, -1)
    fn = _log_softmax_parallel if x.size >= PARALLEL_MIN else _log_softmax_serial
    return lambda: fn(x3, o3)
