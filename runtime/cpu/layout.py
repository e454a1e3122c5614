"""Layout transforms between NCHW and the blocked NCHW16c (see conv_blocked.py)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel

B = 16


@numba.njit(cache=True, parallel=True)
def _to_blocked(x, out):
    n_img, c, h, w = x.shape
    cb_n = out.shape[1]
    for t in prange(n_img * cb_n):
        n, cb = t // cb_n, t % cb_n
        for k in range(B):
            ch = cb * B + k
            if ch < c:
                for i in range(h):
                    for j in range(w):
                        out[n, cb, i, j, k] = x[n, ch, i, j]
            else:
                for i in range(h):
                    for j in range(w):
                        out[n, cb, i, j, k] = 0.0


@numba.njit(cache=True, parallel=True)
def _from_blocked(x, out):
    n_img, c, h, w = out.shape
    for t in prange(n_img * c):
        n, ch = t // c, t % c
        cb, k = ch // B, ch % B
        for i in range(h):
            for j in range(w):
                out[n, ch, i, j] = x[n, cb, i, j, k]


def to_nchwc(x: np.ndarray) -> np.ndarray:
    """NCHW -> NCHW16c (a new array, padded channels zero)."""
    n, c, h, w = x.shape
    out = np.empty((n, -(-c // B), h, w, B), np.float32)
    _to_blocked(np.ascontiguousarray(x, np.float32), out)
    return out


def from_nchwc(x: np.ndarray, channels: int) -> np.ndarray:
    """NCHW16c -> NCHW with ``channels`` channels (a new array)."""
    out = np.empty((x.shape[0], channels, x.shape[2], x.shape[3]), np.float32)
    _from_blocked(np.ascontiguousarray(x), out)
    return out


@register_kernel("layout_transform", "cpu", "NCHW16c")
def bind_layout_transform(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                          attrs: Mapping):
    src, dst = attrs["src"], attrs["dst"]
    x, out = ins[0], outs[0]
    if (src, dst) == ("NCHW", "NCHW16c"):
        return lambda: _to_blocked(x, out)
    if (src, dst) == ("NCHW16c", "NCHW"):
        return lambda: _from_blocked(x, out)
    raise ValueError(f"layout_transform: no conversion from {src} to {dst}")
