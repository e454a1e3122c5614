"""Linear (a shared-memory tiled matrix product with the fused epilogue) and Concat.

Linear: out[m, o] = sum_k x[m, k] * weight[o, k] (+ bias[o]) (+ residual[m, o]), then the
activation. Both operands are K-contiguous, so a block loads a TK-wide slice of W's rows
and of x's rows into shared memory with neighbouring threads reading neighbouring k,
and the 16 x 16 threads accumulate an RM x RN register tile each (the same inner product
routine as the conv GEMM). Threads along x of the block walk output features, so the
final stores of a warp hit consecutive addresses of a row of ``out``.

Concat: one copy kernel per input into its slice of the output along ``axis``.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Sequence

import numpy as np
from numba import cuda, float32

from ..registry import register_kernel
from .common import (F32_ZERO, THREADS, CudaRun, act_code, apply_act, blocks_for, check_f32,
                     device_span, dummy)
from .conv import NT, TK, TX, TY, make_mma, tile_for


@functools.lru_cache(maxsize=None)
def make_linear_gemm(rm: int, rn: int, tk: int = TK) -> Any:
    """Tiled GEMM: a block computes BM = 16*rm output features x BN = 16*rn rows."""
    bm, bn = TX * rm, TY * rn
    rows = max(1, NT // tk)  # rows of W / x one pass of the block loads
    mma = make_mma(rm, rn, tk)

    @cuda.jit
    def linear_gemm(x, w, out, bias, has_bias, res, has_res, code, alpha):
        # x (M, K), w (O, K), out and res (M, O)
        sA = cuda.shared.array((tk, bm), float32)  # W slice: k x output feature
        sB = cuda.shared.array((tk, bn), float32)  # x slice: k x row
        acc = cuda.local.array((rm, rn), float32)
        for i in range(rm):
            for j in range(rn):
                acc[i, j] = F32_ZERO
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TX + tx
        big_m = x.shape[0]
        big_k = x.shape[1]
        big_o = w.shape[0]
        o0 = cuda.blockIdx.x * bm
        m0 = cuda.blockIdx.y * bn
        kk = tid % tk
        r0 = tid // tk
        for k0 in range(0, big_k, tk):
            k = k0 + kk
            k_ok = k < big_k
            for oo in range(r0, bm, rows):
                o = o0 + oo
                v = F32_ZERO
                if k_ok and o < big_o:
                    v = w[o, k]
                sA[kk, oo] = v
            for mm in range(r0, bn, rows):
                m = m0 + mm
                v = F32_ZERO
                if k_ok and m < big_m:
                    v = x[m, k]
                sB[kk, mm] = v
            cuda.syncthreads()
            mma(sA, sB, acc, tx, ty)
            cuda.syncthreads()
        for j in range(rn):
            m = m0 + ty + j * TY
            if m < big_m:
                for i in range(rm):
                    o = o0 + tx + i * TX
                    if o < big_o:
                        v = acc[i, j]
                        if has_bias:
                            v += bias[o]
                        if has_res:
                            v += res[m, o]
                        out[m, o] = apply_act(v, code, alpha)
    return linear_gemm


def _overlaps(a: Any, b: Any) -> bool:
    sa, sb = device_span(a), device_span(b)
    return sa[0] < sb[1] and sb[0] < sa[1]


@register_kernel("linear", "cuda", "NCHW")
def bind_linear(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping,
                tile: tuple[int, int] | None = None) -> CudaRun:
    """out = x @ weight.T (+ bias) (+ residual), then the activation (as the CPU kernel).
    ``tile`` forces the register tile (rm over features, rn over rows) for tests."""
    has_bias, has_res = bool(attrs["bias"]), bool(attrs.get("residual", False))
    if len(ins) != 2 + has_bias + has_res:
        raise ValueError(f"linear: expected {2 + has_bias + has_res} inputs (x, weight"
                         f"{', bias' if has_bias else ''}{', residual' if has_res else ''}), "
                         f"got {len(ins)}")
    x, w, out = ins[0], ins[1], outs[0]
    if len(x.shape) != 2 or len(w.shape) != 2 or w.shape[1] != x.shape[1] \
            or tuple(out.shape) != (x.shape[0], w.shape[0]):
        raise ValueError(f"linear: x {tuple(x.shape)}, weight {tuple(w.shape)}, out "
                         f"{tuple(out.shape)} disagree (want (N, F), (O, F), (N, O))")
    n, o = out.shape
    if int(attrs.get("out_features", o)) != o:
        raise ValueError(f"linear: out_features={attrs['out_features']} but weight has {o} rows")
    check_f32(list(ins) + [out], "linear")
    bias = ins[2] if has_bias else dummy(1)
    res = ins[-1] if has_res else dummy(2)
    if tuple(bias.shape) != ((o,) if has_bias else (1,)) or \
            (has_res and tuple(res.shape) != (n, o)):
        raise ValueError(f"linear: bias {tuple(bias.shape)} / residual {tuple(res.shape)} do "
                         f"not fit output {(n, o)}")
    for a in [x, w] + ([res] if has_res else []):
        if _overlaps(a, out):  # blocks read all of x while others write out
            raise ValueError("linear: the output must not share memory with an input")
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    rm, rn = tile or tile_for(o, n)
    grid = (-(-o // (TX * rm)), -(-n // (TY * rn)))
    if grid[1] > 65535:
        raise ValueError(f"linear: batch {n} needs grid {grid}, beyond CUDA's limit")
    return CudaRun().launch(make_linear_gemm(rm, rn), grid, (TX, TY),
                            x, w, out, bias, has_bias, res, has_res, code, alpha,
                            name=f"linear_gemm_{TX * rm}x{TY * rn}")


# ---------------------------------------------------------------- concat

@cuda.jit
def concat_copy(src, out, off):
    # src (outer, inner_k) -> out[:, off:off + inner_k] of out (outer, inner_out)
    inner = src.shape[1]
    total = src.shape[0] * inner
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        i = idx // inner
        j = idx - i * inner
        out[i, off + j] = src[i, j]


@register_kernel("concat", "cuda", "NCHW")
def bind_concat(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    """Copy each input into its slice of the output along ``axis`` (1..rank-1)."""
    out = outs[0]
    axis, rank = int(attrs["axis"]), len(out.shape)
    if not 1 <= axis < rank:
        raise ValueError(f"concat: axis {axis} out of range 1..{rank - 1} for rank {rank}")
    if not ins:
        raise ValueError("concat: needs at least one input")
    check_f32(list(ins) + [out], "concat")
    for k, a in enumerate(ins):
        if len(a.shape) != rank or tuple(a.shape[:axis]) != tuple(out.shape[:axis]) or \
                tuple(a.shape[axis + 1:]) != tuple(out.shape[axis + 1:]):
            raise ValueError(f"concat(axis={axis}): input {k} {tuple(a.shape)} does not fit "
                             f"output {tuple(out.shape)}")
        if _overlaps(a, out):
            raise ValueError("concat: the output must not share memory with an input")
    if sum(a.shape[axis] for a in ins) != out.shape[axis]:
        raise ValueError(f"concat(axis={axis}): inputs {[tuple(a.shape) for a in ins]} do "
                         f"not add up to output {tuple(out.shape)}")
    outer = math.prod(out.shape[:axis])
    out2 = out.reshape(outer, math.prod(out.shape[axis:]))
    run, off = CudaRun(), 0
    for a in ins:
        inner = math.prod(a.shape[axis:])
        if inner:
            run.launch(concat_copy, blocks_for(outer * inner), THREADS,
                       a.reshape(outer, inner), out2, off)
        off += inner
    return run
