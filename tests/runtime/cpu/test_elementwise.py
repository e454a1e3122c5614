"""Activations, n-ary add, dropout and flatten copies vs PyTorch (float64 oracle).

Covers ranks 2 and 4, odd sizes, batch 1, arrays on both sides of the serial/parallel
threshold, +-100 and +-inf, NaN propagation, and in-place operation (output = input).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime.cpu.elementwise import (COPY_PARALLEL_MIN, PARALLEL_MIN,
                                     PARALLEL_MIN_TRANSCENDENTAL)
from runtime.registry import get_kernel
from tests.helpers import rel_err, rng, run_kernel

# small (serial) and large (parallel: >= PARALLEL_MIN elements) arrays of ranks 2 and 4
SHAPES = [(3, 7), (1, 5), (1, 3, 5, 5), (2, 7, 9, 11), (300, 301), (2, 17, 45, 47)]
ACTS = ["none", "relu", "leaky_relu", "sigmoid", "tanh"]


def t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def torch_act(z: torch.Tensor, act: str, alpha: float) -> torch.Tensor:
    if act == "relu":
        return F.relu(z)
    if act == "leaky_relu":
        return F.leaky_relu(z, alpha)
    if act == "sigmoid":
        return torch.sigmoid(z)
    if act == "tanh":
        return torch.tanh(z)
    return z


def assert_matches(got: np.ndarray, ref: np.ndarray, tol: float = 1e-6) -> None:
    """NaN exactly where the reference has NaN, infinities exactly, rel_err on the rest."""
    assert got.shape == ref.shape
    ref32 = ref.astype(np.float32)  # float64 values too small for float32 flush to 0
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref32))
    inf = np.isinf(ref32)
    np.testing.assert_array_equal(got[inf], ref32[inf])
    fin = np.isfinite(ref32)
    assert np.isfinite(got[fin]).all()
    assert rel_err(got[fin], ref[fin]) < tol


def with_extremes(x: np.ndarray) -> np.ndarray:
    """Plant +-100, +-inf, NaN, +-0 and tiny values at the front and the back."""
    special = np.array([100.0, -100.0, np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30, -1e-30,
                        30.0, -30.0, 88.0, -88.0, 1e4, -1e4], np.float32)
    x = x.copy()
    f = x.reshape(-1)
    k = min(special.size, f.size)
    f[:k] = special[:k]
    f[-k:] = special[:k][::-1]
    return x


UNARY = {"relu": ("relu", {}), "sigmoid": ("sigmoid", {}), "tanh": ("tanh", {})}
UNARY.update({f"leaky_relu_{s}": ("leaky_relu", {"negative_slope": s})
              for s in (0.01, 0.2, 0.0, 1.5, -0.5)})


def unary_ref(op: str, attrs: dict, x: np.ndarray) -> np.ndarray:
    if op == "leaky_relu":
        return F.leaky_relu(t(x), attrs["negative_slope"]).numpy()
    return torch_act(t(x), op, 0.0).numpy()


@pytest.mark.parametrize("case", list(UNARY))
@pytest.mark.parametrize("shape", SHAPES)
def test_unary(case, shape):
    op, attrs = UNARY[case]
    x = with_extremes((rng(len(shape)).standard_normal(shape) * 4).astype(np.float32))
    ref = unary_ref(op, attrs, x)
    assert_matches(run_kernel(op, [x], shape, attrs), ref)
    buf = x.copy()
    get_kernel(op)([buf], [buf], attrs)()  # in place: the output is the input's memory
    assert_matches(buf, ref)


@pytest.mark.parametrize("op", ["relu", "leaky_relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("side", [-1, 0])
def test_unary_threshold(op, side):
    """Both sides of the serial/parallel switch, in place, and every element written."""
    size = (PARALLEL_MIN_TRANSCENDENTAL if op in ("sigmoid", "tanh") else PARALLEL_MIN) + side
    attrs = {"negative_slope": 0.1} if op == "leaky_relu" else {}
    x = with_extremes((rng(size).standard_normal((1, size)) * 3).astype(np.float32))
    ref = unary_ref(op, attrs, x)
    assert_matches(run_kernel(op, [x], x.shape, attrs), ref)
    buf = x.copy()
    get_kernel(op)([buf], [buf], attrs)()
    assert_matches(buf, ref)


def test_unary_nan_and_extremes_exact():
    x = np.array([[np.nan, 100.0, -100.0, np.inf, -np.inf]], np.float32)
    nan = float("nan")
    assert np.array_equal(run_kernel("relu", [x], x.shape, {}),
                          [[nan, 100.0, 0.0, np.inf, 0.0]], equal_nan=True)
    assert np.array_equal(run_kernel("leaky_relu", [x], x.shape, {"negative_slope": 0.5}),
                          [[nan, 100.0, -50.0, np.inf, -np.inf]], equal_nan=True)
    assert np.array_equal(run_kernel("tanh", [x], x.shape, {}),
                          [[nan, 1.0, -1.0, 1.0, -1.0]], equal_nan=True)
    s = run_kernel("sigmoid", [x], x.shape, {})
    assert np.isnan(s[0, 0]) and s[0, 1] == 1.0 and s[0, 3] == 1.0 and s[0, 4] == 0.0
    assert 0.0 <= s[0, 2] < 1e-40  # exp(-100) is a float32 denormal


# ---------------------------------------------------------------- add

@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("shape", SHAPES)
def test_add(shape, n, act):
    r = rng(n * 7 + len(shape))
    xs = [(r.standard_normal(shape) * 3).astype(np.float32) for _ in range(n)]
    attrs = {"activation": act, "alpha": 0.15}
    ref = t(xs[0])
    for x in xs[1:]:
        ref = torch.add(ref, t(x))
    ref = torch_act(ref, act, 0.15).numpy()
    assert_matches(run_kernel("add", xs, shape, attrs), ref)
    for k in range(n):  # the output may be the memory of any input
        bufs = [x.copy() for x in xs]
        get_kernel("add")(bufs, [bufs[k]], attrs)()
        assert_matches(bufs[k], ref)
        for j in range(n):
            if j != k:
                np.testing.assert_array_equal(bufs[j], xs[j])  # other inputs untouched


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 17, 45, 47)])
def test_add_same_array_twice_in_place(shape, n):
    """add(x, x, ...) with the output over x: x is two inputs and the output at once."""
    r = rng(3)
    x = r.standard_normal(shape).astype(np.float32)
    others = [r.standard_normal(shape).astype(np.float32) for _ in range(n - 2)]
    ref = t(x) + t(x)
    for o in others:
        ref = ref + t(o)
    buf = x.copy()
    get_kernel("add")([buf, buf] + others, [buf], {"activation": "relu", "alpha": 0.0})()
    assert_matches(buf, F.relu(ref).numpy())


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("act", ACTS)
def test_add_nan_inf(n, act):
    """NaN in any input, and inf + -inf, give NaN; inf + finite stays inf (before act)."""
    shape = (3, 4, 5, 7)
    xs = [rng(i).standard_normal(shape).astype(np.float32) for i in range(n)]
    xs[0].reshape(-1)[:4] = [np.nan, np.inf, np.inf, -np.inf]
    xs[-1].reshape(-1)[:4] = [1.0, -np.inf, 2.0, -3.0]
    xs[-1].reshape(-1)[-1] = np.nan
    ref = t(xs[0])
    for x in xs[1:]:
        ref = ref + t(x)
    ref = torch_act(ref, act, 0.1).numpy()
    attrs = {"activation": act, "alpha": 0.1}
    got = run_kernel("add", xs, shape, attrs)
    assert_matches(got, ref)
    assert np.isnan(got.reshape(-1)[[0, 1, -1]]).all()


@pytest.mark.parametrize("act", ["relu", "sigmoid"])
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("side", [-1, 0])
def test_add_threshold(act, n, side):
    """Both sides of the serial/parallel switch (lower for sigmoid/tanh epilogues)."""
    size = (PARALLEL_MIN_TRANSCENDENTAL if act == "sigmoid" else PARALLEL_MIN) + side
    xs = [rng(i).standard_normal((1, size)).astype(np.float32) for i in range(n)]
    ref = t(xs[0])
    for x in xs[1:]:
        ref = ref + t(x)
    attrs = {"activation": act, "alpha": 0.0}
    assert_matches(run_kernel("add", xs, (1, size), attrs), torch_act(ref, act, 0.0).numpy())


def test_add_blocked_rejects_sigmoid():
    """On NCHW16c the epilogue must keep the zero padding channels zero."""
    x = np.zeros((1, 1, 2, 2, 16), np.float32)
    with pytest.raises(ValueError, match="padding"):
        get_kernel("add", layout="NCHW16c")([x, x], [x.copy()],
                                            {"activation": "sigmoid", "alpha": 0.0})
    out = np.full_like(x, np.nan)
    get_kernel("add", layout="NCHW16c")([x, x], [out], {"activation": "tanh", "alpha": 0.0})()
    assert not out.any()


# ---------------------------------------------------------------- dropout, flatten

@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("shape", SHAPES)
def test_dropout_is_identity(shape, p):
    x = with_extremes(rng(1).standard_normal(shape).astype(np.float32))
    ref = F.dropout(torch.tensor(x), p, training=False).numpy()
    np.testing.assert_array_equal(run_kernel("dropout", [x], shape, {"p": p}), ref)
    buf = x.copy()
    get_kernel("dropout")([buf], [buf], {"p": p})()  # in place: nothing to do
    np.testing.assert_array_equal(buf, ref)


@pytest.mark.parametrize("op", ["dropout", "flatten"])
@pytest.mark.parametrize("side", [-1, 0])
def test_copy_threshold(op, side):
    """np.copyto below COPY_PARALLEL_MIN, the parallel copy loop from there on."""
    x = rng(5).standard_normal((1, COPY_PARALLEL_MIN + side)).astype(np.float32)
    np.testing.assert_array_equal(run_kernel(op, [x], x.shape, {"p": 0.5}), x)


@pytest.mark.parametrize("shape", [(1, 3, 5, 5), (2, 7, 9, 11), (4, 1, 1, 1), (3, 7),
                                   (2, 17, 45, 47), (2, 64, 64, 65)])
def test_flatten(shape):
    x = with_extremes(rng(2).standard_normal(shape).astype(np.float32))
    ref = torch.flatten(torch.tensor(x), 1).numpy()
    np.testing.assert_array_equal(run_kernel("flatten", [x], ref.shape, {}), ref)
    buf = x.copy()
    get_kernel("flatten")([buf], [buf.reshape(ref.shape)], {})()
    np.testing.assert_array_equal(buf.reshape(ref.shape), ref)


def test_partial_overlap_rejected():
    """The kernels support exact in-place aliasing only; a shifted view is a bind error."""
    arena = np.zeros(2 * 1000, np.float32)
    x, out = arena[:1000].reshape(10, 100), arena[500:1500].reshape(10, 100)
    for op, attrs in [("relu", {}), ("dropout", {"p": 0.5}),
                      ("add", {"activation": "none", "alpha": 0.0})]:
        ins = [x, x] if op == "add" else [x]
        with pytest.raises(ValueError, match="overlap"):
            get_kernel(op)(ins, [out], attrs)


def test_size_mismatch_rejected():
    with pytest.raises(ValueError, match="elements"):
        get_kernel("relu")([np.zeros((2, 3), np.float32)], [np.zeros((2, 4), np.float32)], {})
