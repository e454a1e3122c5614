"""Winograd F(2x2, 3x3) conv on NCHW16c vs a float64 torch reference, and when it runs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime.cpu import conv_winograd as wg
from runtime.cpu.layout import from_nchwc, to_nchwc
from runtime.cpu.simd import TILE
from runtime.registry import get_kernel
from tests.helpers import rel_err, rng

ACTS = {"none": (0, lambda t: t), "relu": (1, F.relu),
        "leaky_relu": (2, lambda t: F.leaky_relu(t, 0.1))}


def reference(x, wt, b, pads, res=None, act="none"):
    """float64 conv with (top, left, bottom, right) zero padding, + residual, activation."""
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    pt, pl, pb, pr = pads
    y = F.conv2d(F.pad(t(x), (pl, pr, pt, pb)), t(wt), t(b))
    if res is not None:
        y = y + t(res)
    return ACTS[act][1](y).numpy()


@pytest.mark.parametrize("n,c,h,w,o,pads,act,res", [
    (2, 16, 5, 7, 16, (1, 1, 1, 1), "none", False),      # odd height and width
    (3, 32, 7, 9, 48, (1, 1, 1, 1), "relu", True),        # blocks of tiles span images
    (1, 20, 3, 3, 17, (2, 2, 2, 2), "leaky_relu", False),  # channels not multiples of 16
    (2, 16, 6, 6, 32, (0, 0, 0, 0), "relu", True),        # no padding
    (1, 17, 1, 1, 16, (1, 1, 1, 1), "none", True),        # one pixel: one partial tile
    (1, 48, 9, 5, 20, (0, 1, 2, 1), "relu", False),       # asymmetric padding
    (1, 64, 8, 8, 64, (1, 1, 1, 1), "leaky_relu", True),  # a ResNet-18 layer at batch 1
    (4, 32, 4, 4, 32, (1, 1, 1, 1), "none", False),       # 4 tiles an image, 2 images a block
])
def test_winograd_kernel_matches_float64(n, c, h, w, o, pads, act, res):
    r = rng(n * 100 + c)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    wt = r.standard_normal((o, c, 3, 3)).astype(np.float32)
    b = r.standard_normal(o).astype(np.float32)
    oh, ow = h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2
    rr = r.standard_normal((n, o, oh, ow)).astype(np.float32)
    ref = reference(x, wt, b, pads, rr if res else None, act)
    bias = np.zeros(-(-o // 16) * 16, np.float32)
    bias[:o] = b
    out = np.full((n, -(-o // 16), oh, ow, 16), np.nan, np.float32)
    resf = to_nchwc(rr).reshape(-1) if res else np.zeros(16, np.float32)
    wg.winograd_par(to_nchwc(x), wg.pack_winograd(wt), bias, resf, out, res, ACTS[act][0],
                    np.float32(0.1), pads[0], pads[1])
    assert rel_err(from_nchwc(out, o), ref) < 1e-5
    if o % 16:  # padding channels of the last block stay exactly zero
        assert (out[:, -1, :, :, o % 16:] == 0).all()


def _bind(x, wt, b, out, algorithm, flip=False):
    attrs = dict(out_channels=wt.shape[1 if flip else 0], kernel_size=(3, 3), stride=(1, 1),
                 padding=(1, 1, 1, 1), dilation=(1, 1), groups=1, bias=b is not None,
                 activation="relu" if b is not None else "none", alpha=0.0, residual=False,
                 algorithm=algorithm)
    return get_kernel("conv2d", "cpu", "NCHW16c", "forward")(
        [x, wt] + ([b] if b is not None else []), [out], attrs, flip=flip)


def test_winograd_runs_when_asked_for():
    r = rng(7)
    x = r.standard_normal((2, 32, 12, 12)).astype(np.float32)  # 72 tiles: 9 blocks
    wt = r.standard_normal((48, 32, 3, 3)).astype(np.float32)
    b = r.standard_normal(48).astype(np.float32)
    ref = reference(x, wt, b, (1, 1, 1, 1), act="relu")
    outs = {}
    for algorithm in ("winograd", "direct"):
        out = np.full((2, 3, 12, 12, 16), np.nan, np.float32)
        run = _bind(to_nchwc(x), wt, b, out, algorithm)
        run()
        assert run.algorithm == algorithm
        assert rel_err(from_nchwc(out, 48), ref) < 1e-5, algorithm
        outs[algorithm] = out
    # another algorithm, so other float32 roundings
    assert not np.array_equal(outs["winograd"], outs["direct"])


def test_writable_weights_are_transformed_again_before_every_call():
    """A trainer updates its weights in place between steps."""
    r = rng(8)
    x = r.standard_normal((2, 16, 9, 11)).astype(np.float32)
    wt = r.standard_normal((32, 16, 3, 3)).astype(np.float32)
    b = r.standard_normal(32).astype(np.float32)
    out = np.full((2, 2, 9, 11, 16), np.nan, np.float32)
    run = _bind(to_nchwc(x), wt, b, out, "winograd")
    run()
    assert run.algorithm == "winograd"
    wt *= -0.5
    b += 1.0
    run()
    assert rel_err(from_nchwc(out, 32), reference(x, wt, b, (1, 1, 1, 1), act="relu")) < 1e-5


@pytest.mark.parametrize("n,c,o,h,w", [(2, 32, 48, 9, 7), (1, 16, 20, 12, 12)])
def test_flip_computes_the_input_gradient(n, c, o, h, w):
    """``flip``: dL/dx of a 3x3 stride-1 conv (padding 1) from dL/dy, by Winograd with
    the weight transposed and flipped, vs torch's float64 conv_transpose2d."""
    r = rng(9)
    gy = r.standard_normal((n, o, h, w)).astype(np.float32)
    wt = r.standard_normal((o, c, 3, 3)).astype(np.float32)
    ref = F.conv_transpose2d(torch.tensor(gy, dtype=torch.float64),
                             torch.tensor(wt, dtype=torch.float64), padding=1).numpy()
    gx = np.full((n, -(-c // 16), h, w, 16), np.nan, np.float32)
    run = _bind(to_nchwc(gy), wt, None, gx, "winograd", flip=True)
    run()
    assert run.algorithm == "winograd"
    assert rel_err(from_nchwc(gx, c), ref) < 1e-5
    if c % 16:
        assert (gx[:, -1, :, :, c % 16:] == 0).all()


def test_suits():
    conv = dict(groups=1, kernel_size=(3, 3), stride=(1, 1), dilation=(1, 1),
                algorithm="winograd")
    x, out = (32, 4, 32, 32, 16), (32, 4, 32, 32, 16)
    assert wg.suits(x, out, conv, threads=2)
    assert not wg.suits(x, out, {**conv, "algorithm": "direct"}, threads=2)
    for key, val in [("stride", (2, 2)), ("kernel_size", (5, 5)), ("dilation", (2, 2)),
                     ("groups", 2)]:
        assert not wg.suits(x, out, {**conv, key: val}, threads=2), key
    assert not wg.suits((32, 3, 32, 32), out, conv, threads=2)  # an NCHW (stem) input
    # batch 1 at 4x4: 4 tiles, one block: a thread would idle
    small = (1, 32, 4, 4, 16)
    assert wg.tile_blocks(1, 4, 4) == 1
    assert not wg.suits(small, small, conv, threads=2)
    assert wg.suits(small, small, conv, threads=1)
    assert wg.tile_blocks(1, 8, 8) == -(-16 // TILE)


def test_pack_rejects_other_kernels():
    with pytest.raises(ValueError, match="3x3"):
        wg.pack_winograd(np.zeros((16, 16, 5, 5), np.float32))


def test_non_finite_inputs_reach_the_same_outputs_as_the_direct_sum():
    """An inf or NaN input poisons the outputs whose window holds it, no others (an inf
    may come out NaN: the transforms subtract it from itself, where the direct sum gives
    +-inf); every other output is unchanged."""
    r = rng(10)
    x = r.standard_normal((2, 16, 8, 9)).astype(np.float32)
    x[0, 3, 4, 4], x[1, 5, 0, 8], x[1, 7, 7, 0] = np.inf, np.nan, -np.inf
    wt = r.standard_normal((16, 16, 3, 3)).astype(np.float32)
    outs = {}
    for algorithm in ("winograd", "direct"):
        out = np.full((2, 1, 8, 9, 16), 7.0, np.float32)
        run = _bind(to_nchwc(x), wt, None, out, algorithm)
        run()
        assert run.algorithm == algorithm
        outs[algorithm] = from_nchwc(out, 16)
    finite = np.isfinite(outs["direct"])
    np.testing.assert_array_equal(np.isfinite(outs["winograd"]), finite)
    assert not finite.all()
    assert rel_err(outs["winograd"][finite], outs["direct"][finite]) < 1e-5
