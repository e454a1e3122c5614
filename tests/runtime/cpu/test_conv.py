"""conv2d CPU kernel vs torch.nn.functional.conv2d (float64 oracle)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import rel_err, rng, run_kernel

ACTS = {"none": lambda t: t, "relu": F.relu, "leaky_relu": lambda t: F.leaky_relu(t, 0.1),
        "sigmoid": torch.sigmoid, "tanh": torch.tanh}


def conv_case(n, c, h, w, o, k, s=1, p=0, d=1, g=1, bias=True, act="none", res=False,
              pads=None, seed=0):
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
    return run_kernel("conv2d", ins, ref.shape, attrs), ref


@pytest.mark.parametrize("case", [
    dict(n=2, c=3, h=7, w=9, o=4, k=3, p=1),                 # odd sizes, same padding
    dict(n=1, c=4, h=8, w=8, o=6, k=3, s=2),                 # batch 1, stride 2
    dict(n=3, c=2, h=9, w=7, o=3, k=2, s=3),                 # stride > kernel
    dict(n=2, c=3, h=6, w=6, o=5, k=3, p=2),                 # padding = kernel - 1
    dict(n=2, c=3, h=10, w=9, o=4, k=3, p=2, d=2),           # dilation
    dict(n=2, c=4, h=7, w=7, o=6, k=3, p=1, g=2),            # groups
    dict(n=2, c=6, h=7, w=8, o=6, k=3, p=1, g=6),            # depthwise
    dict(n=2, c=4, h=7, w=7, o=8, k=3, p=1, s=2, g=4),       # depthwise, multiplier 2
    dict(n=2, c=5, h=6, w=6, o=7, k=1),                      # pointwise (GEMM path)
    dict(n=2, c=5, h=6, w=6, o=7, k=1, s=2),                 # strided 1x1
    dict(n=1, c=3, h=9, w=11, o=4, k=(1, 3), s=(2, 1), p=1), # non-square
    dict(n=2, c=3, h=5, w=5, o=2, k=5),                      # kernel == input
    dict(n=2, c=2, h=6, w=7, o=3, k=3, pads=(0, 1, 2, 0)),   # asymmetric padding
    dict(n=2, c=3, h=32, w=32, o=16, k=7, s=2, p=3, bias=False),  # ResNet stem shape
])
def test_conv_grid(case):
    y, ref = conv_case(**case)
    assert rel_err(y, ref) < 1e-5


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("g", [1, 3])
@pytest.mark.parametrize("res", [False, True])
def test_conv_epilogue(act, g, res):
    y, ref = conv_case(2, 3, 6, 5, 6, 3, p=1, g=g, act=act, res=res, seed=1)
    assert rel_err(y, ref) < 1e-5


def test_conv_large_parallel_path():
    y, ref = conv_case(4, 16, 20, 20, 24, 3, p=1, act="relu", seed=2)
    assert rel_err(y, ref) < 1e-5


@pytest.mark.parametrize("g", [1, 2])
def test_conv_nan_propagates_only_through_its_window(g):
    x = np.zeros((1, 2, 6, 6), np.float32)
    x[0, 0, 1, 1] = np.nan
    w = np.ones((2, 2 // g, 3, 3), np.float32)
    attrs = dict(out_channels=2, kernel_size=(3, 3), stride=(1, 1), padding=(0, 0, 0, 0),
                 dilation=(1, 1), groups=g, bias=False, activation="relu", alpha=0.0,
                 residual=False)
    y = run_kernel("conv2d", [x, w], (1, 2, 4, 4), attrs)
    nan = np.isnan(y)
    assert nan[0, 0, :2, :2].all() and nan.sum() == (8 if g == 1 else 4)
