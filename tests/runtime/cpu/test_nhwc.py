"""NHWC kernels against the NCHW ones (themselves checked against PyTorch) and torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime.cpu import nhwc as nhwc_kernels
from tests.helpers import rel_err, rng, run_kernel

TOL = 1e-5


def nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def test_layout_transform_round_trips_exactly():
    x = rng(0).standard_normal((2, 5, 3, 7)).astype(np.float32)
    a = run_kernel("layout_transform", [x], (2, 3, 7, 5), {"src": "NCHW", "dst": "NHWC"},
                   layout="NHWC")
    np.testing.assert_array_equal(a, nhwc(x))
    b = run_kernel("layout_transform", [a], x.shape, {"src": "NHWC", "dst": "NCHW"},
                   layout="NHWC")
    np.testing.assert_array_equal(b, x)


@pytest.mark.parametrize("case", [
    dict(n=2, c=3, h=7, w=9, o=4, k=3, p=(1, 1, 1, 1)),
    dict(n=1, c=4, h=5, w=5, o=6, k=1),
    dict(n=2, c=4, h=9, w=8, o=6, k=3, s=(2, 3), p=(0, 1, 2, 1), d=(2, 1)),
    dict(n=2, c=4, h=7, w=6, o=6, k=3, g=2, p=(1, 1, 1, 1)),
    dict(n=3, c=5, h=8, w=7, o=5, k=3, g=5, s=2, p=(1, 1, 1, 1)),
    dict(n=1, c=32, h=2, w=2, o=48, k=3, p=(1, 1, 1, 1)),  # 4 rows: the small-M GEMM
    dict(n=3, c=40, h=3, w=3, o=16, k=3, s=2),              # 3 images of 1 pixel: M = 3
    dict(n=2, c=16, h=11, w=10, o=32, k=3, p=(1, 1, 1, 1)),  # 220 rows: 3 row chunks
    dict(n=2, c=24, h=5, w=7, o=32, k=1),                   # pointwise: input read in place
    dict(n=2, c=16, h=6, w=6, o=16, k=1, s=2),              # strided 1x1: im2col
])
@pytest.mark.parametrize("epilogue", ["none", "bias+relu", "bias+residual+leaky",
                                      "bias+residual+tanh", "sigmoid"])  # the row epilogue
def test_conv2d_nhwc(case, epilogue):
    check_conv2d_nhwc(case, epilogue)


@pytest.mark.parametrize("rows_per_step", [3, 5, 10])
@pytest.mark.parametrize("epilogue", ["none", "bias+residual+leaky"])
@pytest.mark.parametrize("o,k", [(5, 3), (16, 3), (16, 1)])  # BLAS; strips; pointwise
def test_conv2d_nhwc_in_several_gemm_steps(monkeypatch, rows_per_step, epilogue, o, k):
    """7 images of 5 output rows (35 rows) in steps of 3, 5 or 10 rows, balanced to 3, 5
    and 9 (steps that end mid-image, at image ends, and span images), each writing its own
    rows of the output and reading its rows of the residual."""
    monkeypatch.setattr(nhwc_kernels, "ROWS_PER_GEMM", rows_per_step * 4)
    monkeypatch.setattr(nhwc_kernels, "MIN_FLOATS", 0)
    check_conv2d_nhwc(dict(n=7, c=3, h=5, w=4, o=o, k=k, p=(1, 1, 1, 1) if k == 3 else
                           (0, 0, 0, 0)), epilogue)


@pytest.mark.parametrize("rows,k,ow,expect", [
    (32 * 32, 576, 32, 32),       # ResNet-18's 64-channel 3x3 layer, b32: one image per step
    (32 * 16, 1152, 16, 64),      # 1024 GEMM rows: 4 images
    (32 * 4, 4608, 4, 64),        # 8 MiB of scratch holds 113 rows: two steps of 64
    (32 * 7, 2304, 7, 112),       # 147 rows would leave a 77-row step: two of 112
    (32 * 32, 27, 32, 512),       # the 3-channel stem: >= MIN_FLOATS of columns per step
    (112, 147, 112, 28),          # ResNet-18-224's stem at b1: 4 steps of 28 rows
    (56, 576, 56, 19),            # its 56x56 layer at b1: 3 steps of 19 rows, not 1 of 56
    (5 * 8, 9, 8, 40),
    (1, 1, 1, 1),
])
def test_rows_per_gemm_nhwc_splits_the_rows_evenly(rows, k, ow, expect):
    assert nhwc_kernels.rows_per_gemm_nhwc(rows, k, ow) == expect


def test_rows_per_gemm_nhwc_keeps_scratch_within_chunk_floats(monkeypatch):
    monkeypatch.setattr(nhwc_kernels, "CHUNK_FLOATS", 3 * 9 * 16)
    assert nhwc_kernels.rows_per_gemm_nhwc(32, 9, 16) == 3  # 11 steps of <= 3 rows


@pytest.mark.parametrize("m", [1, 3, 4, 5, 8, 16, 97, 200])  # 97: a chunk of 96 + 1 row
@pytest.mark.parametrize("k", [1, 255, 256, 600])          # K blocks of 256: partial sums
@pytest.mark.parametrize("n", [16, 48])
def test_gemm_strips_against_float64(m, k, n):
    r = rng(m * 1000 + k + n)
    a = r.standard_normal((m, k)).astype(np.float32)
    b = r.standard_normal((k, n)).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    nhwc_kernels._gemm_strips(a, nhwc_kernels.pack_strips(b), c, np.zeros(n, np.float32),
                              np.zeros((1, 16), np.float32), False, 0, np.float32(0))
    assert rel_err(c, a.astype(np.float64) @ b.astype(np.float64)) < 1e-5


def check_conv2d_nhwc(case, epilogue):
    r = rng(1)
    n, c, h, w, o = case["n"], case["c"], case["h"], case["w"], case["o"]
    k, s, d = case["k"], case.get("s", (1, 1)), case.get("d", (1, 1))
    s = s if isinstance(s, tuple) else (s, s)
    pads, g = case.get("p", (0, 0, 0, 0)), case.get("g", 1)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    wt = r.standard_normal((o, c // g, k, k)).astype(np.float32)
    b = r.standard_normal(o).astype(np.float32)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    xp = F.pad(t(x), (pads[1], pads[3], pads[0], pads[2]))
    bias = "bias" in epilogue
    ref = F.conv2d(xp, t(wt), t(b) if bias else None, s, 0, d, g)
    ins = [nhwc(x), wt] + ([b] if bias else [])
    res = "residual" in epilogue
    if res:
        rr = r.standard_normal(tuple(ref.shape)).astype(np.float32)
        ref = ref + t(rr)
        ins.append(nhwc(rr))
    act = next((a for a in ("relu", "leaky", "tanh", "sigmoid") if a in epilogue), "none")
    act = "leaky_relu" if act == "leaky" else act
    ref = {"none": ref, "relu": F.relu(ref), "leaky_relu": F.leaky_relu(ref, 0.1),
           "tanh": torch.tanh(ref), "sigmoid": torch.sigmoid(ref)}[act].numpy()
    attrs = dict(out_channels=o, kernel_size=(k, k), stride=s, padding=pads, dilation=d,
                 groups=g, bias=bias, activation=act, alpha=0.1, residual=res)
    got = run_kernel("conv2d", ins, nhwc(ref).shape, attrs, layout="NHWC")
    assert rel_err(nchw(got), ref) < TOL


@pytest.mark.parametrize("op,k,s,p,ceil,cip", [
    ("max", (2, 2), (2, 2), (0, 0), False, True),
    ("max", (3, 3), (2, 2), (1, 1), True, True),
    ("avg", (3, 3), (2, 2), (1, 1), True, True),
    ("avg", (3, 3), (2, 2), (1, 1), True, False),
    ("avg", (3, 2), (1, 2), (1, 0), False, False),
])
def test_pools_nhwc(op, k, s, p, ceil, cip):
    x = rng(2).standard_normal((2, 3, 7, 8)).astype(np.float32)
    tx = torch.tensor(x, dtype=torch.float64)
    if op == "max":
        ref = F.max_pool2d(tx, k, s, p, 1, ceil).numpy()
        attrs = dict(kernel_size=k, stride=s, padding=(p[0], p[1], p[0], p[1]), dilation=(1, 1),
                     ceil_mode=ceil)
    else:
        ref = F.avg_pool2d(tx, k, s, p, ceil, cip).numpy()
        attrs = dict(kernel_size=k, stride=s, padding=(p[0], p[1], p[0], p[1]), ceil_mode=ceil,
                     count_include_pad=cip)
    got = run_kernel(f"{op}_pool2d", [nhwc(x)], nhwc(ref).shape, attrs, layout="NHWC")
    assert rel_err(nchw(got), ref) < TOL


@pytest.mark.parametrize("n,c,h,w,k,s,p,d,ceil", [
    (1, 16, 9, 7, 3, 2, 1, 2, True),    # 16 channels: the one-register path (NCHW16c's)
    (2, 16, 5, 5, 2, 1, 0, 1, False),
    (1, 48, 8, 8, 3, 1, 1, 1, False),   # Inception's 3x3/1 pool, the row path
])
def test_max_pool_nhwc_matches_torch_with_nan(n, c, h, w, k, s, p, d, ceil):
    x = rng(4).standard_normal((n, c, h, w)).astype(np.float32)
    x[0, 5, 2, 3] = np.nan
    x[-1, c - 1, h - 1, w - 1] = -np.inf
    ref = F.max_pool2d(torch.tensor(x), k, s, p, d, ceil).numpy()
    attrs = dict(kernel_size=(k, k), stride=(s, s), padding=(p,) * 4, dilation=(d, d),
                 ceil_mode=ceil)
    got = run_kernel("max_pool2d", [nhwc(x)], nhwc(ref).shape, attrs, layout="NHWC")
    np.testing.assert_array_equal(nchw(got), ref)  # a max is exact; NaN where torch's is


def test_batch_norm_global_pool_and_concat_nhwc():
    r = rng(3)
    x = r.standard_normal((2, 5, 3, 4)).astype(np.float32)
    w, b = r.standard_normal(5).astype(np.float32), r.standard_normal(5).astype(np.float32)
    m, v = r.standard_normal(5).astype(np.float32), (r.random(5) + 0.5).astype(np.float32)
    attrs = dict(eps=1e-5, momentum=0.1, activation="relu", alpha=0.0)
    ref = run_kernel("batch_norm", [x, w, b, m, v], x.shape, attrs)
    got = run_kernel("batch_norm", [nhwc(x), w, b, m, v], nhwc(x).shape, attrs, layout="NHWC")
    np.testing.assert_allclose(nchw(got), ref, rtol=1e-6, atol=1e-6)
    gap = run_kernel("global_avg_pool2d", [nhwc(x)], (2, 5), {}, layout="NHWC")
    assert rel_err(gap, x.astype(np.float64).mean(axis=(2, 3))) < TOL
    y = r.standard_normal((2, 3, 3, 4)).astype(np.float32)
    cat = run_kernel("concat", [nhwc(x), nhwc(y)], (2, 3, 4, 8), {"axis": 1}, layout="NHWC")
    np.testing.assert_array_equal(nchw(cat), np.concatenate([x, y], axis=1))


@pytest.mark.parametrize("shape", [(1, 512, 4, 4), (3, 7, 1, 1), (2, 33, 7, 5), (1, 3, 14, 14)])
def test_global_avg_pool_nhwc_against_float64(shape):
    x = rng(4).standard_normal(shape).astype(np.float32)
    got = run_kernel("global_avg_pool2d", [nhwc(x)], shape[:2], {}, layout="NHWC")
    assert rel_err(got, x.astype(np.float64).mean(axis=(2, 3))) < TOL
