"""Every backward, loss and optimizer kernel against PyTorch autograd (float64 oracle).

Each case draws random inputs and a random upstream gradient gy, runs torch's forward
and ``backward(gy)``, and compares the kernel's outputs (relative error < 1e-4). The
grids cover odd sizes, batch 1, stride > kernel, asymmetric padding, dilation, groups
and depthwise, ceil_mode, and count_include_pad both ways.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime.registry import get_kernel
from tests.helpers import rel_err, rng, run_kernel

TOL = 1e-4


def t64(a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=grad)


def pad(x, pads, value=0.0):
    t, l, b, r = pads
    return F.pad(x, (l, r, t, b), value=value)


def run_multi(op, ins, out_shapes, attrs, mode="backward"):
    outs = [np.full(s, np.nan, np.float32) for s in out_shapes]
    get_kernel(op, "cpu", "NCHW", mode)(ins, outs, dict(attrs))()
    return outs


# ------------------------------------------------------------------ conv and linear

CONV_CASES = [
    dict(n=2, c=3, h=7, w=9, o=4, k=3, p=(1, 1, 1, 1)),
    dict(n=1, c=2, h=5, w=5, o=3, k=1),                               # pointwise, batch 1
    dict(n=2, c=4, h=9, w=8, o=6, k=3, s=(2, 3), p=(0, 1, 2, 1)),     # asymmetric
    dict(n=2, c=3, h=6, w=7, o=2, k=2, s=3),                          # stride > kernel
    dict(n=2, c=2, h=9, w=9, o=4, k=3, d=(2, 1), p=(2, 1, 2, 1)),     # dilation
    dict(n=2, c=4, h=7, w=6, o=6, k=3, g=2, p=(1, 1, 1, 1)),          # groups
    dict(n=3, c=5, h=8, w=7, o=5, k=3, g=5, s=2, p=(1, 1, 1, 1)),     # depthwise, stride
    dict(n=1, c=6, h=5, w=6, o=3, k=(1, 3), g=3, d=(1, 2)),           # grouped 1x3 dilated
    dict(n=2, c=3, h=4, w=4, o=2, k=5, p=(2, 2, 2, 2)),               # kernel > input
    # stride 1: dL/dx runs as a forward direct conv (conv_direct.py) with flipped weights,
    # dL/dW as direct dot products while C*kh*kw <= GRAD_WEIGHT_MAX_ROWS
    dict(n=2, c=1, h=12, w=11, o=6, k=5, p=(2, 2, 2, 2)),             # LeNet-5's c1
    dict(n=3, c=6, h=10, w=10, o=16, k=5),                            # LeNet-5's c2
    dict(n=2, c=3, h=6, w=7, o=5, k=3, p=(0, 1, 2, 0)),               # asymmetric
    dict(n=1, c=2, h=5, w=9, o=3, k=(1, 3), p=(0, 1, 0, 1)),          # 1x3, batch 1
    dict(n=2, c=2, h=5, w=5, o=3, k=2, p=(2, 2, 2, 2)),               # padding > k-1
    dict(n=2, c=70, h=6, w=5, o=32, k=3, p=(1, 1, 1, 1)),             # O*kh*kw = MAX_ROWS
    dict(n=5, c=17, h=9, w=8, o=9, k=3, p=(1, 0, 0, 1)),              # C*kh*kw = 153, O % 4
    dict(n=16, c=8, h=20, w=19, o=13, k=3, p=(1, 1, 1, 1)),           # parallel dL/dW
    # 16+ channels both ways: forward, dL/dW and dL/dx (stride 1) run blocked kernels
    dict(n=2, c=20, h=7, w=6, o=17, k=3, p=(1, 1, 1, 1)),
    dict(n=1, c=16, h=5, w=6, o=16, k=3, p=(0, 1, 2, 0)),             # asymmetric, batch 1
    dict(n=3, c=16, h=6, w=7, o=32, k=5, p=(2, 2, 2, 2)),
    dict(n=2, c=16, h=8, w=8, o=16, k=3, s=2, p=(1, 1, 1, 1)),        # stride 2: im2col dL/dx
    dict(n=3, c=32, h=9, w=7, o=16, k=1, s=2),                        # projection 1x1 s2
    dict(n=1, c=16, h=9, w=10, o=20, k=3, s=(2, 1), d=(1, 2), p=(3, 2, 1, 0)),  # dilated
    dict(n=2, c=18, h=4, w=5, o=16, k=3, p=(3, 3, 3, 3)),             # taps past the image
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_grads(case):
    r = rng(1)
    n, c, h, w, o = case["n"], case["c"], case["h"], case["w"], case["o"]
    k = case["k"] if isinstance(case["k"], tuple) else (case["k"], case["k"])
    s = case.get("s", 1)
    s = s if isinstance(s, tuple) else (s, s)
    d = case.get("d", (1, 1))
    pads, g = case.get("p", (0, 0, 0, 0)), case.get("g", 1)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    wt = r.standard_normal((o, c // g, *k)).astype(np.float32)
    b = r.standard_normal(o).astype(np.float32)
    tx, tw, tb = t64(x, True), t64(wt, True), t64(b, True)
    y = F.conv2d(pad(tx, pads), tw, tb, s, 0, d, g)
    gy = r.standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(t64(gy))
    fwd = dict(out_channels=o, kernel_size=k, stride=s, padding=pads, dilation=d, groups=g,
               bias=True, activation="none", alpha=0.0, residual=False)
    gx = run_kernel("conv2d_grad_input", [gy, wt], x.shape, {"fwd": fwd, "shape": x.shape[1:]},
                    mode="backward")
    gw = run_kernel("conv2d_grad_weight", [x, gy], wt.shape, {"fwd": fwd, "shape": wt.shape},
                    mode="backward")
    gb = run_kernel("bias_grad", [gy], b.shape, {}, mode="backward")
    assert rel_err(gx, tx.grad.numpy()) < TOL
    assert rel_err(gw, tw.grad.numpy()) < TOL
    assert rel_err(gb, tb.grad.numpy()) < TOL


@pytest.mark.parametrize("pointwise", [False, True])
def test_conv2d_images_batched_into_one_gemm(monkeypatch, pointwise):
    """Deep layers im2col several images per GEMM; force 2 per GEMM over a batch of 5
    (chunks 2, 2, 1) and check forward and both gradients."""
    from runtime.cpu import conv, conv_direct
    k = 1 if pointwise else 3
    rows, p = 3 * k * k, 4 * 5
    monkeypatch.setattr(conv, "CHUNK_FLOATS", 2 * rows * p)
    monkeypatch.setattr(conv_direct, "MAX_ROWS", 0)  # the im2col paths, not the direct one
    r = rng(20)
    x = r.standard_normal((5, 3, 4, 5)).astype(np.float32)
    wt = r.standard_normal((4, 3, k, k)).astype(np.float32)
    pads = (0, 0, 0, 0) if pointwise else (1, 1, 1, 1)
    tx, tw = t64(x, True), t64(wt, True)
    y = F.conv2d(pad(tx, pads), tw)
    gy = r.standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(t64(gy))
    fwd = dict(out_channels=4, kernel_size=(k, k), stride=(1, 1), padding=pads,
               dilation=(1, 1), groups=1, bias=False, activation="relu", alpha=0.0,
               residual=False)
    out = run_kernel("conv2d", [x, wt], y.shape, fwd)
    assert rel_err(out, F.relu(y).detach().numpy()) < TOL
    fwd["activation"] = "none"
    gx = run_kernel("conv2d_grad_input", [gy, wt], x.shape, {"fwd": fwd, "shape": x.shape[1:]},
                    mode="backward")
    gw = run_kernel("conv2d_grad_weight", [x, gy], wt.shape, {"fwd": fwd, "shape": wt.shape},
                    mode="backward")
    assert rel_err(gx, tx.grad.numpy()) < TOL
    assert rel_err(gw, tw.grad.numpy()) < TOL


@pytest.mark.parametrize("n,f,o", [(1, 7, 3), (5, 16, 10), (33, 65, 17)])
def test_linear_grads(n, f, o):
    r = rng(2)
    x = r.standard_normal((n, f)).astype(np.float32)
    wt = r.standard_normal((o, f)).astype(np.float32)
    tx, tw = t64(x, True), t64(wt, True)
    y = F.linear(tx, tw)
    gy = r.standard_normal((n, o)).astype(np.float32)
    y.backward(t64(gy))
    a = {"fwd": {"out_features": o}, "shape": (f,)}
    assert rel_err(run_kernel("linear_grad_input", [gy, wt], x.shape, a, mode="backward"),
                   tx.grad.numpy()) < TOL
    assert rel_err(run_kernel("linear_grad_weight", [x, gy], wt.shape, a, mode="backward"),
                   tw.grad.numpy()) < TOL
    assert rel_err(run_kernel("bias_grad", [gy], (o,), {}, mode="backward"),
                   gy.astype(np.float64).sum(0)) < TOL


@pytest.mark.parametrize("shape", [(1, 3), (64, 120), (2, 5, 3, 7), (64, 6, 28, 28),
                                   (3, 33, 1, 1)])  # Linear's (N, O), serial, parallel
def test_bias_grad_against_float64(shape):
    gy = rng(len(shape)).standard_normal(shape).astype(np.float32) + 0.5
    ref = gy.astype(np.float64).sum(axis=tuple(i for i in range(gy.ndim) if i != 1))
    got = run_kernel("bias_grad", [gy], (shape[1],), {}, mode="backward")
    assert rel_err(got, ref) < 1e-6


@pytest.mark.parametrize("n,c,h,w,o,k,p", [
    (64, 6, 14, 14, 16, 5, 0),  # LeNet-5's c2, parallel: a kernel row of 5 taps a pass
    (1, 1, 28, 28, 6, 5, 2),    # c1 at batch 1 (serial), a partial block of 4 channels
    (2, 5, 9, 11, 7, 3, 1),     # 3 taps a row, 7 output channels
    (1, 4, 6, 7, 3, 2, 0),      # 2 taps a row
    (2, 2, 12, 10, 5, 7, 3),    # 7 taps: more than a row fits in registers, tap by tap
])
def test_direct_conv_grad_weight_against_float64(n, c, h, w, o, k, p):
    from runtime.cpu import conv_direct
    r = rng(k)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    gy = r.standard_normal((n, o, h + 2 * p - k + 1, w + 2 * p - k + 1)).astype(np.float32)
    assert conv_direct.suits_grad_weight(c, k, k, (1, 1), (1, 1), 1)
    tx, tw = t64(x), t64(np.zeros((o, c, k, k), np.float32), True)
    F.conv2d(tx, tw, padding=p).backward(t64(gy))
    gw = np.full((o, c, k, k), np.nan, np.float32)
    conv_direct.bind_grad_weight(x, gy, gw, k, k, (p,) * 4)()
    assert rel_err(gw, tw.grad.numpy()) < 1e-5


# ------------------------------------------------------------------ pooling

@pytest.mark.parametrize("n,c,h,w,k,s,p,d,ceil", [
    (2, 3, 8, 8, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    (1, 2, 7, 9, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True),
    (2, 2, 9, 7, (3, 2), (1, 2), (1, 0, 1, 0), (2, 1), False),
    (2, 1, 6, 6, (2, 2), (3, 3), (0, 0, 0, 0), (1, 1), False),  # stride > kernel
    (1, 3, 5, 6, (3, 3), (2, 2), (0, 0, 0, 0), (1, 1), True),
])
def test_max_pool_grad(n, c, h, w, k, s, p, d, ceil):
    r = rng(3)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    tx = t64(x, True)
    y = F.max_pool2d(pad(tx, p, -float("inf")), k, s, 0, d, ceil)
    gy = r.standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(t64(gy))
    a = {"fwd": dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil),
         "shape": x.shape[1:]}
    got = run_kernel("max_pool2d_grad", [gy, x], x.shape, a, mode="backward")
    assert rel_err(got, tx.grad.numpy()) < TOL


@pytest.mark.parametrize("n,c,h,w,ceil", [
    (1, 2, 7, 9, False),     # 2x2 fast path; the odd last row and column get zero
    (1, 2, 7, 9, True),      # ceil_mode windows past the input: the general kernel
    (2, 40, 33, 31, False),  # big enough for the parallel fast path (vectors of 8)
    (1, 2, 28, 28, False),   # LeNet's first pool: 14 windows, 8 + overlapping 8
    (2, 3, 6, 41, False),    # 20 windows (16 + overlapping 16), an odd last column
    (1, 2, 4, 64, False),    # 32 windows: two vectors of 16
])
def test_max_pool_grad_2x2_with_nan_and_inf(n, c, h, w, ceil):
    r = rng(4)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = np.nan  # two NaNs in a window: the last one wins
    x[0, 1, 2:4, 2:4] = -np.inf             # an all -inf window: its first element wins
    x[-1, -1, 4 % h, 4] = np.inf
    x[0, 0, 2, 5] = x[0, 0, 3, 4] = 7.0     # a tie inside a vector: the first one wins
    x[0, 1, 0, 7] = x[0, 1, 1, 7] = np.nan    # the NaN of the lower row wins
    tx = t64(x, True)
    y = F.max_pool2d(tx, 2, 2, ceil_mode=ceil)
    gy = r.standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(t64(gy))
    a = {"fwd": dict(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0, 0, 0), dilation=(1, 1),
                     ceil_mode=ceil), "shape": x.shape[1:]}
    got = run_kernel("max_pool2d_grad", [gy, x], x.shape, a, mode="backward")
    np.testing.assert_array_equal(got, tx.grad.numpy().astype(np.float32))


def test_max_pool_grad_ties_go_to_the_first_maximum():
    x = np.ones((1, 1, 4, 4), np.float32)
    gy = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)
    a = {"fwd": dict(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0, 0, 0), dilation=(1, 1),
                     ceil_mode=False), "shape": (1, 4, 4)}
    got = run_kernel("max_pool2d_grad", [gy, x], x.shape, a, mode="backward")
    tx = t64(x, True)
    F.max_pool2d(tx, 2).backward(t64(gy))
    np.testing.assert_array_equal(got, tx.grad.numpy())


@pytest.mark.parametrize("k,s,p,ceil,cip", [
    ((2, 2), (2, 2), (0, 0), False, True),
    ((3, 3), (2, 2), (1, 1), True, True),
    ((3, 3), (2, 2), (1, 1), True, False),
    ((3, 2), (1, 2), (1, 0), False, False),
    ((2, 2), (3, 3), (0, 0), True, True),
])
def test_avg_pool_grad(k, s, p, ceil, cip):
    r = rng(4)
    x = r.standard_normal((2, 3, 7, 8)).astype(np.float32)
    tx = t64(x, True)
    y = F.avg_pool2d(tx, k, s, p, ceil, cip)
    gy = r.standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(t64(gy))
    a = {"fwd": dict(kernel_size=k, stride=s, padding=(p[0], p[1], p[0], p[1]), ceil_mode=ceil,
                     count_include_pad=cip), "shape": x.shape[1:]}
    got = run_kernel("avg_pool2d_grad", [gy], x.shape, a, mode="backward")
    assert rel_err(got, tx.grad.numpy()) < TOL


@pytest.mark.parametrize("norm,k,s,ceil", [(2.0, (2, 2), (2, 2), False),
                                           (3.0, (3, 2), (2, 1), False),
                                           (2.0, (3, 3), (2, 2), True)])
def test_lp_pool_grad(norm, k, s, ceil):
    r = rng(5)
    x = (r.random((2, 2, 7, 8)) + 0.1).astype(np.float32)  # positive: x**p is real
    tx = t64(x, True)
    y = F.lp_pool2d(tx, norm, k, s, ceil)
    gy = r.standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(t64(gy))
    yv = y.detach().numpy().astype(np.float32)
    a = {"fwd": dict(norm_type=norm, kernel_size=k, stride=s, ceil_mode=ceil),
         "shape": x.shape[1:]}
    got = run_kernel("lp_pool2d_grad", [gy, x, yv], x.shape, a, mode="backward")
    assert rel_err(got, tx.grad.numpy()) < TOL


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7)])
def test_global_avg_pool_grad(shape):
    r = rng(6)
    x = r.standard_normal(shape).astype(np.float32)
    tx = t64(x, True)
    y = tx.mean(dim=(2, 3))
    gy = r.standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(t64(gy))
    got = run_kernel("global_avg_pool2d_grad", [gy], shape, {"fwd": {}, "shape": shape[1:]},
                     mode="backward")
    assert rel_err(got, tx.grad.numpy()) < TOL


# ------------------------------------------------------------------ activations, norms

@pytest.mark.parametrize("act", ["relu", "leaky_relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4, 5), (4, 16, 33, 32)])  # last: parallel
def test_activation_grad(act, shape):
    r = rng(7)
    x = r.standard_normal(shape).astype(np.float32)
    tx = t64(x, True)
    fn = {"relu": F.relu, "leaky_relu": lambda t: F.leaky_relu(t, 0.2),
          "sigmoid": torch.sigmoid, "tanh": torch.tanh}[act]
    y = fn(tx)
    gy = r.standard_normal(shape).astype(np.float32)
    y.backward(t64(gy))
    saved = x if act == "leaky_relu" else y.detach().numpy().astype(np.float32)
    got = run_kernel("activation_grad", [gy, saved], shape,
                     {"activation": act, "alpha": 0.2}, mode="backward")
    assert rel_err(got, tx.grad.numpy()) < TOL


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (2, 6, 1, 3), (5, 7)])
@pytest.mark.parametrize("act", ["none", "relu"])
def test_batch_norm_train_and_grad(shape, act):
    r = rng(8)
    c = shape[1]
    x = (r.standard_normal(shape) * 2 + 1).astype(np.float32)
    gamma = r.standard_normal(c).astype(np.float32)
    beta = r.standard_normal(c).astype(np.float32)
    rm, rv = r.standard_normal(c).astype(np.float32), (r.random(c) + 0.5).astype(np.float32)
    tx, tg, tb = t64(x, True), t64(gamma, True), t64(beta, True)
    trm, trv = t64(rm), t64(rv)
    y = F.batch_norm(tx, trm, trv, tg, tb, training=True, momentum=0.1, eps=1e-5)
    if act == "relu":
        y = F.relu(y)
    attrs = dict(eps=1e-5, momentum=0.1, activation=act, alpha=0.0)
    rm2, rv2 = rm.copy(), rv.copy()
    out, mean, invstd = run_multi("batch_norm_train", [x, gamma, beta, rm2, rv2],
                                  [shape, (c,), (c,)], attrs, mode="forward")
    assert rel_err(out, y.detach().numpy()) < TOL
    assert rel_err(rm2, trm.numpy()) < TOL and rel_err(rv2, trv.numpy()) < TOL
    gy = r.standard_normal(shape).astype(np.float32)
    y.backward(t64(gy))
    # with the activation fused, the kernel takes the activation's saved output too
    extra = [out] if act != "none" else []
    gx, gg, gb = run_multi("batch_norm_grad", [gy, x, gamma, mean, invstd, *extra],
                           [shape, (c,), (c,)], attrs)
    assert rel_err(gx, tx.grad.numpy()) < TOL
    assert rel_err(gg, tg.grad.numpy()) < TOL
    assert rel_err(gb, tb.grad.numpy()) < TOL


def test_batch_norm_train_refuses_one_value_per_channel():
    x = np.ones((1, 3), np.float32)
    c = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        run_multi("batch_norm_train", [x, c, c, c.copy(), c.copy()], [(1, 3), (3,), (3,)],
                  dict(eps=1e-5, momentum=0.1, activation="none", alpha=0.0), mode="forward")


@pytest.mark.parametrize("size,shape", [(3, (2, 6, 3, 4)), (5, (1, 4, 2, 2)), (2, (2, 7, 1, 3)),
                                        (1, (2, 3, 2, 2))])
def test_lrn_grad(size, shape):
    r = rng(9)
    x = r.standard_normal(shape).astype(np.float32)
    tx = t64(x, True)
    y = F.local_response_norm(tx, size, 0.3, 0.75, 2.0)
    gy = r.standard_normal(shape).astype(np.float32)
    y.backward(t64(gy))
    a = {"fwd": dict(size=size, alpha=0.3, beta=0.75, k=2.0), "shape": shape[1:]}
    got = run_kernel("local_response_norm_grad", [gy, x], shape, a, mode="backward")
    assert rel_err(got, tx.grad.numpy()) < TOL


@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 3, 3)])
def test_softmax_grad(shape):
    r = rng(10)
    x = r.standard_normal(shape).astype(np.float32)
    tx = t64(x, True)
    y = F.softmax(tx, dim=1)
    gy = r.standard_normal(shape).astype(np.float32)
    y.backward(t64(gy))
    got = run_kernel("softmax_grad", [gy, y.detach().numpy().astype(np.float32)], shape, {},
                     mode="backward")
    assert rel_err(got, tx.grad.numpy()) < TOL


@pytest.mark.parametrize("n,k", [(1, 2), (7, 10), (64, 3)])
def test_softmax_cross_entropy_and_grad(n, k):
    r = rng(11)
    z = (r.standard_normal((n, k)) * 5).astype(np.float32)
    labels = r.integers(0, k, n).astype(np.int64)
    tz = t64(z, True)
    loss = F.cross_entropy(tz, torch.tensor(labels))
    loss.backward()
    out = [np.full((1,), np.nan, np.float32), np.full((n, k), np.nan, np.float32)]
    get_kernel("softmax_cross_entropy")([z, labels], out, {})()
    assert rel_err(out[0], np.array([loss.item()])) < TOL
    gz = np.full((n, k), np.nan, np.float32)
    get_kernel("softmax_cross_entropy_grad", mode="backward")([out[1], labels], [gz], {})()
    assert rel_err(gz, tz.grad.numpy()) < TOL


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[1e4, 0.0, -1e4]], np.float32)
    out = [np.zeros(1, np.float32), np.zeros((1, 3), np.float32)]
    get_kernel("softmax_cross_entropy")([z, np.array([1])], out, {})()
    assert np.isclose(out[0][0], 1e4) and np.isfinite(out[1]).all()


# ------------------------------------------------------------------ dropout, data movement

def test_dropout_train_mask_and_grad():
    x = rng(12).standard_normal((4, 8, 16, 16)).astype(np.float32)
    hyper = np.array([0.1, 3.0])
    attrs = {"p": 0.3, "seed": 17}
    y, mask = run_multi("dropout_train", [x, hyper], [x.shape, x.shape], attrs, mode="forward")
    kept = mask != 0
    assert abs(1 - kept.mean() - 0.3) < 0.01  # 32k draws
    np.testing.assert_allclose(mask[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_allclose(y, x * mask, rtol=1e-6)
    y2, mask2 = run_multi("dropout_train", [x, hyper], [x.shape, x.shape], attrs, mode="forward")
    np.testing.assert_array_equal(mask, mask2)  # same (seed, step): same mask
    hyper[1] = 4
    _, mask3 = run_multi("dropout_train", [x, hyper], [x.shape, x.shape], attrs, mode="forward")
    assert (mask3 != mask).mean() > 0.3
    gy = rng(13).standard_normal(x.shape).astype(np.float32)
    gx = run_kernel("dropout_grad", [gy, mask], x.shape, {}, mode="backward")
    np.testing.assert_allclose(gx, gy * mask, rtol=1e-6)
    _, m1 = run_multi("dropout_train", [x, hyper], [x.shape, x.shape], {"p": 1.0, "seed": 1},
                      mode="forward")
    assert not m1.any()


@pytest.mark.parametrize("axis,sizes,shape", [(1, (2, 3, 1), (2, 6, 3, 3)), (1, (4, 1), (3, 5))])
def test_split_is_concat_grad(axis, sizes, shape):
    gy = rng(14).standard_normal(shape).astype(np.float32)
    outs = []
    for k in sizes:
        s = list(shape)
        s[axis] = k
        outs.append(tuple(s))
    got = run_multi("split", [gy], outs, {"axis": axis, "sizes": sizes})
    np.testing.assert_array_equal(np.concatenate(got, axis=axis), gy)


# ------------------------------------------------------------------ optimizer updates

@pytest.mark.parametrize("name,kwargs", [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.1, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.8, dampening=0.1, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("adam", dict(lr=0.01)),
    ("adam", dict(lr=0.003, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01)),
    ("adagrad", dict(lr=0.1)),
    ("adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, eps=1e-6)),
])
@pytest.mark.parametrize("shape", [(5, 7), (300, 250)])  # serial, parallel (>= 65536)
def test_optimizer_updates_match_torch(name, kwargs, shape):
    r = rng(15)
    p = r.standard_normal(shape).astype(np.float32)
    tp = torch.nn.Parameter(t64(p))
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad}
    topt = cls[name]([tp], **kwargs)
    ours = p.copy()
    if name == "sgd":
        attrs = dict(momentum=kwargs.get("momentum", 0.0), dampening=kwargs.get("dampening", 0.0),
                     weight_decay=kwargs.get("weight_decay", 0.0),
                     nesterov=kwargs.get("nesterov", False))
        state = [np.zeros_like(p)] if attrs["momentum"] else []
    elif name == "adam":
        b1, b2 = kwargs.get("betas", (0.9, 0.999))
        attrs = dict(beta1=b1, beta2=b2, eps=kwargs.get("eps", 1e-8),
                     weight_decay=kwargs.get("weight_decay", 0.0))
        state = [np.zeros_like(p), np.zeros_like(p)]
    else:
        attrs = dict(eps=kwargs.get("eps", 1e-10), weight_decay=kwargs.get("weight_decay", 0.0),
                     lr_decay=kwargs.get("lr_decay", 0.0))
        state = [np.zeros_like(p)]
    hyper = np.array([kwargs["lr"], 0.0])
    grad = np.zeros_like(p)
    run = get_kernel(f"{name}_update", mode="update")([ours, grad, *state, hyper], [], attrs)
    for step in range(1, 5):
        g = r.standard_normal(p.shape).astype(np.float32)
        tp.grad = t64(g)
        topt.step()
        grad[...] = g
        hyper[1] = step
        run()
        assert rel_err(ours, tp.detach().numpy()) < TOL, step
