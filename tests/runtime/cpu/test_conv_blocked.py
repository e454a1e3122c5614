"""conv2d in NCHW16c (register-tiled, depthwise) and the layout transforms, vs torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime.cpu.layout import from_nchwc, to_nchwc
from runtime.registry import get_kernel
from tests.helpers import rel_err, rng, run_kernel

ACTS = {"none": lambda t: t, "relu": F.relu, "leaky_relu": lambda t: F.leaky_relu(t, 0.1),
        "tanh": torch.tanh}


def blocked_case(n, c, h, w, o, k, s=1, p=0, d=1, g=1, act="relu", res=False, bias=True,
                 seed=0, planar=False):
    r = rng(seed)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    wt = r.standard_normal((o, c // g, k, k)).astype(np.float32)
    b = r.standard_normal(o).astype(np.float32)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    ref = F.conv2d(t(x), t(wt), t(b) if bias else None, s, p, d, g)
    ins = [x if planar else to_nchwc(x), wt] + ([b] if bias else [])
    if res:
        rr = r.standard_normal(tuple(ref.shape)).astype(np.float32)
        ref = ref + t(rr)
        ins.append(to_nchwc(rr))
    ref = ACTS[act](ref).numpy()
    oh, ow = ref.shape[2:]
    attrs = dict(out_channels=o, kernel_size=(k, k), stride=(s, s), padding=(p, p, p, p),
                 dilation=(d, d), groups=g, bias=bias, activation=act, alpha=0.1, residual=res)
    out = run_kernel("conv2d", ins, (n, -(-o // 16), oh, ow, 16), attrs, layout="NCHW16c")
    return out, ref


@pytest.mark.parametrize("case", [
    dict(n=2, c=3, h=9, w=11, o=17, k=3, p=1),           # channels not a multiple of 16
    dict(n=1, c=40, h=8, w=8, o=16, k=3, s=2, p=1, res=True, act="none"),
    dict(n=2, c=17, h=10, w=13, o=33, k=5, p=2, d=2, act="tanh"),
    dict(n=3, c=64, h=7, w=7, o=64, k=1, act="leaky_relu", bias=False),
    dict(n=2, c=32, h=2, w=2, o=20, k=1, res=True),     # pointwise on 2x2: one 4-pixel tile
    dict(n=1, c=17, h=3, w=5, o=33, k=1, res=True, act="tanh"),  # 15 px: 3 tiles + 3
    dict(n=2, c=32, h=5, w=5, o=16, k=1, s=2),           # strided 1x1: rows, not flattened
    dict(n=2, c=16, h=4, w=4, o=32, k=3, p=1),            # 4-pixel tile only
    dict(n=2, c=16, h=6, w=21, o=16, k=3, p=1, res=True),  # AVX-512 8+8+4+1, AVX2 6+6+4+4+1
    dict(n=1, c=48, h=3, w=16, o=32, k=3, p=1),          # 16 px: 8+8, or 6+6+4 (AVX2)
    dict(n=1, c=16, h=9, w=14, o=16, k=3, s=2, p=1),     # strided rows of 7: a tile on each border
    dict(n=1, c=3, h=32, w=32, o=64, k=7, s=2, p=3),      # ResNet stem
    dict(n=2, c=16, h=12, w=12, o=16, k=3, p=1, g=16),    # depthwise
    dict(n=2, c=20, h=9, w=9, o=20, k=3, s=2, p=1, g=20, res=True),  # depthwise, odd C
    # depthwise row tiles: AVX-512 8+8+4+1 (AVX2 6+6+4+4+1), each border tile reading zeros
    dict(n=1, c=32, h=5, w=21, o=32, k=3, p=1, g=32, act="leaky_relu"),
    dict(n=1, c=48, h=7, w=17, o=48, k=5, s=2, p=2, g=48),      # 5x5, stride 2
    dict(n=2, c=16, h=6, w=13, o=16, k=3, p=3, d=2, g=16, act="tanh"),  # dilated, p > reach
    dict(n=1, c=17, h=2, w=2, o=17, k=3, p=1, g=17, bias=False),  # 2x2 plane, one pixel tiles
    # overlapping last tiles (pixels computed and stored twice): the residual added once
    dict(n=2, c=32, h=7, w=7, o=32, k=3, p=1, res=True),          # 4 + 4 (from pixel 3)
    dict(n=1, c=16, h=3, w=14, o=16, k=3, p=1, res=True, act="leaky_relu"),  # 8 + 8 (AVX2 6x3)
    dict(n=1, c=16, h=4, w=5, o=32, k=3, s=1, p=1, res=True),     # 4 + 4 (from pixel 1)
    dict(n=1, c=32, h=7, w=7, o=32, k=3, p=1, g=32, res=True),    # depthwise 4 + 4
])
def test_blocked_conv(case):
    out, ref = blocked_case(**case)
    o = ref.shape[1]
    assert rel_err(from_nchwc(out, o), ref) < 1e-5
    if o % 16:  # padding channels of the last block stay exactly zero
        assert (out[:, -1, :, :, o % 16:] == 0).all()


@pytest.mark.parametrize("case", [
    dict(n=2, c=3, h=32, w=32, o=64, k=3, p=1),                 # CIFAR stem
    dict(n=1, c=3, h=23, w=29, o=64, k=7, s=2, p=3),            # ImageNet stem, odd sizes
    dict(n=3, c=1, h=28, w=28, o=6, k=5, act="tanh"),           # LeNet: 6 of 16 outputs
    dict(n=1, c=15, h=9, w=13, o=20, k=3, s=2, p=2, d=2, res=True, act="leaky_relu"),
    dict(n=2, c=2, h=5, w=3, o=17, k=3, p=4, bias=False),       # padding beyond the reach
])
def test_blocked_conv_reads_an_nchw_input(case):
    """A stem's few channels are read as planes (NCHW) and the output written NCHW16c."""
    out, ref = blocked_case(**case, planar=True)
    o = ref.shape[1]
    assert rel_err(from_nchwc(out, o), ref) < 1e-5
    if o % 16:
        assert (out[:, -1, :, :, o % 16:] == 0).all()


