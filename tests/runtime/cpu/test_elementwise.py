"""Activations, add, dropout/flatten copies vs torch; in-place operation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime.registry import get_kernel
from tests.helpers import rel_err, rng, run_kernel

UNARY = {"relu": (F.relu, {}), "sigmoid": (torch.sigmoid, {}), "tanh": (torch.tanh, {}),
         "leaky_relu": (lambda x: F.leaky_relu(x, 0.05), {"negative_slope": 0.05})}
SHAPES = [(3, 7), (1, 3, 5, 5), (8, 16, 32, 33)]  # the last takes the parallel path


def t(a):
    return torch.tensor(a, dtype=torch.float64)


@pytest.mark.parametrize("op", list(UNARY))
@pytest.mark.parametrize("shape", SHAPES)
def test_unary(op, shape):
    fn, attrs = UNARY[op]
    x = (rng(1).standard_normal(shape) * 4).astype(np.float32)
    x.ravel()[:4] = [100.0, -100.0, np.inf, -np.inf]
    ref = fn(t(x)).numpy()
    y = run_kernel(op, [x], shape, attrs)
    buf = x.copy()
    get_kernel(op)([buf], [buf], attrs)()  # in place
    for got in (y, buf):
        np.testing.assert_array_equal(got.ravel()[2:4], ref.ravel()[2:4])  # +-inf exactly
        assert rel_err(got.ravel()[4:], ref.ravel()[4:]) < 1e-6
        assert rel_err(got.ravel()[:2], ref.ravel()[:2]) < 1e-6


@pytest.mark.parametrize("op", list(UNARY))
def test_unary_nan(op):
    fn, attrs = UNARY[op]
    x = np.array([[np.nan, 1.0, -1.0]], np.float32)
    y = run_kernel(op, [x], x.shape, attrs)
    assert np.isnan(y[0, 0]) and np.isfinite(y[0, 1:]).all()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("act", ["none", "relu"])
def test_add(shape, n, act):
    xs = [rng(i).standard_normal(shape).astype(np.float32) for i in range(n)]
    ref = sum(t(x) for x in xs)
    ref = (F.relu(ref) if act == "relu" else ref).numpy()
    attrs = {"activation": act, "alpha": 0.0}
    assert rel_err(run_kernel("add", xs, shape, attrs), ref) < 1e-6
    for k in range(n):  # the output may alias any input
        bufs = [x.copy() for x in xs]
        get_kernel("add")(bufs, [bufs[k]], attrs)()
        assert rel_err(bufs[k], ref) < 1e-6


@pytest.mark.parametrize("op", ["dropout", "flatten"])
def test_copies(op):
    x = rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    out_shape = x.shape if op == "dropout" else (2, 60)
    y = run_kernel(op, [x], out_shape, {"p": 0.5} if op == "dropout" else {})
    np.testing.assert_array_equal(y, torch.flatten(torch.tensor(x), 1).numpy().reshape(out_shape))
