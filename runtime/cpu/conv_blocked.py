"""Convolution in the blocked NCHW16c layout, with register tiles of ``f32x16`` vectors.

Layout: an (N, C, H, W) tensor is stored as (N, ceil(C/16), H, W, 16); channel c is at
[n, c // 16, h, w, c % 16] and the padding channels of the last block are zero in every
tensor of this layout (each kernel keeps them zero: its packed weights and bias are zero
there, and only zero-preserving activations run blocked).

Dense conv (groups == 1): each task computes one output row of one 16-channel output
block. Its inner loop keeps ``TILE`` output pixels x 16 output channels in vector
registers (8 pixels with AVX-512's 32 registers, 6 on AVX2, where each <16 x float> takes
two of 16), the row's last tile overlapping the one before (``row_plan``; rows shorter
than TILE take 4-pixel tiles, below 4 single pixels); per input channel
it loads one weight vector (16 output channels) and broadcasts TILE input values, i.e.
TILE FMAs per load of weights. One source serves every tile width: a tile is a tuple of
vectors and Numba compiles ``_tile`` once per length. Taps that fall in the
padding are skipped for whole tiles, and handled per pixel (as zero) only at the image
border. The epilogue (bias, residual, activation) runs on the registers before the
single store.

Depthwise conv (groups == C == O): 16 channels of a block are one vector; each tap is a
vector FMA of the input pixel's channels with the tap's weights. A task is one row of one
block, in the same register tiles of pixels as the dense conv (``row_plan``): per tap one
weight load serves the tile, and no tap is bounds-checked per pixel (border tiles read a
zero vector for pixels in the padding).

Dense convs marked ``algorithm="winograd"`` (3x3, stride 1; the use_winograd pass marks
them) run Winograd's F(2x2, 3x3) instead (``conv_winograd``: 0.5-0.6x this kernel's time
on ResNet-18's layers) when the batch gives every thread a block of tiles.

Weights are packed at bind time from PyTorch's OIHW, and again before each call when the
weight array is writable (a trainer updates it in place; inference graphs' are read-only).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from . import conv_winograd as winograd
from .activation import act_code
from .elementwise import bind_tanh
from .jit import PARALLEL, valid_range
from .simd import (TILE, store_tile, vadd_tile, vfma_tile, vfma_tile_edge, vfma_vec_tile,
                   vload, vload_tile, vload_tile_edge, vstore_tile, vtile)

B = 16
_ZERO = np.zeros(B, np.float32)  # what a tap in the padding reads (a constant in the kernel)
# dL/dW tiles: input channels x 16 output channels in registers, 16 of 32 with AVX-512; on
# AVX2 (16 registers, two per vector) 4 of them
GW_CHANNELS = 16 if TILE == 8 else 4
GW_TAPS_OUTER_BYTES = 1 << 19  # a pair's planes of every image that fit in L2 beside others


@numba.njit(cache=True)
def row_plan(ow_n):
    """How a row of ``ow_n`` output pixels is tiled: (TILE-pixel tiles, 4-pixel tiles,
    single pixels), in that order. Each tile re-reads the weights, so the plan takes the
    fewest tiles, then the fewest pixels computed. A tile that would pass the row's end
    starts earlier instead (``row_tile``), overlapping its neighbour: those pixels are
    computed and stored twice, with the same values. A 7-pixel row takes 4 + 4 (from
    pixel 3) instead of 4 + 1 + 1 + 1, 14 takes 8 + 8 instead of 8 + 4 + 1 + 1 (measured
    0.70-0.92x on ResNet-18's 14x14 and 7x7 layers at 224x224); 28 stays 8 + 8 + 8 + 4 (four
    overlapping 8s computed 32 pixels: 1.09x). Safe because a conv's output never shares
    memory with its inputs."""
    best_k, best_n4, best_n1 = 0, 0, ow_n
    best = (ow_n, ow_n)  # (tiles, pixels computed)
    for k in range(0, -(-ow_n // TILE) + 1 if ow_n >= TILE else 1):
        r = ow_n - k * TILE
        for n4 in range(0, (-(-r // 4) if r > 0 else 0) + 1 if ow_n >= 4 else 1):
            n1 = max(r - 4 * n4, 0)
            if r <= 0 and k * TILE - ow_n >= TILE:
                continue
            cand = (k + n4 + n1, k * TILE + 4 * n4 + n1)
            if cand < best:
                best, best_k, best_n4, best_n1 = cand, k, n4, n1
    return best_k, best_n4, best_n1


@numba.njit(cache=True, inline="always")
def row_tile(i, k_n, n4, ow_n):
    """(width, first pixel) of tile ``i`` of a ``row_plan`` (k_n, n4, ...): tiles are laid
    end to end, and one that would pass the row's end starts early, ending at its end."""
    if i < k_n:
        tw, start = TILE, i * TILE
    elif i < k_n + n4:
        tw, start = 4, k_n * TILE + (i - k_n) * 4
    else:
        tw, start = 1, k_n * TILE + n4 * 4 + (i - k_n - n4)
    return tw, min(start, ow_n - tw)