@pytest.mark.parametrize("ow_n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 21, 28, 56, 64])
def test_row_plan_covers_the_row_in_fewest_tiles(ow_n):
    """Tiles re-read the weights: the fewest tiles, then the fewest pixels computed; a
    tile past the row's end starts earlier, overlapping the one before."""
    from runtime.cpu.conv_blocked import row_plan, row_tile
    from runtime.cpu.simd import TILE
    k, n4, n1 = row_plan(ow_n)
    covered, ow = np.zeros(ow_n, int), 0
    for i, want in enumerate([TILE] * k + [4] * n4 + [1] * n1):
        tw, o = row_tile(i, k, n4, ow_n)
        assert tw == want and 0 <= o <= ow and o + tw <= ow_n
        covered[o:o + tw] += 1
        ow += tw
    assert (covered >= 1).all()

    def cost(k, n4, n1):
        return (k + n4 + n1, k * TILE + 4 * n4 + n1)
    feasible = [(a, b, max(ow_n - a * TILE - 4 * b, 0))
                for a in range(ow_n // TILE + 2 if ow_n >= TILE else 1)
                for b in range(ow_n // 4 + 2 if ow_n >= 4 else 1)
                if a * TILE + 4 * b - ow_n < (4 if b else TILE)]
    assert cost(k, n4, n1) == min(cost(*f) for f in feasible)
    if TILE == 8:
        assert {7: (0, 2, 0), 14: (2, 0, 0), 28: (3, 1, 0), 5: (0, 1, 1)}.get(
            ow_n, (k, n4, n1)) == (k, n4, n1)


@pytest.mark.parametrize("g", [1, 16])
@pytest.mark.parametrize("w", [4, 6, 13])
def test_blocked_conv_border_taps_ignore_inf_at_the_edge(w, g):
    """Taps in the padding read a zero vector, never a neighbouring pixel: an Inf at the
    edge must not leak into outputs whose every tap is padding (padding 3 > reach 1)."""
    r = rng(1)
    x = r.standard_normal((2, 16, 5, w)).astype(np.float32)
    x[:, :, :, 0] = np.inf
    x[:, :, :, -1] = -np.inf
    wt = r.standard_normal((16, 16 // g, 3, 3)).astype(np.float32)
    b = r.standard_normal(16).astype(np.float32)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    ref = F.conv2d(t(x), t(wt), t(b), 1, 3, 1, g).numpy()
    attrs = dict(out_channels=16, kernel_size=(3, 3), stride=(1, 1), padding=(3,) * 4,
                 dilation=(1, 1), groups=g, bias=True, activation="none", alpha=0.0,
                 residual=False)
    out = from_nchwc(run_kernel("conv2d", [to_nchwc(x), wt, b], (2, 1, 9, w + 4, 16), attrs,
                                layout="NCHW16c"), 16)
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    assert np.array_equal(np.isinf(out), np.isinf(ref))
    fin = np.isfinite(ref)
    assert fin[:, :, :, 0].all() and rel_err(out[fin], ref[fin]) < 1e-5


def test_blocked_conv_rejects_unsupported_cases():
    x, w = np.zeros((1, 1, 5, 5, 16), np.float32), np.zeros((8, 4, 3, 3), np.float32)
    attrs = dict(out_channels=8, kernel_size=(3, 3), stride=(1, 1), padding=(0,) * 4,
                 dilation=(1, 1), groups=2, bias=False, activation="none", alpha=0.0,
                 residual=False)
    with pytest.raises(NotImplementedError, match="groups=2"):
        get_kernel("conv2d", "cpu", "NCHW16c")([x, w], [np.zeros((1, 1, 3, 3, 16),
                                                                  np.float32)], attrs)
    with pytest.raises(ValueError, match="sigmoid"):
        get_kernel("conv2d", "cpu", "NCHW16c")([x, w], [np.zeros((1, 1, 3, 3, 16),
                                                                  np.float32)],
                                               dict(attrs, groups=1, activation="sigmoid"))
    with pytest.raises(ValueError, match="needs 4 input channels, the blocked input has 2"):
        get_kernel("conv2d", "cpu", "NCHW16c")([np.zeros((1, 2, 5, 5, 16), np.float32), w],
                                               [np.zeros((1, 1, 3, 3, 16), np.float32)],
                                               dict(attrs, groups=1))
    with pytest.raises(ValueError, match=r"input of 4 channels, got \(1, 3, 5, 5\)"):
        get_kernel("conv2d", "cpu", "NCHW16c")([np.zeros((1, 3, 5, 5), np.float32), w],
                                               [np.zeros((1, 1, 3, 3, 16), np.float32)],
                                               dict(attrs, groups=1))


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 16, 4, 4), (3, 33, 2, 3)])
def test_layout_transform_round_trip(shape):
    x = rng(1).standard_normal(shape).astype(np.float32)
    b = run_kernel("layout_transform", [x], (shape[0], -(-shape[1] // 16), *shape[2:], 16),
                   {"src": "NCHW", "dst": "NCHW16c"}, layout="NCHW16c")
    np.testing.assert_array_equal(b, to_nchwc(x))
    assert (b.reshape(-1)[np.isnan(b.reshape(-1))].size == 0)
    back = run_kernel("layout_transform", [b], shape, {"src": "NCHW16c", "dst": "NCHW"},
                      layout="NCHW16c")
    np.testing.assert_array_equal(back, x)
    np.testing.assert_array_equal(b[:, 0, :, :, 0], x[:, 0])


@pytest.mark.parametrize("c", [16, 20])
@pytest.mark.parametrize("act", ["none", "relu"])
def test_blocked_batch_norm(c, act):
    r = rng(c)
    x = r.standard_normal((2, c, 5, 3)).astype(np.float32)
    w, b, m = (r.standard_normal(c).astype(np.float32) for _ in range(3))
    v = r.uniform(0.5, 2, c).astype(np.float32)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    ref = ACTS[act](F.batch_norm(t(x), t(m), t(v), t(w), t(b), False, eps=1e-5)).numpy()
    out = run_kernel("batch_norm", [to_nchwc(x), w, b, m, v], (2, -(-c // 16), 5, 3, 16),
                     dict(eps=1e-5, momentum=0.1, activation=act, alpha=0.0), layout="NCHW16c")
    assert rel_err(from_nchwc(out, c), ref) < 1e-6
    if c % 16:
        assert (out[:, -1, :, :, c % 16:] == 0).all()


@pytest.mark.parametrize("n,c,h,w,k,s,p,d,ceil", [
    (2, 20, 9, 8, 2, 2, 0, 1, False),
    (2, 20, 9, 8, 3, 2, 1, 1, False),
    (2, 20, 9, 8, 3, 1, 1, 2, False),
    (1, 16, 8, 8, 3, 1, 1, 1, False),     # Inception's 3x3 stride-1 pool: 8-pixel tiles
    (1, 5, 11, 17, 3, 1, 1, 1, False),    # 17 wide: tiles of 8 + 8 (overlapping) + ...
    (3, 33, 7, 13, 3, 2, 1, 1, True),     # ceil_mode: the last window runs past the edge
    (1, 7, 6, 3, 3, 1, 1, 1, False),      # 3 wide: single-pixel tiles, both borders
    (2, 18, 12, 12, 3, 3, 0, 1, True),    # windows that do not overlap
])
def test_blocked_max_pool(n, c, h, w, k, s, p, d, ceil):
    x = rng(k + h).standard_normal((n, c, h, w)).astype(np.float32)
    x[0, 3, 2 % h, 0] = np.nan
    ref = F.max_pool2d(torch.tensor(x, dtype=torch.float64), k, s, p, dilation=d,
                       ceil_mode=ceil).numpy()
    attrs = dict(kernel_size=(k, k), stride=(s, s), padding=(p,) * 4, dilation=(d, d),
                 ceil_mode=ceil)
    out = run_kernel("max_pool2d", [to_nchwc(x)], (n, -(-c // 16), *ref.shape[2:], 16), attrs,
                     layout="NCHW16c")
    got = from_nchwc(out, c)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(got[~np.isnan(got)], ref[~np.isnan(ref)])
    assert (out[:, -1, :, :, (c - 1) % 16 + 1:] == 0).all()


@pytest.mark.parametrize("n,c,h,w", [(1, 16, 1, 1), (2, 20, 5, 3), (3, 64, 8, 8),
                                     (32, 48, 16, 16)])  # the last one runs parallel
def test_blocked_global_avg_pool(n, c, h, w):
    x = rng(c).standard_normal((n, c, h, w)).astype(np.float32)
    ref = x.astype(np.float64).mean(axis=(2, 3))
    out = run_kernel("global_avg_pool2d", [to_nchwc(x)], (n, c), {}, layout="NCHW16c")
    assert out.shape == (n, c)
    assert rel_err(out, ref) < 1e-6


def test_blocked_concat():
    xs = [rng(i).standard_normal((2, c, 3, 4)).astype(np.float32) for i, c in
          enumerate([16, 32, 16])]
    out = run_kernel("concat", [to_nchwc(x) for x in xs], (2, 4, 3, 4, 16), {"axis": 1},
                     layout="NCHW16c")
    np.testing.assert_array_equal(from_nchwc(out, 64), np.concatenate(xs, axis=1))


@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
@pytest.mark.parametrize("g,res", [(1, True), (1, False), (16, True)])
def test_the_epilogue_passes_nan_and_inf_through_as_torch(act, g, res):
    # the store's activation is a select in registers: relu/leaky_relu of NaN stay NaN,
    # of +-inf stay +inf / become 0 or -inf, after the residual is added
    r = rng(7)
    x = r.standard_normal((1, 16, 6, 9)).astype(np.float32)
    x[0, 2, 3, 4] = np.nan
    x[0, 5, 0, 8] = np.inf
    x[0, 9, 5, 0] = -np.inf
    wt = r.standard_normal((16, 16 // g, 3, 3)).astype(np.float32)
    b = r.standard_normal(16).astype(np.float32)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    ref = F.conv2d(t(x), t(wt), t(b), 1, 1, 1, g)
    ins = [to_nchwc(x), wt, b]
    if res:
        rr = r.standard_normal(tuple(ref.shape)).astype(np.float32)
        rr[0, 1, 1, 1] = np.nan
        ref = ref + t(rr)
        ins.append(to_nchwc(rr))
    ref = ACTS[act](ref).numpy()
    attrs = dict(out_channels=16, kernel_size=(3, 3), stride=(1, 1), padding=(1,) * 4,
                 dilation=(1, 1), groups=g, bias=True, activation=act, alpha=0.1,
                 residual=res)
    got = from_nchwc(run_kernel("conv2d", ins, (1, 1, 6, 9, 16), attrs, layout="NCHW16c"), 16)
    assert np.isnan(ref).any() and np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.array_equal(np.isinf(got), np.isinf(ref))
    fin = np.isfinite(ref)
    assert rel_err(got[fin], ref[fin]) < 1e-5
