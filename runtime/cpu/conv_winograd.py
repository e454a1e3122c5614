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
the float32 error grows to ~1e-6 of the output's magnitude (the direct kernel: ~1e-7),
and an inf input can come out NaN (inf - inf) where the direct sum gives +-inf; the same
outputs are non-finite either way.
The compiler asks for it per conv (``cnncomp/passes/use_winograd.py``, which marks a
training graph's dL/dx convs too); ``compile(..., disable=["use_winograd"])`` keeps every
conv direct. The transforms of the input and output are LLVM IR (``simd.winograd_input``,
``simd.winograd_output``).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .jit import PARALLEL
from .simd import TILE, vfma_tile, vload, vstore_tile, vtile, winograd_input, winograd_output

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


def pack_into(w: np.ndarray, up: np.ndarray, flip: bool = False) -> None:
    """Transform ``w`` into ``up`` (as ``pack_winograd``): at bind time, and before every
    call of a training graph's conv (its weights change)."""
    _pack(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1] if flip else w, up)


@numba.njit(cache=True)
def _pack(g, up):
    """U = G g G^T per (output, input) channel pair of the OIHW kernel ``g`` (a view:
    the flipped transposed weight of a dL/dx), in float64, a (16 outputs, 16 inputs)
    block at a time with the 16 outputs as vector lanes. Serial: 4 ms for 512 x 512
    channels (a training step of ResNet-18 transforms ~2M pairs); its parallel build ran
    2 ms but took 1.2 s more of a cold compile."""
    kb_n, _, cb_n, _, _ = up.shape
    o_n, c_n = g.shape[0], g.shape[1]
    for t in range(kb_n * cb_n):
        kb, cb = t // cb_n, t % cb_n
        gt = np.empty((9, B))  # taps x output channels (zero past the channels)
        gg = np.empty((12, B))  # G g
        for ci in range(B):
            c = cb * B + ci
            for ko in range(B):
                o = kb * B + ko
                for q in range(9):
                    gt[q, ko] = g[o, c, q // 3, q % 3] if o < o_n and c < c_n else 0.0
            for j in range(3):
                for ko in range(B):
                    gg[j, ko] = gt[j, ko]
                    gg[3 + j, ko] = 0.5 * (gt[j, ko] + gt[3 + j, ko] + gt[6 + j, ko])
                    gg[6 + j, ko] = 0.5 * (gt[j, ko] - gt[3 + j, ko] + gt[6 + j, ko])
                    gg[9 + j, ko] = gt[6 + j, ko]
            for r in range(4):  # row r of (G g) G^T
                for ko in range(B):
                    a, b, d = gg[3 * r, ko], gg[3 * r + 1, ko], gg[3 * r + 2, ko]
                    up[kb, 4 * r, cb, ci, ko] = a
                    up[kb, 4 * r + 1, cb, ci, ko] = 0.5 * (a + b + d)
                    up[kb, 4 * r + 2, cb, ci, ko] = 0.5 * (a - b + d)
                    up[kb, 4 * r + 3, cb, ci, ko] = d


def _winograd(x, up, bias, res, out, has_res, act, alpha, pt, pl):
    """out = conv3x3(x) + bias (+ res), activation ``act``: NCHW16c x (N, C/16, H, W, 16),
    U ``up`` from ``pack_winograd``, out (N, K/16, OH, OW, 16), padding top ``pt`` and left
    ``pl`` (bottom and right follow from the shapes)."""
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
                winograd_input(v, (cb * TILE + t) * B, xs, xf, _ZERO,
                               (n * cb_n + cb) * h * w * B, ih0, iw0, h, w)
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
                winograd_output(m, t * B, ms, bvec, of,
                                ((n * kb_n + kb) * oh_n + oh0) * ow_n * B + ow0 * B,
                                ow_n * B, rf, has_res, act, alpha, ow0 + 1 < ow_n,
                                oh0 + 1 < oh_n)


winograd_par = numba.njit(cache=True, parallel=PARALLEL)(_winograd)
