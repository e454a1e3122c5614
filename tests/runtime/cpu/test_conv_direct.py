"""The direct few-channel NCHW conv (runtime/cpu/conv_direct.py) vs a float64 torch oracle."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime.cpu import conv_direct
from runtime.registry import get_kernel
from tests.helpers import rel_err, rng
from tests.runtime.cpu.test_conv import ACTS, conv_case


def _attrs(o, kh, kw, pads, act="none", res=False, bias=True):
    return dict(out_channels=o, kernel_size=(kh, kw), stride=(1, 1), padding=tuple(pads),
                dilation=(1, 1), groups=1, bias=bias, activation=act,
                alpha=0.1 if act == "leaky_relu" else 0.0, residual=res)


@pytest.mark.parametrize("case", [
    dict(n=1, c=1, h=28, w=28, o=6, k=5, p=2),               # LeNet-5 c1, batch 1
    dict(n=3, c=6, h=14, w=14, o=16, k=5),                   # LeNet-5 c2
    dict(n=2, c=1, h=5, w=7, o=1, k=3, p=1),                 # one output channel
    dict(n=2, c=2, h=9, w=5, o=5, k=3, pads=(0, 2, 1, 0)),   # O % 4 == 1, asymmetric pads
    dict(n=1, c=3, h=6, w=1, o=7, k=(3, 1), p=1),            # width 1, non-square kernel
    dict(n=2, c=2, h=4, w=11, o=3, k=(1, 3)),                # 1-row kernel
    dict(n=2, c=3, h=3, w=3, o=4, k=3),                      # kernel == input: 1x1 output
    dict(n=4, c=32, h=10, w=9, o=9, k=3, p=1),               # C*kh*kw == MAX_ROWS
    dict(n=1, c=16, h=17, w=19, o=30, k=3, p=1, act="relu", res=True),  # parallel at batch 1
])
def test_direct_conv_matches_torch(case):
    kh, kw = (case["k"], case["k"]) if isinstance(case["k"], int) else case["k"]
    assert conv_direct.suits(case["c"], kh, kw, (1, 1), (1, 1), 1)
    y, ref = conv_case(**case)
    assert rel_err(y, ref) < 1e-5


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("res", [False, True])
def test_direct_conv_epilogue(act, res):
    y, ref = conv_case(2, 3, 7, 6, 6, 3, p=1, act=act, res=res, seed=4)
    assert rel_err(y, ref) < 1e-5


def test_direct_conv_serial_and_parallel_paths_agree():
    """The same layer below and above SERIAL_FLOPS (batch 1 vs batch 8)."""
    r = rng(5)
    x = r.standard_normal((8, 16, 24, 23)).astype(np.float32)
    w = r.standard_normal((10, 16, 3, 3)).astype(np.float32)
    flops = lambda n: 2 * n * 10 * 24 * 23 * 16 * 9  # noqa: E731
    assert flops(1) < conv_direct.SERIAL_FLOPS <= flops(8)
    ref = F.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                   padding=1).numpy()
    for n in (1, 8):
        out = np.full((n, 10, 24, 23), np.nan, np.float32)
        get_kernel("conv2d", "cpu", "NCHW", "forward")(
            [x[:n], w], [out], _attrs(10, 3, 3, (1, 1, 1, 1), bias=False))()
        assert rel_err(out, ref[:n]) < 1e-5


def test_direct_conv_sees_weight_updates_and_new_inputs():
    """A trainer updates weights in place and the executor rewrites the input buffer:
    a bound kernel must read both afresh on every call (no stale packed copies)."""
    r = rng(6)
    x = r.standard_normal((2, 2, 8, 8)).astype(np.float32)
    w = r.standard_normal((5, 2, 3, 3)).astype(np.float32)
    b = r.standard_normal(5).astype(np.float32)
    out = np.empty((2, 5, 8, 8), np.float32)
    run = get_kernel("conv2d", "cpu", "NCHW", "forward")(
        [x, w, b], [out], _attrs(5, 3, 3, (1, 1, 1, 1)))
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    for step in range(3):
        run()
        assert rel_err(out, F.conv2d(t(x), t(w), t(b), padding=1).numpy()) < 1e-5
        w -= 0.1 * r.standard_normal(w.shape).astype(np.float32)
        x[...] = r.standard_normal(x.shape).astype(np.float32) * (step + 2)


def test_direct_conv_inf_at_the_border_stays_in_its_windows():
    """Padding is real zeros in the scratch: an Inf at the image edge reaches only the
    outputs whose windows hold it (as in torch), and NaN appears where torch has it."""
    x = np.zeros((1, 1, 6, 6), np.float32)
    x[0, 0, 0, 5] = np.inf
    w = np.abs(rng(7).standard_normal((3, 1, 3, 3))).astype(np.float32) + 0.1
    out = np.empty((1, 3, 6, 6), np.float32)
    get_kernel("conv2d", "cpu", "NCHW", "forward")(
        [x, w], [out], _attrs(3, 3, 3, (1, 1, 1, 1), bias=False))()
    ref = F.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                   padding=1).numpy()
    np.testing.assert_array_equal(np.isinf(out), np.isinf(ref))
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    assert np.isinf(out).sum() == 3 * 4


@pytest.mark.parametrize("c,k,stride,groups,expect", [
    (32, 3, 1, 1, True),    # 288 rows: the largest the direct kernel takes
    (33, 3, 1, 1, False),   # beyond: im2col + GEMM was as fast or faster
    (6, 5, 1, 1, True),     # LeNet-5's c2
    (16, 1, 1, 1, False),   # 1x1: a plain GEMM
    (16, 3, 2, 1, False),   # stride 2
    (16, 3, 1, 2, False),   # grouped
])
def test_suits_picks_the_direct_kernel_where_it_was_measured_to_win(c, k, stride, groups,
                                                                     expect):
    assert conv_direct.suits(c, k, k, (stride, stride), (1, 1), groups) is expect
