"""3x3 stride-1 convolution by Winograd's F(2x2, 3x3) on NCHW16c tensors.

A 2x2 block of outputs of a 3x3 conv is ``A^T [(G g G^T) * (B^T d B)] A`` for its 4x4
input patch ``d`` and kernel ``g`` (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", 2016; the same F(2x2, 3x3) as NNPACK's and oneDNN's): per 2x2 outputs
and input/output channel pair, 16 multiplies instead of 36. Summed over input channels,
the 16 elementwise products become 16 small matrix products
``M[xi] = V[xi] (tiles x C) @ U[xi] (C x K)``, xi the 16 positions of a transformed tile.

Here a task is a block of ``TILE`` tiles (2x2 output pixels each), numbered across the
batch, so small planes still fill blocks. It transforms its tiles' input patches into a
thread-local ``V`` ([xi][C/16][tile][16]: 16 x C x TILE floats, 32-256 KB on ResNet-18,
in L2), then for each 16-channel output block runs the 16 products as register tiles of
TILE tiles x 16 output channels (the direct kernel's inner loop: per input channel one
weight vector, TILE broadcast FMAs), transforms them back and stores them through the
direct kernel's epilogue (bias, residual, activation). The weights ``U = G g G^T`` are
transformed in float64 at bind time, and again before every call when they change (a
trainer's; ``flip`` transforms the weight of the conv whose dL/dx this one computes).

Measured on the 2-core Zen 4 (AVX-512), this kernel's time / the direct NCHW16c kernel's,
interleaved: ResNet-18's 3x3 layers (64-512 channels, 32x32-4x4) 0.52-0.59x at batch 32,
0.49-0.58x at batch 1 down to 8x8; at 224x224, batch 1: 0.55-0.62x, 7x7 0.77x; 16-32
channels 0.7-0.8x. With fewer tile blocks than threads a thread idles and it lost (512
channels at 4x4, batch 1: 2.4x), so ``suits`` requires a block per thread; splitting the
output channels over tasks instead recomputed each block's input transform per task and
ran no faster than the direct kernel there.

Rounding differs from the direct sum: the transforms add and subtract partial values, so
the float32 error grows to ~1e-6 of the output's magnitude (the direct kernel: ~1e-7).
The compiler asks for it per conv (``cnncomp/passes/use_winograd.py``; inference only);
``compile(..., disable=["use_winograd"])`` keeps every conv direct.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .jit import PARALLEL
from .simd import (TILE, store_tile, vadd, vfma_tile, vload, vstore, vstore_tile, vsub,
                   vtile)

B = 16
_ZERO = np.zeros(B, np.float32)
# U = G g G^T is the 4x4 transformed kernel, G = [[1, 0, 0], [1/2, 1/2, 1/2],
# [1/2, -1/2, 1/2], [0, 0, 1]] (written out in _pack)


def tile_blocks(n: int, oh: int, ow: int) -> int:
    """Tasks of the kernel: blocks of TILE 2x2-output tiles over the batch."""
    return -(-(n * ((oh + 1) // 2) * ((ow + 1) // 2)) // TILE)


def suits(x_shape: tuple, out_shape: tuple, attrs, threads: int) -> bool:
    """Whether an NCHW16c dense conv (input and output blocked) runs this kernel: asked
    for (``algorithm="winograd"``, set by the use_winograd pass), 3x3, stride 1, no
    dilation, groups 1, and at least one tile block per thread."""
    return (attrs.get("algorithm") == "winograd" and len(x_shape) == 5
            and int(attrs["groups"]) == 1
            and tuple(attrs["kernel_size"]) == (3, 3) and tuple(attrs["stride"]) == (1, 1)
            and tuple(attrs["dilation"]) == (1, 1)
            and tile_blocks(out_shape[0], out_shape[2], out_shape[3]) >= threads)


def pack_winograd(w: np.ndarray, flip: bool = False) -> np.ndarray:
    """OIHW 3x3 weight -> U (O/16, 16 positions, C/16, 16 in, 16 out) float32, zero past
    the channels. ``flip``: U of the conv computing this conv's dL/dx (the weight
    transposed and flipped in space)."""
    if w.shape[2:] != (3, 3):
        raise ValueError(f"Winograd F(2x2, 3x3) needs a 3x3 kernel, got weight {w.shape}")
    o, c = (w.shape[1], w.shape[0]) if flip else w.shape[:2]
    up = np.empty((-(-o // B), 16, -(-c // B), B, B), np.float32)
    pack_into(w, up, flip)
    return up


@numba.njit(cache=True, inline="always")
def _g(w, o, c, i, j, flip):
    return np.float64(w[c, o, 2 - i, 2 - j] if flip else w[o, c, i, j])


@numba.njit(cache=True, parallel=PARALLEL)
def pack_into(w, up, flip):
    """U = G g G^T per (output, input) channel pair, in float64, into ``up``: at bind
    time, and before every call of a training graph's conv (its weights change)."""
    kb_n, _, cb_n, _, _ = up.shape
    o_n, c_n = (w.shape[1], w.shape[0]) if flip else (w.shape[0], w.shape[1])
    for t in prange(kb_n * cb_n):
        kb, cb = t // cb_n, t % cb_n
        for ci in range(B):
            for ko in range(B):
                o, c = kb * B + ko, cb * B + ci
                if o >= o_n or c >= c_n:
                    for xi in range(16):
                        up[kb, xi, cb, ci, ko] = 0.0
                    continue
                for r in range(4):  # row r of G g, then that row times G^T
                    if r == 0:
                        a, b, d = _g(w, o, c, 0, 0, flip), _g(w, o, c, 0, 1, flip), \
                            _g(w, o, c, 0, 2, flip)
                    elif r == 3:
                        a, b, d = _g(w, o, c, 2, 0, flip), _g(w, o, c, 2, 1, flip), \
                            _g(w, o, c, 2, 2, flip)
                    else:
                        s = 1.0 if r == 1 else -1.0
                        a = 0.5 * (_g(w, o, c, 0, 0, flip) + s * _g(w, o, c, 1, 0, flip)
                                   + _g(w, o, c, 2, 0, flip))
                        b = 0.5 * (_g(w, o, c, 0, 1, flip) + s * _g(w, o, c, 1, 1, flip)
                                   + _g(w, o, c, 2, 1, flip))
                        d = 0.5 * (_g(w, o, c, 0, 2, flip) + s * _g(w, o, c, 1, 2, flip)
                                   + _g(w, o, c, 2, 2, flip))
                    up[kb, 4 * r, cb, ci, ko] = a
                    up[kb, 4 * r + 1, cb, ci, ko] = 0.5 * (a + b + d)
                    up[kb, 4 * r + 2, cb, ci, ko] = 0.5 * (a - b + d)
                    up[kb, 4 * r + 3, cb, ci, ko] = d


