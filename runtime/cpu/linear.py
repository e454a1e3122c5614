"""Linear (fully connected) and Concat CPU kernels.

Linear is a GEMM: BLAS does the product straight into the output buffer, then one
jitted sweep applies bias, residual and the activation while the rows are hot.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from .activation import act_code, apply_act


@numba.njit(cache=True)
def _epilogue(out, bias, has_bias, res, has_res, code, alpha):
    n, o = out.shape
    for i in range(n):
        for j in range(o):
            v = out[i, j]
            if has_bias:
                v += bias[j]
            if has_res:
                v += res[i, j]
            out[i, j] = apply_act(v, code, alpha)


@register_kernel("linear")
def bind_linear(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    """out = x @ weight.T (+ bias) (+ residual), then the activation."""
    x, w = ins[0], ins[1]
    out = outs[0]
    has_bias, has_res = bool(attrs["bias"]), bool(attrs.get("residual", False))
    bias = ins[2] if has_bias else np.zeros(1, np.float32)
    res = ins[-1] if has_res else np.zeros((1, 1), np.float32)
    if x.shape[1] != w.shape[1] or out.shape != (x.shape[0], w.shape[0]):
        raise ValueError(f"linear: x {x.shape}, weight {w.shape}, out {out.shape} disagree")
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    wt = w.T  # a transposed view: BLAS reads it without a copy
    plain = not has_bias and not has_res and code == 0

    def run():
        np.matmul(x, wt, out=out)
        if not plain:
            _epilogue(out, bias, has_bias, res, has_res, code, alpha)
    return run


@numba.njit(cache=True, parallel=True)
def _concat_blocks(src, out, offset, inner_src, inner_out, outer):
    # src viewed as (outer, inner_src) lands at out[(outer, offset:offset+inner_src)]
    for i in prange(outer):
        base_o = i * inner_out + offset
        base_s = i * inner_src
        for j in range(inner_src):
            out[base_o + j] = src[base_s + j]


@register_kernel("concat")
def bind_concat(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    """Copy each input into its slice of the output along ``axis`` (contiguous blocks)."""
    out = outs[0]
    axis = int(attrs["axis"])
    outer = int(np.prod(out.shape[:axis]))
    inner_out = int(np.prod(out.shape[axis:]))
    flat_out = out.reshape(-1)
    plan = []
    offset = 0
    for a in ins:
        inner = int(np.prod(a.shape[axis:]))
        plan.append((a.reshape(-1), offset, inner))
        offset += inner
    if offset != inner_out:
        raise ValueError(f"concat: inputs fill {offset} of {inner_out} elements per slice")

    def run():
        for src, off, inner in plan:
            _concat_blocks(src, flat_out, off, inner, inner_out, outer)
    return run
