"""conv2d CPU kernel vs torch.nn.functional.conv2d (float64 oracle)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime.registry import get_kernel
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
    # 16+ input and output channels: the blocked kernel between two conversions
    dict(n=1, c=16, h=5, w=7, o=16, k=3, p=1),                # batch 1, odd sizes
    dict(n=2, c=17, h=9, w=8, o=33, k=3, s=2, p=1, act="relu", res=True),
    dict(n=2, c=32, h=6, w=6, o=20, k=1, act="tanh"),         # pointwise
    dict(n=2, c=20, h=10, w=9, o=16, k=3, p=2, d=2, act="leaky_relu"),  # dilation
    dict(n=2, c=16, h=6, w=7, o=24, k=3, pads=(0, 1, 2, 0)),  # asymmetric padding
    dict(n=1, c=16, h=6, w=6, o=16, k=3, p=1, act="sigmoid"),  # sigmoid: not blocked
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


@pytest.mark.parametrize("op", ["conv2d", "conv2d_grad_input"])
def test_blocked_nchw_paths_follow_weights_updated_in_place(op):
    """Training updates weights in place between steps: the blocked kernel packs them
    again before each call (an inference graph's read-only weights are packed once)."""
    r = rng(5)
    x = r.standard_normal((2, 16, 6, 5)).astype(np.float32)
    w = r.standard_normal((32, 16, 3, 3)).astype(np.float32)
    fwd = dict(out_channels=32, kernel_size=(3, 3), stride=(1, 1), padding=(1,) * 4,
               dilation=(1, 1), groups=1, bias=False, activation="none", alpha=0.0,
               residual=False)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    if op == "conv2d":
        out = np.zeros((2, 32, 6, 5), np.float32)
        run = get_kernel("conv2d", "cpu", "NCHW")([x, w], [out], fwd)
        ref = lambda: F.conv2d(t(x), t(w), None, 1, 1).numpy()  # noqa: E731
    else:
        gy = r.standard_normal((2, 32, 6, 5)).astype(np.float32)
        out = np.zeros_like(x)
        run = get_kernel(op, "cpu", "NCHW", "backward")(
            [gy, w], [out], {"fwd": fwd, "shape": x.shape[1:]})
        ref = lambda: torch.nn.grad.conv2d_input(x.shape, t(w), t(gy), 1, 1).numpy()  # noqa
    for _ in range(2):
        run()
        assert rel_err(out, ref()) < 1e-5
        w -= 0.5 * r.standard_normal(w.shape).astype(np.float32)  # an SGD step, in place