# inlined (Numba IR) into the kernels: as a call, each tile passed its arrays by value and
# its accumulators back through memory, with atomic reference counts on the arrays (shared
# by both threads' tiles); MobileNet's 32 -> 64 pointwise conv at batch 1 ran 0.82-0.86x
# inlined. The price: ~1.7 s more for a cold compile of ResNet-18
@numba.njit(cache=True, inline="always")
def _tile(accs, xf, wf, chans, x_base, w_base, oh, ow, cb_n, h, w, kh_n, kw_n, sh, sw, pt,
          pl, dh, dw):
    """Add the conv sums of output pixels ``ow .. ow + T - 1`` of row ``oh`` to the tile
    ``accs`` (T = len(accs), a constant: Numba compiles this once per tile width).
    ``x_base``: the image's offset in ``xf``; ``w_base``: the output block's in ``wf``.
    The input is ``cb_n`` blocks of ``len(chans)`` channels: 16 (NCHW16c), or 1 (an NCHW
    input, each channel a plane); a tuple's length is a compile-time constant, so the
    channel loop is unrolled for 16 (a runtime count cost 7-30%). Taps in the padding are
    skipped for whole tiles, read as zero per pixel at the border."""
    t_n, cpb = len(accs), len(chans)
    xs_c, xs_h, ws_c = h * w * cpb, w * cpb, kh_n * kw_n * cpb * B
    st = np.uint64(sw * cpb)
    for cb in range(cb_n):
        for kh in range(kh_n):
            ih = oh * sh - pt + kh * dh
            if ih < 0 or ih >= h:
                continue
            row = x_base + cb * xs_c + ih * xs_h
            for kw in range(kw_n):
                iw = ow * sw - pl + kw * dw
                wb = np.uint64(w_base + cb * ws_c + (kh * kw_n + kw) * cpb * B)
                if iw >= 0 and iw + (t_n - 1) * sw < w:
                    # unsigned indices: no negative-index wraparound in the hot loop
                    xi = np.uint64(row + iw * cpb)
                    for icu in range(cpb):
                        ic = np.uint64(icu)
                        accs = vfma_tile(accs, xf, xi + ic, st,
                                         vload(wf, wb + ic * np.uint64(B)))
                elif iw + (t_n - 1) * sw >= 0 and iw < w:  # straddles the left/right border
                    for icu in range(cpb):
                        ic = np.uint64(icu)
                        accs = vfma_tile_edge(accs, xf, _ZERO, row, iw, sw, w, cpb, ic,
                                              vload(wf, wb + ic * np.uint64(B)))
    return accs


