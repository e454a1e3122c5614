"""Linear (fully connected) and Concat CPU kernels.

Linear is a GEMM: BLAS writes the product straight into the output buffer, then one
jitted sweep adds bias and residual and applies the activation, a row at a time.
Concat is pure data movement: contiguous block copies into slices of the output.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from . import blas
from .activation import act_code, apply_act
from .elementwise import use_parallel
from .jit import PARALLEL

CONCAT_PARALLEL_MIN = 1 << 17  # 2 threads copied 8x64x16x16 -> 262k floats 1.4x faster
COPY_CHUNK = 1 << 13  # parallel concat: smallest piece of a row given to one task (32 KiB)

Run = Callable[[], None]


# ---------------------------------------------------------------- linear

# Each row kernel is one simple loop (LLVM unswitches `code` and vectorizes it); the bias is
# always added (zeros when the layer has none: v + 0 == v for every v but -0.0).

@numba.njit(cache=True)
def _row_bias(row, bias, code, alpha):
    for j in range(row.size):
        row[j] = apply_act(row[j] + bias[j], code, alpha)


@numba.njit(cache=True)
def _row_bias_res(row, bias, res, code, alpha):
    for j in range(row.size):
        row[j] = apply_act((row[j] + bias[j]) + res[j], code, alpha)


@numba.njit(cache=True)
def _epilogue_serial(out, bias, res, has_res, code, alpha):
    for i in range(out.shape[0]):
        if has_res:
            _row_bias_res(out[i], bias, res[i], code, alpha)
        else:
            _row_bias(out[i], bias, code, alpha)


@numba.njit(cache=True, parallel=PARALLEL)
def epilogue_rows(out, bias, res, has_res, code, alpha):
    """out[i] = act(out[i] + bias (+ res[i])) for every row, rows in parallel: a Linear's
    epilogue, and an NHWC conv's (its output rows are pixels x channels too)."""
    for i in prange(out.shape[0]):
        if has_res:
            _row_bias_res(out[i], bias, res[i], code, alpha)
        else:
            _row_bias(out[i], bias, code, alpha)


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (the kernels only read it)."""
    v = a.view()
    v.flags.writeable = False
    return v


def _require_c(a: np.ndarray, what: str) -> None:
    if not a.flags.c_contiguous or a.dtype != np.float32:
        raise ValueError(f"{what} must be C-contiguous float32, got {a.dtype} strides "
                         f"{a.strides}")


@register_kernel("linear")
def bind_linear(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping) -> Run:
    """out = x @ weight.T (+ bias) (+ residual), then the activation.

    ``np.dot(x, weight.T, out=out)`` hands BLAS the transposed weight as a flag (no copy)
    and writes C-contiguous ``out`` in place: nothing is allocated per call.
    """
    has_bias, has_res = bool(attrs["bias"]), bool(attrs.get("residual", False))
    if len(ins) != 2 + has_bias + has_res:
        raise ValueError(f"linear: expected {2 + has_bias + has_res} inputs (x, weight"
                         f"{', bias' if has_bias else ''}{', residual' if has_res else ''}), "
                         f"got {len(ins)}")
    x, w, out = ins[0], ins[1], outs[0]
    n, f = x.shape if x.ndim == 2 else (-1, -1)
    o = w.shape[0]
    if x.ndim != 2 or w.shape != (o, f) or out.shape != (n, o):
        raise ValueError(f"linear: x {x.shape}, weight {w.shape}, out {out.shape} disagree "
                         f"(want (N, F), (O, F), (N, O))")
    if int(attrs.get("out_features", o)) != o:
        raise ValueError(f"linear: out_features={attrs['out_features']} but weight has {o} rows")
    for a, what in ((x, "linear input"), (w, "linear weight"), (out, "linear output")):
        _require_c(a, what)
    # read-only views: constants and arena views then share one compiled signature
    bias = _readonly(ins[2] if has_bias else np.zeros(o, np.float32))
    res = _readonly(ins[-1] if has_res else np.zeros((1, 1), np.float32))  # unused if no res
    if bias.shape != (o,) or (has_res and res.shape != (n, o)):
        raise ValueError(f"linear: bias {bias.shape} / residual {res.shape} do not fit "
                         f"output {out.shape}")
    for a in [x, w] + ([res] if has_res else []):
        if np.may_share_memory(a, out):  # BLAS overwrites out before the epilogue reads res
            raise ValueError("linear: the output must not share memory with an input")
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    wt = w.T  # an F-ordered view: BLAS reads it transposed, no copy

    if not has_bias and not has_res and code == 0:
        return lambda: blas.dot(x, wt, out)
    parallel = use_parallel(out.size, code) and n > 1
    if not parallel and not has_res and code in (0, 1):
        # a classifier at small batch: numpy's own loops, in place, nothing for Numba to
        # compile (its serial epilogue cost 1 s of a cold ResNet-18's first call);
        # np.maximum passes NaN through, as torch.relu does
        def run_numpy() -> None:
            blas.dot(x, wt, out)
            np.add(out, bias, out=out)
            if code == 1:
                np.maximum(out, np.float32(0.0), out=out)
        return run_numpy
    epilogue = epilogue_rows if parallel else _epilogue_serial

    def run() -> None:
        blas.dot(x, wt, out)
        epilogue(out, bias, res, has_res, code, alpha)
    return run


# ---------------------------------------------------------------- concat

# The output is viewed as (outer, inner_out): ``outer`` = product of the dims before the
# axis, and each input k fills columns [offs[k], offs[k] + sizes[k]) of every row from its
# own (outer, sizes[k]) view. Work is split into tasks of one row x a column range, so a
# batch-1 concat still parallelizes; each task copies the pieces of the inputs it overlaps.

@numba.njit(cache=True)
def _copy(src, dst):
    for j in range(dst.size):
        dst[j] = src[j]


@numba.njit(cache=True)
def _concat_task(srcs, offs, sizes, out, inner_out, width, nchunk, t):
    i = t // nchunk
    c0 = (t % nchunk) * width
    c1 = min(c0 + width, inner_out)
    row = i * inner_out
    for k in range(len(srcs)):
        lo = max(offs[k], c0)
        hi = min(offs[k] + sizes[k], c1)
        if lo < hi:
            s = i * sizes[k] + lo - offs[k]
            _copy(srcs[k][s:s + hi - lo], out[row + lo:row + hi])


@numba.njit(cache=True)
def _concat_serial(srcs, offs, sizes, out, inner_out, width, nchunk, ntasks):
    for t in range(ntasks):
        _concat_task(srcs, offs, sizes, out, inner_out, width, nchunk, t)


@numba.njit(cache=True, parallel=PARALLEL)
def _concat_parallel(srcs, offs, sizes, out, inner_out, width, nchunk, ntasks):
    for t in prange(ntasks):
        _concat_task(srcs, offs, sizes, out, inner_out, width, nchunk, t)


@register_kernel("concat")
def bind_concat(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping) -> Run:
    """Copy each input into its slice of the output along ``axis`` (1..rank-1).

    For axis 1 of NCHW each input is one contiguous block per image.
    """
    out = outs[0]
    axis, rank = int(attrs["axis"]), out.ndim
    if not 1 <= axis < rank:
        raise ValueError(f"concat: axis {axis} out of range 1..{rank - 1} for rank {rank}")
    if not ins:
        raise ValueError("concat: needs at least one input")
    _require_c(out, "concat output")
    for k, a in enumerate(ins):
        _require_c(a, f"concat input {k}")
        if a.ndim != rank or a.shape[:axis] != out.shape[:axis] or \
                a.shape[axis + 1:] != out.shape[axis + 1:]:
            raise ValueError(f"concat(axis={axis}): input {k} {a.shape} does not fit "
                             f"output {out.shape}")
        if np.may_share_memory(a, out):
            raise ValueError("concat: the output must not share memory with an input")
    if sum(a.shape[axis] for a in ins) != out.shape[axis]:
        raise ValueError(f"concat(axis={axis}): inputs {[a.shape for a in ins]} do not add "
                         f"up to output {out.shape}")
    outer = math.prod(out.shape[:axis])
    inner_out = math.prod(out.shape[axis:])
    sizes = np.array([math.prod(a.shape[axis:]) for a in ins], np.int64)
    offs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    srcs = tuple(_readonly(a.reshape(-1)) for a in ins)  # one tuple type: all read-only
    flat = out.reshape(-1)
    if out.size >= CONCAT_PARALLEL_MIN:
        # enough tasks to keep every thread busy, none smaller than COPY_CHUNK elements
        want = -(-4 * numba.get_num_threads() // outer)
        nchunk = max(1, min(want, inner_out // COPY_CHUNK))
        fn = _concat_parallel
    else:
        nchunk, fn = 1, _concat_serial
    width = -(-inner_out // nchunk)
    nchunk = -(-inner_out // width)
    ntasks = outer * nchunk
    return lambda: fn(srcs, offs, sizes, flat, inner_out, width, nchunk, ntasks)