@numba.njit(cache=True, inline="always")
def _bt(a0, a1, a2, a3):
    """One direction of B^T d B: four rows (or columns) of a patch, transformed."""
    return vsub(a0, a2), vadd(a1, a2), vsub(a2, a1), vsub(a1, a3)


@numba.njit(cache=True, inline="always")
def _at(m0, m1, m2, m3):
    """One direction of A^T m A: four rows (or columns) to two."""
    return vadd(vadd(m0, m1), m2), vsub(vsub(m1, m2), m3)


@numba.njit(cache=True, inline="always")
def _px(xf, zero, base, ih, iw, h, w):
    """The 16 channels of input pixel (ih, iw) of the plane at ``base``; zero outside."""
    if ih >= 0 and ih < h and iw >= 0 and iw < w:
        return vload(xf, base + (ih * w + iw) * B)
    return zero


def _winograd(x, up, bias, res, out, has_res, act, alpha, pt, pl):
    n_img, cb_n, h, w, _ = x.shape
    _, kb_n, oh_n, ow_n, _ = out.shape
    xf, uf, of, rf = x.reshape(-1), up.reshape(-1), out.reshape(-1), res.reshape(-1)
    th_n, tw_n = (oh_n + 1) // 2, (ow_n + 1) // 2
    p_n = n_img * th_n * tw_n
    xs = cb_n * TILE * B  # V's stride between positions xi: [xi][cb][tile][16]
    ms = TILE * B  # M's: [xi][tile][16]
    zero = vload(_ZERO, 0)
    st = np.uint64(B)
    for blk in prange(-(-p_n // TILE)):
        v = np.empty(16 * xs, np.float32)
        m = np.empty(16 * ms, np.float32)
        # V = B^T d B for each tile (the block's last may repeat the batch's last tile)
        for t in range(TILE):
            p = min(blk * TILE + t, p_n - 1)
            n, r = p // (th_n * tw_n), p % (th_n * tw_n)
            ih0, iw0 = (r // tw_n) * 2 - pt, (r % tw_n) * 2 - pl
            for cb in range(cb_n):
                xb = (n * cb_n + cb) * h * w * B
                vt = (cb * TILE + t) * B
                for j in range(4):  # columns of the patch, then its rows, in place in v
                    a0, a1, a2, a3 = _bt(_px(xf, zero, xb, ih0, iw0 + j, h, w),
                                         _px(xf, zero, xb, ih0 + 1, iw0 + j, h, w),
                                         _px(xf, zero, xb, ih0 + 2, iw0 + j, h, w),
                                         _px(xf, zero, xb, ih0 + 3, iw0 + j, h, w))
                    vstore(v, vt + j * xs, a0)
                    vstore(v, vt + (4 + j) * xs, a1)
                    vstore(v, vt + (8 + j) * xs, a2)
                    vstore(v, vt + (12 + j) * xs, a3)
                for i in range(4):
                    q = vt + 4 * i * xs
                    a0, a1, a2, a3 = _bt(vload(v, q), vload(v, q + xs), vload(v, q + 2 * xs),
                                         vload(v, q + 3 * xs))
                    vstore(v, q, a0)
                    vstore(v, q + xs, a1)
                    vstore(v, q + 2 * xs, a2)
                    vstore(v, q + 3 * xs, a3)
        for kb in range(kb_n):
            for xi in range(16):  # M[xi] = V[xi] @ U[xi], TILE tiles x 16 out channels
                accs = vtile(zero, TILE)
                ub = (kb * 16 + xi) * cb_n * B * B
                for cb in range(cb_n):
                    vb = np.uint64(xi * xs + cb * TILE * B)
                    wb = ub + cb * B * B
                    for c in range(B):
                        accs = vfma_tile(accs, v, vb + np.uint64(c), st,
                                         vload(uf, wb + c * B))
                vstore_tile(accs, m, xi * ms, B)
            bvec = vload(bias, kb * B)
            for t in range(min(TILE, p_n - blk * TILE)):  # Y = A^T M A + bias, epilogue
                p = blk * TILE + t
                n, r = p // (th_n * tw_n), p % (th_n * tw_n)
                oh0, ow0 = (r // tw_n) * 2, (r % tw_n) * 2
                mt = t * B
                s00, s10 = _at(vload(m, mt), vload(m, mt + 4 * ms), vload(m, mt + 8 * ms),
                               vload(m, mt + 12 * ms))
                s01, s11 = _at(vload(m, mt + ms), vload(m, mt + 5 * ms),
                               vload(m, mt + 9 * ms), vload(m, mt + 13 * ms))
                s02, s12 = _at(vload(m, mt + 2 * ms), vload(m, mt + 6 * ms),
                               vload(m, mt + 10 * ms), vload(m, mt + 14 * ms))
                s03, s13 = _at(vload(m, mt + 3 * ms), vload(m, mt + 7 * ms),
                               vload(m, mt + 11 * ms), vload(m, mt + 15 * ms))
                y00, y01 = _at(s00, s01, s02, s03)
                y10, y11 = _at(s10, s11, s12, s13)
                ob = ((n * kb_n + kb) * oh_n + oh0) * ow_n * B + ow0 * B
                two_rows = oh0 + 1 < oh_n
                if ow0 + 1 < ow_n:
                    store_tile((vadd(y00, bvec), vadd(y01, bvec)), of, ob, B, rf, has_res,
                               act, alpha)
                    if two_rows:
                        store_tile((vadd(y10, bvec), vadd(y11, bvec)), of, ob + ow_n * B,
                                   B, rf, has_res, act, alpha)
                else:  # an odd width's last column
                    store_tile((vadd(y00, bvec),), of, ob, B, rf, has_res, act, alpha)
                    if two_rows:
                        store_tile((vadd(y10, bvec),), of, ob + ow_n * B, B, rf, has_res,
                                   act, alpha)


winograd_par = numba.njit(cache=True, parallel=PARALLEL)(_winograd)
