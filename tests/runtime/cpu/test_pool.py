"""Pooling CPU kernels vs torch (float64 oracle), incl. ceil_mode and padding rules."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime.cpu.layout import from_nchwc, to_nchwc
from tests.helpers import rel_err, rng, run_kernel


def t(a):
    return torch.tensor(a, dtype=torch.float64)


POOL_CASES = [  # (h, w, k, s, p, ceil)
    (7, 9, 2, 2, 0, False), (7, 9, 3, 2, 1, True), (8, 8, 2, 2, 0, True), (5, 6, 3, 1, 1, False),
    (9, 7, 2, 3, 0, False), (9, 7, 2, 3, 1, True), (6, 6, 3, 2, 1, True), (4, 4, 4, 1, 2, False),
    (7, 7, (2, 3), (3, 1), (1, 0), True),
    (7, 9, 2, 2, 0, True), (6, 10, 2, 2, 0, False),  # 2x2 fast path: refused / taken
    (4, 16, 2, 2, 0, False), (5, 29, 2, 2, 0, False),  # 8 windows, 14 (8 + overlapping 8)
    (4, 41, 2, 2, 0, False), (2, 64, 2, 2, 0, False),  # 20 (16 + overlapping 16), 32
]


def _pair(v):
    return (v, v) if isinstance(v, int) else v


@pytest.mark.parametrize("h,w,k,s,p,ceil", POOL_CASES)
@pytest.mark.parametrize("n", [1, 3])
def test_max_pool(h, w, k, s, p, ceil, n):
    x = rng(n).standard_normal((n, 3, h, w)).astype(np.float32)
    ref = F.max_pool2d(t(x), k, s, p, ceil_mode=ceil).numpy()
    ph, pw = _pair(p)
    attrs = dict(kernel_size=_pair(k), stride=_pair(s), padding=(ph, pw, ph, pw),
                 dilation=(1, 1), ceil_mode=ceil)
    assert rel_err(run_kernel("max_pool2d", [x], ref.shape, attrs), ref) == 0


@pytest.mark.parametrize("d", [2, 3])
def test_max_pool_dilation_and_asymmetric_padding(d):
    x = rng(d).standard_normal((2, 2, 11, 10)).astype(np.float32)
    ref = F.max_pool2d(t(x), 3, 2, 1, dilation=d).numpy()
    attrs = dict(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1), dilation=(d, d),
                 ceil_mode=False)
    assert rel_err(run_kernel("max_pool2d", [x], ref.shape, attrs), ref) == 0
    xp = F.pad(t(x), (0, 1, 2, 0), value=-float("inf"))  # (top 2, left 0, bottom 0, right 1)
    ref = F.max_pool2d(xp, 3, 2).numpy()
    attrs = dict(kernel_size=(3, 3), stride=(2, 2), padding=(2, 0, 0, 1), dilation=(1, 1),
                 ceil_mode=False)
    assert rel_err(run_kernel("max_pool2d", [x], ref.shape, attrs), ref) == 0


@pytest.mark.parametrize("w", [4, 20, 40])  # one window at a time, vectors of 8 and 16
def test_max_pool_nan(w):
    x = np.zeros((1, 1, 4, w), np.float32)
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 3, w - 1] = np.nan  # the last window of the last row (an overlapped vector)
    x[0, 0, 2, 2] = -np.inf
    attrs = dict(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0, 0, 0), dilation=(1, 1),
                 ceil_mode=False)
    y = run_kernel("max_pool2d", [x], (1, 1, 2, w // 2), attrs)
    ref = F.max_pool2d(t(x), 2).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 0, 1, -1])
    np.testing.assert_array_equal(y[~np.isnan(y)], ref[~np.isnan(ref)])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NCHW16c"])
@pytest.mark.parametrize("k,s,p,d,ceil", [(2, 2, 0, 1, False), (2, 2, 0, 1, True),
                                          (3, 2, 1, 1, False), (3, 1, 1, 1, False),
                                          (3, 3, 0, 2, True)])
def test_max_pool_large_every_layout(k, s, p, d, ceil, layout):
    """Shapes big enough for the parallel kernels (the small cases above run serially),
    with NaN and -inf in the input: NaN wins its windows, -inf is an ordinary value."""
    x = rng(k + s).standard_normal((2, 40, 47, 49)).astype(np.float32)
    x[0, 3, 2, 2] = x[1, 39, 46, 48] = x[1, 0, 11, 0] = np.nan
    x[0, 5, :4, :4] = -np.inf
    ref = F.max_pool2d(t(x), k, s, p, dilation=d, ceil_mode=ceil).numpy()
    attrs = dict(kernel_size=(k, k), stride=(s, s), padding=(p,) * 4, dilation=(d, d),
                 ceil_mode=ceil)
    assert ref.size * k * k >= 1 << 16  # the parallel kernels run
    if layout == "NCHW":
        got = run_kernel("max_pool2d", [x], ref.shape, attrs)
    elif layout == "NHWC":
        got = run_kernel("max_pool2d", [x.transpose(0, 2, 3, 1)],
                         ref.transpose(0, 2, 3, 1).shape, attrs, layout="NHWC")
        got = got.transpose(0, 3, 1, 2)
    else:
        got = from_nchwc(run_kernel("max_pool2d", [to_nchwc(x)], (2, 3, *ref.shape[2:], 16),
                                    attrs, layout="NCHW16c"), 40)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(got[~np.isnan(got)], ref[~np.isnan(ref)])
    assert np.isneginf(got).any() == np.isneginf(ref).any()


@pytest.mark.parametrize("h,w,k,s,p,ceil", POOL_CASES)
@pytest.mark.parametrize("cip", [True, False])
def test_avg_pool(h, w, k, s, p, ceil, cip):
    kp, pp = _pair(k), _pair(p)
    if pp[0] * 2 > kp[0] or pp[1] * 2 > kp[1]:
        pytest.skip("torch rejects padding > kernel/2")
    x = rng(h).standard_normal((2, 3, h, w)).astype(np.float32)
    ref = F.avg_pool2d(t(x), k, s, p, ceil_mode=ceil, count_include_pad=cip).numpy()
    attrs = dict(kernel_size=kp, stride=_pair(s), padding=(pp[0], pp[1], pp[0], pp[1]),
                 ceil_mode=ceil, count_include_pad=cip)
    assert rel_err(run_kernel("avg_pool2d", [x], ref.shape, attrs), ref) < 1e-6


def test_avg_pool_asymmetric_padding():
    x = rng(5).standard_normal((2, 2, 7, 8)).astype(np.float32)
    ref = F.avg_pool2d(F.pad(t(x), (1, 0, 0, 1)), 2, 2).numpy()  # (top 0, left 1, bottom 1, right 0)
    attrs = dict(kernel_size=(2, 2), stride=(2, 2), padding=(0, 1, 1, 0), ceil_mode=False,
                 count_include_pad=True)
    assert rel_err(run_kernel("avg_pool2d", [x], ref.shape, attrs), ref) < 1e-6


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("h,w,k,s,ceil", [(7, 9, 2, 2, False), (7, 9, 3, 2, True),
                                          (6, 5, 3, 1, False), (8, 8, 2, 3, True)])
def test_lp_pool(p, h, w, k, s, ceil):
    x = rng(int(p)).standard_normal((2, 3, h, w)).astype(np.float32)
    if p != 3.0:
        x = np.abs(x)  # torch gives NaN for negative sums under fractional powers
    ref = F.lp_pool2d(t(x), p, k, s, ceil_mode=ceil).numpy()
    attrs = dict(norm_type=p, kernel_size=(k, k), stride=(s, s), ceil_mode=ceil)
    y = run_kernel("lp_pool2d", [x], ref.shape, attrs)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    fin = np.isfinite(ref)
    assert rel_err(y[fin], ref[fin]) < 1e-5


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (4, 16, 8, 8), (2, 1, 1, 1)])
def test_global_avg_pool(shape):
    x = rng(1).standard_normal(shape).astype(np.float32)
    ref = t(x).mean(dim=(2, 3)).numpy()
    assert rel_err(run_kernel("global_avg_pool2d", [x], ref.shape, {}), ref) < 1e-6
