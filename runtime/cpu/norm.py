"""Normalization CPU kernels: inference BatchNorm, LocalResponseNorm, Softmax (axis 1)."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from .activation import act_code, apply_act
from .jit import PARALLEL

PARALLEL_MIN = 1 << 15


@numba.njit(cache=True, parallel=PARALLEL)
def _bn_apply(x, out, scale, shift, code, alpha):
    # x, out: (N, C, HW); per-channel y = x * scale + shift, then the activation
    n, c, hw = x.shape
    for nc in prange(n * c):
        i, j = nc // c, nc % c
        s, t = scale[j], shift[j]
        for k in range(hw):
            out[i, j, k] = apply_act(x[i, j, k] * s + t, code, alpha)


@numba.njit(cache=True)
def _bn_apply_serial(x, out, scale, shift, code, alpha):
    n, c, hw = x.shape
    for i in range(n):
        for j in range(c):
            s, t = scale[j], shift[j]
            for k in range(hw):
                out[i, j, k] = apply_act(x[i, j, k] * s + t, code, alpha)


def bn_scale_shift(w: np.ndarray, b: np.ndarray, mean: np.ndarray, var: np.ndarray,
                   eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Inference BN as y = x * scale + shift per channel (computed in float64)."""
    inv = 1.0 / np.sqrt(var.astype(np.float64) + eps)
    return (w * inv).astype(np.float32), (b - mean * inv * w).astype(np.float32)


@register_kernel("batch_norm")
def bind_batch_norm(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    """Inference BN with running statistics; rank 2 or 4; correct in place.

    scale/shift are recomputed at each run from the parameter arrays (cheap: C values),
    so a trainer that updates them in place is seen without re-binding.
    """
    x, w, b, mean, var = ins[:5]
    n, c = x.shape[:2]
    x3 = x.reshape(n, c, -1)
    o3 = outs[0].reshape(n, c, -1)
    eps = float(attrs["eps"])
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    fn = _bn_apply if x.size >= PARALLEL_MIN else _bn_apply_serial

    def run():
        scale, shift = bn_scale_shift(w, b, mean, var, eps)
        fn(x3, o3, scale, shift, code, alpha)
    return run


@numba.njit(cache=True, parallel=PARALLEL)
def _lrn(x, out, size, alpha, beta, k):
    # b_c = a_c / (k + alpha/size * sum_{c'=c-size//2}^{c+(size-1)//2} a_c'^2)^beta
    n, c, hw = x.shape
    lo, hi = size // 2, (size - 1) // 2
    coef = alpha / size
    for i in prange(n):
        sq = np.empty(c, np.float32)
        for p in range(hw):
            for j in range(c):
                sq[j] = x[i, j, p] * x[i, j, p]
            s = np.float32(0.0)
            for j in range(0, min(hi, c - 1) + 1):  # window of channel 0
                s += sq[j]
            for j in range(c):
                out[i, j, p] = x[i, j, p] / (k + coef * s) ** beta
                # slide the window from channel j to j + 1
                add = j + 1 + hi
                drop = j - lo
                if add < c:
                    s += sq[add]
                if drop >= 0:
                    s -= sq[drop]


@register_kernel("local_response_norm")
def bind_lrn(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    x = ins[0]
    n, c = x.shape[:2]
    x3, o3 = x.reshape(n, c, -1), outs[0].reshape(n, c, -1)
    size = int(attrs["size"])
    alpha, beta, k = (np.float32(attrs[a]) for a in ("alpha", "beta", "k"))
    return lambda: _lrn(x3, o3, size, alpha, beta, k)


@numba.njit(cache=True, parallel=PARALLEL)
def _softmax(x, out):
    # softmax over axis 1 of (N, C, HW), at every (n, pixel)
    n, c, hw = x.shape
    for i in prange(n):
        for p in range(hw):
            m = x[i, 0, p]
            for j in range(1, c):
                v = x[i, j, p]
                if v > m or math.isnan(v):
                    m = v
            s = np.float32(0.0)
            for j in range(c):
                e = np.float32(math.exp(x[i, j, p] - m))
                out[i, j, p] = e
                s += e
            inv = np.float32(1.0) / s
            for j in range(c):
                out[i, j, p] *= inv


@register_kernel("softmax")
def bind_softmax(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    x = ins[0]
    if int(attrs.get("axis", 1)) != 1:
        raise ValueError(f"softmax kernel works over axis 1, got axis={attrs['axis']}")
    n, c = x.shape[:2]
    x3, o3 = x.reshape(n, c, -1), outs[0].reshape(n, c, -1)
    return lambda: _softmax(x3, o3)


@numba.njit(cache=True, parallel=PARALLEL)
def _bn_blocked(x, out, scale, shift, code, alpha):
    # x, out: (N, Cb, HW, 16); scale/shift: (Cb, 16), zero in the padding channels
    n, cb_n, hw, b = x.shape
    for t in prange(n * cb_n):
        i, cb = t // cb_n, t % cb_n
        for p in range(hw):
            for k in range(b):
                out[i, cb, p, k] = apply_act(x[i, cb, p, k] * scale[cb, k] + shift[cb, k],
                                             code, alpha)


@register_kernel("batch_norm", "cpu", "NCHW16c")
def bind_batch_norm_blocked(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                            attrs: Mapping):
    """Inference BN on NCHW16c: padding channels get scale = shift = 0 and stay zero."""
    x, w, b, mean, var = ins[:5]
    n, cb_n, h, wd, blk = x.shape
    c = w.shape[0]
    x4, o4 = x.reshape(n, cb_n, h * wd, blk), outs[0].reshape(n, cb_n, h * wd, blk)
    eps = float(attrs["eps"])
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    if code == 3:
        raise ValueError("batch_norm NCHW16c: sigmoid would break the zero padding channels")
    scale = np.zeros(cb_n * blk, np.float32)
    shift = np.zeros(cb_n * blk, np.float32)

    def run():
        scale[:c], shift[:c] = bn_scale_shift(w, b, mean, var, eps)
        _bn_blocked(x4, o4, scale.reshape(cb_n, blk), shift.reshape(cb_n, blk), code, alpha)
    return run