def _dense(x, wp, bias, res, out, has_res, act, alpha, kh_n, kw_n, sh, sw, pt, pl, dh, dw,
           chans):
    n_img, cb_n, h, w, cpb = x.shape  # cpb == len(chans)
    _, ob_n, oh_n, ow_n, _ = out.shape
    xf, wf, of, rf = x.reshape(-1), wp.reshape(-1), out.reshape(-1), res.reshape(-1)
    xs_n = cb_n * h * w * cpb
    ws_o = cb_n * kh_n * kw_n * cpb * B
    os_n, os_o, os_h = ob_n * oh_n * ow_n * B, oh_n * ow_n * B, ow_n * B
    k_n, n4, n1 = row_plan(ow_n)
    # Task order by what would be re-read more: with one output block's weights larger
    # than an image, all tasks of that block run back to back on a thread (its weight
    # slab stays in cache, images stream); otherwise all blocks of one image do.
    w_major = ws_o > xs_n
    for t in prange(n_img * ob_n * oh_n):
        if w_major:
            ob = t // (n_img * oh_n)
            n = (t // oh_n) % n_img
        else:
            n = t // (ob_n * oh_n)
            ob = (t // oh_n) % ob_n
        oh = t % oh_n
        bvec = vload(bias, ob * B)
        obase = n * os_n + ob * os_o + oh * os_h
        for i in range(k_n + n4 + n1):
            tw, o = row_tile(i, k_n, n4, ow_n)
            if tw == TILE:
                accs = _tile(vtile(bvec, TILE), xf, wf, chans, n * xs_n, ob * ws_o, oh, o,
                             cb_n, h, w, kh_n, kw_n, sh, sw, pt, pl, dh, dw)
                store_tile(accs, of, obase + o * B, B, rf, has_res, act, alpha)
            elif tw == 4:
                acc4 = _tile(vtile(bvec, 4), xf, wf, chans, n * xs_n, ob * ws_o, oh, o, cb_n,
                             h, w, kh_n, kw_n, sh, sw, pt, pl, dh, dw)
                store_tile(acc4, of, obase + o * B, B, rf, has_res, act, alpha)
            else:
                acc1 = _tile(vtile(bvec, 1), xf, wf, chans, n * xs_n, ob * ws_o, oh, o, cb_n,
                             h, w, kh_n, kw_n, sh, sw, pt, pl, dh, dw)
                store_tile(acc1, of, obase + o * B, B, rf, has_res, act, alpha)


@numba.njit(cache=True, inline="always")  # as _tile: 0.72-0.82x on planes of 8x8 and up
def _dw_tile(accs, xf, wf, x_base, w_base, oh, ow, h, w, kh_n, kw_n, sh, sw, pt, pl, dh, dw):
    """Add the depthwise sums of output pixels ``ow .. ow + T - 1`` of row ``oh`` (one
    16-channel block) to the tile ``accs``: per tap, T lane-wise FMAs with one weight
    vector. Border taps read the zero vector for pixels in the padding."""
    t_n = len(accs)
    st = sw * B
    for kh in range(kh_n):
        ih = oh * sh - pt + kh * dh
        if ih < 0 or ih >= h:
            continue
        row = x_base + ih * w * B
        for kw in range(kw_n):
            iw = ow * sw - pl + kw * dw
            wv = vload(wf, w_base + (kh * kw_n + kw) * B)
            if iw >= 0 and iw + (t_n - 1) * sw < w:
                accs = vfma_vec_tile(accs, vload_tile(accs, xf, row + iw * B, st), wv)
            elif iw + (t_n - 1) * sw >= 0 and iw < w:
                accs = vfma_vec_tile(accs, vload_tile_edge(accs, xf, _ZERO, row, iw, sw, w),
                                     wv)
    return accs


def _depthwise(x, wp, bias, res, out, has_res, act, alpha, kh_n, kw_n, sh, sw, pt, pl, dh,
               dw):
    n_img, cb_n, h, w, _ = x.shape
    _, _, oh_n, ow_n, _ = out.shape
    xf, wf, of, rf = x.reshape(-1), wp.reshape(-1), out.reshape(-1), res.reshape(-1)
    xs_n, xs_c = cb_n * h * w * B, h * w * B
    os_n, os_c, os_h = cb_n * oh_n * ow_n * B, oh_n * ow_n * B, ow_n * B
    ws_c = kh_n * kw_n * B
    k_n, n4, n1 = row_plan(ow_n)
    for t in prange(n_img * cb_n * oh_n):
        n = t // (cb_n * oh_n)
        cb = (t // oh_n) % cb_n
        oh = t % oh_n
        bvec = vload(bias, cb * B)
        xb, wb = n * xs_n + cb * xs_c, cb * ws_c
        obase = n * os_n + cb * os_c + oh * os_h
        for i in range(k_n + n4 + n1):
            tw, o = row_tile(i, k_n, n4, ow_n)
            if tw == TILE:
                accs = _dw_tile(vtile(bvec, TILE), xf, wf, xb, wb, oh, o, h, w, kh_n, kw_n,
                                sh, sw, pt, pl, dh, dw)
                store_tile(accs, of, obase + o * B, B, rf, has_res, act, alpha)
            elif tw == 4:
                acc4 = _dw_tile(vtile(bvec, 4), xf, wf, xb, wb, oh, o, h, w, kh_n, kw_n, sh,
                                sw, pt, pl, dh, dw)
                store_tile(acc4, of, obase + o * B, B, rf, has_res, act, alpha)
            else:
                acc1 = _dw_tile(vtile(bvec, 1), xf, wf, xb, wb, oh, o, h, w, kh_n, kw_n, sh,
                                sw, pt, pl, dh, dw)
                store_tile(acc1, of, obase + o * B, B, rf, has_res, act, alpha)


_dense_par = numba.njit(cache=True, parallel=PARALLEL)(_dense)
_depthwise_par = numba.njit(cache=True, parallel=PARALLEL)(_depthwise)


@numba.njit(cache=True, parallel=PARALLEL)
def _pack_dense(w, p, flip):
    """Fill ``p`` (O/16, C/cpb, kh, kw, cpb, 16) from the OIHW weight ``w``, zero past
    its channels. ``flip``: ``w`` is the weight of the conv whose dL/dx this conv computes
    (dL/dx = the full conv of dL/dy with it transposed and flipped in space)."""
    ob_n, cb_n, kh_n, kw_n, cpb, _ = p.shape
    o_n, c_n = (w.shape[1], w.shape[0]) if flip else (w.shape[0], w.shape[1])
    for t in prange(ob_n * cb_n):
        ob, cb = t // cb_n, t % cb_n
        for i in range(kh_n):
            for j in range(kw_n):
                for ci in range(cpb):
                    c = cb * cpb + ci
                    for co in range(B):
                        o = ob * B + co
                        v = np.float32(0.0)
                        if o < o_n and c < c_n:
                            v = w[c, o, kh_n - 1 - i, kw_n - 1 - j] if flip else w[o, c, i, j]
                        p[ob, cb, i, j, ci, co] = v


def pack_dense(w: np.ndarray, cpb: int = B, flip: bool = False) -> np.ndarray:
    """OIHW -> (O/16, C/cpb, kh, kw, cpb in, 16 out), zero-padded: input channels in the
    blocks of the input's layout (16, or 1 for an NCHW input). ``flip``: pack the
    transposed, spatially flipped weight (C, O, kh, kw) of a conv's dL/dx."""
    o, c, kh, kw = w.shape
    if flip:
        o, c = c, o
    p = np.empty((-(-o // B), -(-c // cpb), kh, kw, cpb, B), np.float32)
    _pack_dense(w, p, flip)
    return p


@numba.njit(cache=True, inline="always")
def _grad_weight_tap(acc, xf, gf, x_base, g_base, i, j, h, w, oh_n, ow_n, sh, sw, pt, pl,
                     dh, dw):
    """``acc[ci] += x[ci] * dL/dy[0:16]`` summed over the pixels of one image for tap (i, j):
    the tile holds len(acc) input channels x 16 output channels of dL/dW. Only the output
    pixels whose tap lands inside the image are visited (no bounds check per pixel)."""
    oh_lo, oh_hi = valid_range(oh_n, h, sh, pt, i * dh)
    ow_lo, ow_hi = valid_range(ow_n, w, sw, pl, j * dw)
    one = np.uint64(1)
    for oh in range(oh_lo, oh_hi):
        xrow = x_base + (oh * sh - pt + i * dh) * w * B
        grow = g_base + oh * ow_n * B
        for ow in range(ow_lo, ow_hi):
            acc = vfma_tile(acc, xf, np.uint64(xrow + (ow * sw - pl + j * dw) * B), one,
                            vload(gf, grow + ow * B))
    return acc


def _grad_weight(xb, gyb, gwp, kh_n, kw_n, sh, sw, pt, pl, dh, dw):
    """dL/dW of a dense conv from its NCHW16c input and dL/dy, into ``gwp`` packed as
    (O/16, C/16, kh, kw, 16 in, 16 out). A task is one (output block, input block) pair.
    Its tile for a tap is summed over one image's pixels, then over the images (which
    keeps the float32 rounding of long sums down). Small planes sum over the images in
    registers, tap by tap (the pair's planes of every image stay in cache); large ones go
    image by image, adding each tap's sum to ``gwp`` (one image's planes stay in cache)."""
    n_img, cb_n, h, w, _ = xb.shape
    _, ob_n, oh_n, ow_n, _ = gyb.shape
    xf, gf, pf = xb.reshape(-1), gyb.reshape(-1), gwp.reshape(-1)
    zero = vtile(vload(_ZERO, 0), GW_CHANNELS)
    taps_outer = n_img * (h * w + oh_n * ow_n) * B * 4 <= GW_TAPS_OUTER_BYTES
    for t in prange(ob_n * cb_n):
        ob, cb = t // cb_n, t % cb_n
        tot = zero
        for k in range(n_img * kh_n * kw_n * (B // GW_CHANNELS)):
            if taps_outer:  # (tap, channel group) outer, image inner
                n = k % n_img
                i, j, g = _tap_of(k // n_img, kw_n)
            else:
                n = k // (kh_n * kw_n * (B // GW_CHANNELS))
                i, j, g = _tap_of(k % (kh_n * kw_n * (B // GW_CHANNELS)), kw_n)
            xb0 = (n * cb_n + cb) * h * w * B + g * GW_CHANNELS
            acc = _grad_weight_tap(zero, xf, gf, xb0, (n * ob_n + ob) * oh_n * ow_n * B, i,
                                   j, h, w, oh_n, ow_n, sh, sw, pt, pl, dh, dw)
            og = ((t * kh_n + i) * kw_n + j) * B * B + g * GW_CHANNELS * B
            if taps_outer:
                tot = acc if n == 0 else vadd_tile(tot, acc)
                if n == n_img - 1:
                    vstore_tile(tot, pf, og, B)
            else:
                if n > 0:
                    acc = vadd_tile(acc, vload_tile(acc, pf, og, B))
                vstore_tile(acc, pf, og, B)


@numba.njit(cache=True, inline="always")
def _tap_of(q, kw_n):
    """(i, j, channel group) of index ``q`` over taps x groups, groups fastest."""
    groups = B // GW_CHANNELS
    return (q // groups) // kw_n, (q // groups) % kw_n, q % groups


_grad_weight_par = numba.njit(cache=True, parallel=PARALLEL)(_grad_weight)


@numba.njit(cache=True, parallel=PARALLEL)
def _unpack_grad(gwp, gw):
    """(O/16, C/16, kh, kw, 16 in, 16 out) -> OIHW, dropping the padding channels."""
    o_n, c_n, kh_n, kw_n = gw.shape
    for o in prange(o_n):
        for c in range(c_n):
            for i in range(kh_n):
                for j in range(kw_n):
                    gw[o, c, i, j] = gwp[o // B, c // B, i, j, c % B, o % B]


def pack_depthwise(w: np.ndarray) -> np.ndarray:
    """(C, 1, kh, kw) -> (C/16, kh, kw, 16), zero-padded."""
    c, _, kh, kw = w.shape
    cb = -(-c // B)
    p = np.zeros((cb * B, kh, kw), np.float32)
    p[:c] = w[:, 0]
    return np.ascontiguousarray(p.reshape(cb, B, kh, kw).transpose(0, 2, 3, 1))


@register_kernel("conv2d", "cpu", "NCHW16c")
def bind_conv2d_nchwc(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping,
                      flip: bool = False):
    """conv2d on NCHW16c tensors (dense or depthwise), with the fused epilogue. Weights
    and bias are packed at bind time, and again before every call when they are writable
    (a trainer updates them in place; an inference graph's constants are read-only).
    ``flip``: dense only, ``ins[1]`` is the (O, C, kh, kw) weight of the conv whose dL/dx
    this one computes, used transposed and flipped."""
    x, w, out = ins[0], ins[1], outs[0]
    o_n, cg = (w.shape[1], w.shape[0]) if flip else w.shape[:2]
    groups = int(attrs["groups"])
    act = act_code(attrs.get("activation", "none"))
    if act == 3:
        raise ValueError("conv2d NCHW16c: sigmoid would make the zero padding channels 0.5; "
                         "the layout pass keeps such convs in NCHW")
    has_res = bool(attrs.get("residual", False))
    # flat, with or without a residual: one compiled signature (the compile-time timing
    # binds convs without one; a 5-D residual recompiled the kernel at the first call)
    if has_res and not ins[-1].flags.c_contiguous:  # a flat view, not a copy, is read
        raise ValueError(f"conv2d NCHW16c: the residual {ins[-1].shape} must be C-contiguous")
    res = ins[-1].reshape(-1) if has_res else np.zeros(B, np.float32)
    bias = np.zeros(out.shape[1] * B, np.float32)
    b_in = ins[2] if attrs["bias"] else None
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel_size"], attrs["stride"], attrs["dilation"]
    pt, pl = attrs["padding"][:2]
    alpha = np.float32(attrs.get("alpha", 0.0))
    chans = (0,) * B  # the dense kernel's channels per input block: len(chans)
    if groups == 1 and x.ndim == 4:
        # an NCHW input (a stem's few channels): each channel a block of one, so the
        # kernel multiplies no padding channels and writes NCHW16c directly
        if x.shape[1] != cg or not x.flags.c_contiguous:
            raise ValueError(f"conv2d NCHW -> NCHW16c: weight {w.shape} needs a C-contiguous "
                             f"input of {cg} channels, got {x.shape}")
        x, chans = x.reshape(*x.shape, 1), (0,)
        fn, wp = _dense_par, pack_dense(w, 1, flip)
    elif groups == 1:
        if -(-cg // B) != x.shape[1]:
            raise ValueError(f"conv2d NCHW16c: weight {w.shape} needs {cg} input channels, "
                             f"the blocked input has {x.shape[1]} blocks of 16")
        if winograd.suits(x.shape, out.shape, attrs, numba.get_num_threads()):
            fn, wp = winograd.winograd_par, winograd.pack_winograd(w, flip)
        else:
            fn, wp = _dense_par, pack_dense(w, B, flip)
        if fn is _dense_par and ((kh, kw, sh, sw) == (1, 1, 1, 1) and not any(attrs["padding"])
                                 and x.flags.c_contiguous and out.flags.c_contiguous):
            # pointwise: pixels are independent, so the plane is one row of H*W pixels and
            # the 4-pixel register tile covers small planes too (MobileNet's 2x2 layers ran
            # one pixel per pass, each re-reading the weights: 0.20 -> 0.12 ms at b1)
            x = x.reshape(x.shape[0], x.shape[1], 1, -1, B)
            out = out.reshape(out.shape[0], out.shape[1], 1, -1, B)
    elif cg == 1 and groups == o_n and out.shape[1] == x.shape[1] and not flip:
        fn, wp = _depthwise_par, pack_depthwise(w)
    else:
        raise NotImplementedError(f"conv2d NCHW16c supports groups=1 and depthwise, got "
                                  f"groups={groups} with weight {w.shape}")

    def load_bias() -> None:
        if b_in is not None:
            bias[:o_n] = b_in

    def refresh() -> None:
        if fn is _dense_par:
            _pack_dense(w, wp, flip)
        elif fn is _depthwise_par:
            wp[...] = pack_depthwise(w)
        else:
            winograd.pack_into(w, wp, flip)
        load_bias()
    load_bias()  # (the weights were packed above)
    changing = w.flags.writeable or (b_in is not None and b_in.flags.writeable)
    if fn is winograd.winograd_par:
        call = lambda a: fn(x, wp, bias, res, out, has_res, a, alpha, pt, pl)  # noqa: E731
    elif fn is _dense_par:
        call = lambda a: fn(x, wp, bias, res, out, has_res, a, alpha, kh, kw, sh, sw,  # noqa: E731
                            pt, pl, dh, dw, chans)
    else:
        call = lambda a: fn(x, wp, bias, res, out, has_res, a, alpha, kh, kw, sh, sw,  # noqa: E731
                            pt, pl, dh, dw)
    tanh = bind_tanh([out], [out], {}) if act == act_code("tanh") else None

    def run() -> None:
        if changing:
            refresh()
        if tanh is None:
            call(act)
        else:  # tanh(0) == 0 keeps the padding channels zero
            call(0)
            tanh()
    run.algorithm = ("winograd" if fn is winograd.winograd_par else  # (model.summary())
                     "depthwise" if fn is _depthwise_par else "direct")
    return run


def _blocked(shape: tuple) -> tuple:
    n, c, h, w = shape
    return (n, -(-c // B), h, w, B)


def suits_nchw(c: int, o: int, groups: int, act: str) -> bool:
    """Should an NCHW conv run this kernel between two layout conversions? Dense convs of
    16 or more input and output channels: the blocked kernel runs ~2x im2col + BLAS and
    converting its input and output costs a fraction of that (ResNet-18 training)."""
    return groups == 1 and c >= B and o >= B and act != "sigmoid"


def bind_nchw(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping,
              flip: bool = False):
    """An NCHW conv (or, ``flip``, a stride-1 conv's dL/dx from NCHW dL/dy) run blocked:
    its input (and residual) converted into NCHW16c scratch, the output converted back."""
    from .layout import bind_layout_transform
    to_b, back = dict(src="NCHW", dst="NCHW16c"), dict(src="NCHW16c", dst="NCHW")
    x, out = ins[0], outs[0]
    xb = np.zeros(_blocked(x.shape), np.float32)
    ob = np.empty(_blocked(out.shape), np.float32)
    steps = [bind_layout_transform([x], [xb], to_b)]
    blocked_ins = [xb, *ins[1:]]
    if attrs.get("residual", False):
        rb = np.empty_like(ob)
        steps.append(bind_layout_transform([ins[-1]], [rb], to_b))
        blocked_ins[-1] = rb
    steps.append(bind_conv2d_nchwc(blocked_ins, [ob], attrs, flip))
    steps.append(bind_layout_transform([ob], [out], back))

    def run() -> None:
        for step in steps:
            step()
    run.algorithm = steps[-2].algorithm + " (NCHW16c)"
    return run


def bind_nchw_grad_weight(x: np.ndarray, gy: np.ndarray, gw: np.ndarray,
                          attrs: Mapping) -> "callable":
    """dL/dW of a dense NCHW conv, computed blocked: the input and dL/dy converted into
    NCHW16c scratch, the packed gradient unpacked into ``gw`` (OIHW)."""
    from .layout import bind_layout_transform
    to_b = dict(src="NCHW", dst="NCHW16c")
    xb = np.zeros(_blocked(x.shape), np.float32)
    gyb = np.zeros(_blocked(gy.shape), np.float32)
    o_n, c_n, kh, kw = gw.shape
    gwp = np.empty((-(-o_n // B), -(-c_n // B), kh, kw, B, B), np.float32)
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    pt, pl = attrs["padding"][:2]
    steps = [bind_layout_transform([x], [xb], to_b), bind_layout_transform([gy], [gyb], to_b)]

    def run() -> None:
        for step in steps:
            step()
        _grad_weight_par(xb, gyb, gwp, kh, kw, sh, sw, pt, pl, dh, dw)
        _unpack_grad(gwp, gw)
    return run
