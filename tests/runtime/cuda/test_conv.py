"""conv2d CUDA kernel (simulator on tiny shapes) vs torch (float64) and the CPU kernel."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import rel_err, rng, run_kernel
from tests.runtime.cuda.util import require_cuda_or_skip, run_cuda_kernel

require_cuda_or_skip()

ACTS = {"none": lambda t: t, "relu": F.relu, "leaky_relu": lambda t: F.leaky_relu(t, 0.1),
        "sigmoid": torch.sigmoid, "tanh": torch.tanh}


def conv_case(n, c, h, w, o, k, s=1, p=0, d=1, g=1, bias=True, act="none", res=False,
              pads=None, seed=0, tile=None):
    """(cuda output, CPU kernel output, torch float64 reference) of one conv."""
    r = rng(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (s, s) if isinstance(s, int) else s
    pads = pads or (p, p, p, p)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    wt = r.standard_normal((o, c // g, kh, kw)).astype(np.float32)
    b = r.standard_normal(o).astype(np.float32)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    xp = F.pad(t(x), (pads[1], pads[3], pads[0], pads[2]))
    ref = F.conv2d(xp, t(wt), t(b) if bias else None, (sh, sw), 0, d, g)
    ins = [x, wt] + ([b] if bias else [])
    if res:
        resid = r.standard_normal(tuple(ref.shape)).astype(np.float32)
        ref = ref + t(resid)
        ins.append(resid)
    ref = ACTS[act](ref).numpy()
    attrs = dict(out_channels=o, kernel_size=(kh, kw), stride=(sh, sw), padding=tuple(pads),
                 dilation=(d, d), groups=g, bias=bias, activation=act,
                 alpha=0.1 if act == "leaky_relu" else 0.0, residual=res)
    y = run_cuda_kernel("conv2d", ins, ref.shape, attrs, tile=tile)
    cpu = run_kernel("conv2d", ins, ref.shape, attrs)
    return y, cpu, ref


@pytest.mark.parametrize("case", [
    dict(n=2, c=3, h=7, w=9, o=4, k=3, p=1),                 # odd sizes, same padding
    dict(n=1, c=4, h=8, w=8, o=6, k=3, s=2),                 # batch 1, stride 2
    dict(n=3, c=2, h=9, w=7, o=3, k=2, s=3),                 # stride > kernel
    dict(n=2, c=3, h=10, w=9, o=4, k=3, p=2, d=2),           # dilation
    dict(n=2, c=4, h=7, w=7, o=6, k=3, p=1, g=2),            # groups
    dict(n=2, c=6, h=5, w=6, o=6, k=3, p=1, g=6),            # depthwise (direct kernel)
    dict(n=2, c=4, h=5, w=5, o=8, k=3, p=1, s=2, g=4),       # depthwise, multiplier 2
    dict(n=2, c=5, h=6, w=6, o=7, k=1),                      # pointwise
    dict(n=1, c=3, h=7, w=9, o=4, k=(1, 3), s=(2, 1), p=1),  # non-square
    dict(n=2, c=3, h=5, w=5, o=2, k=5),                      # kernel == input
    dict(n=2, c=2, h=6, w=7, o=3, k=3, pads=(0, 1, 2, 0)),   # asymmetric padding
    dict(n=1, c=20, h=3, w=3, o=5, k=3, p=1, bias=False),    # K = 180: many K slices
])
def test_conv_grid(case):
    y, cpu, ref = conv_case(**case)
    assert rel_err(y, ref) < 1e-5
    assert rel_err(y, cpu) < 1e-5


@pytest.mark.parametrize("act,g,res", [
    ("none", 1, True), ("relu", 1, False), ("leaky_relu", 3, True), ("sigmoid", 1, True),
    ("tanh", 3, False), ("relu", 3, True), ("sigmoid", 3, False),
])
def test_conv_epilogue(act, g, res):
    y, cpu, ref = conv_case(2, 3, 5, 4, 6, 3, p=1, g=g, act=act, res=res, seed=1)
    assert rel_err(y, ref) < 1e-5


@pytest.mark.parametrize("tile", [(1, 1), (2, 2), (4, 1), (1, 4), (4, 4)])
def test_conv_every_register_tile(tile):
    # 40 output channels and 2*5*7 = 70 pixels: partial tiles along both axes for each
    y, cpu, ref = conv_case(2, 3, 5, 7, 40, 3, p=1, act="relu", res=True, seed=2, tile=tile)
    assert rel_err(y, ref) < 1e-5


def test_depthwise_through_the_gemm_path():
    # a forced tile sends depthwise through the grouped GEMM: both paths must agree
    y, cpu, ref = conv_case(2, 4, 5, 5, 4, 3, p=1, g=4, act="tanh", res=True, tile=(1, 1))
    assert rel_err(y, ref) < 1e-5


def test_conv_nan_propagates_only_through_its_window():
    x = np.zeros((1, 2, 6, 6), np.float32)
    x[0, 0, 1, 1] = np.nan
    w = np.ones((2, 2, 3, 3), np.float32)
    attrs = dict(out_channels=2, kernel_size=(3, 3), stride=(1, 1), padding=(0, 0, 0, 0),
                 dilation=(1, 1), groups=1, bias=False, activation="relu", alpha=0.0,
                 residual=False)
    y = run_cuda_kernel("conv2d", [x, w], (1, 2, 4, 4), attrs)
    assert np.isnan(y[:, :, :2, :2]).all()
    assert not np.isnan(y[:, :, 2:, :]).any() and not np.isnan(y[:, :, :, 2:]).any()


def test_conv_launch_is_recorded():
    from numba import cuda
    from runtime.registry import get_kernel
    x = cuda.to_device(np.zeros((2, 3, 8, 8), np.float32))
    w = cuda.to_device(np.zeros((20, 3, 3, 3), np.float32))
    out = cuda.device_array((2, 20, 8, 8), np.float32)
    attrs = dict(out_channels=20, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1),
                 dilation=(1, 1), groups=1, bias=False)
    run = get_kernel("conv2d", "cuda")([x, w], [out], attrs)
    (cfg,) = run.launches
    # 128 pixels in tiles of 64, 20 channels in tiles of 32, one group
    assert (cfg.grid, cfg.block) == ((2, 1, 1), (16, 16, 1))
    assert str(cfg) == "conv_gemm_64x32<<<2, 16x16>>>"


def test_conv_rejects_mismatched_shapes():
    from numba import cuda
    from runtime.registry import get_kernel
    x = cuda.to_device(np.zeros((1, 3, 5, 5), np.float32))
    w = cuda.to_device(np.zeros((4, 2, 3, 3), np.float32))
    out = cuda.device_array((1, 4, 3, 3), np.float32)
    attrs = dict(out_channels=4, kernel_size=(3, 3), stride=(1, 1), padding=(0, 0, 0, 0),
                 dilation=(1, 1), groups=1, bias=False)
    with pytest.raises(ValueError, match="disagree"):
        get_kernel("conv2d", "cuda")([x, w], [out], attrs)
