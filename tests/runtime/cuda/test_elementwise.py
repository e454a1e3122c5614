"""Elementwise CUDA kernels (simulator): activations, add, dropout/flatten copies, in place."""
from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import rng, run_kernel
from tests.runtime.cuda.util import require_cuda_or_skip, run_cuda_kernel, to_device

require_cuda_or_skip()

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 80.0, -80.0, 3.5],
                   np.float32)


def _x(shape=(2, 3, 4, 5), seed=0):
    x = rng(seed).standard_normal(shape).astype(np.float32) * 3
    x.ravel()[:SPECIAL.size] = SPECIAL
    return x


@pytest.mark.parametrize("op,attrs", [("relu", {}), ("sigmoid", {}), ("tanh", {}),
                                      ("leaky_relu", {"negative_slope": 0.2}),
                                      ("leaky_relu", {"negative_slope": -1.5})])
def test_activation_matches_cpu_including_nan_inf(op, attrs):
    x = _x()
    y = run_cuda_kernel(op, [x], x.shape, attrs)
    np.testing.assert_allclose(y, run_kernel(op, [x], x.shape, attrs), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("n,act", [(2, "none"), (2, "relu"), (3, "leaky_relu"), (4, "tanh"),
                                   (5, "sigmoid")])
def test_add(n, act):
    xs = [_x((2, 3, 3), seed=k) for k in range(n)]
    attrs = dict(activation=act, alpha=0.1)
    y = run_cuda_kernel("add", xs, xs[0].shape, attrs)
    np.testing.assert_allclose(y, run_kernel("add", xs, xs[0].shape, attrs), rtol=1e-6,
                               atol=1e-7)


@pytest.mark.parametrize("n", [2, 3])
def test_add_in_place_over_each_input(n):
    from runtime.registry import get_kernel
    xs = [_x((4, 5), seed=10 + k) for k in range(n)]
    want = run_kernel("add", xs, (4, 5), dict(activation="relu"))
    for k in range(n):
        d = [to_device(a) for a in xs]
        get_kernel("add", "cuda")(d, [d[k]], dict(activation="relu"))()
        np.testing.assert_allclose(d[k].copy_to_host(), want, rtol=1e-6)


def test_unary_in_place():
    from runtime.registry import get_kernel
    x = _x((3, 7))
    d = to_device(x)
    get_kernel("tanh", "cuda")([d], [d], {})()
    np.testing.assert_allclose(d.copy_to_host(), np.tanh(x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("op", ["dropout", "flatten"])
def test_copies_and_in_place_no_op(op):
    from runtime.registry import get_kernel
    x = _x((2, 3, 2, 2))
    y = run_cuda_kernel(op, [x], (2, 12) if op == "flatten" else x.shape, dict(p=0.5))
    assert np.array_equal(y.reshape(x.shape), x, equal_nan=True)
    d = to_device(x)
    run = get_kernel(op, "cuda")([d], [d], {})
    assert run.launches == []  # in place: nothing to move
    run()


def test_partial_overlap_is_rejected():
    from runtime.registry import get_kernel
    d = to_device(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="partially overlaps"):
        get_kernel("relu", "cuda")([d[0:8]], [d[2:10]], {})
    with pytest.raises(ValueError, match="elements"):
        get_kernel("add", "cuda")([d[0:4], d[4:9]], [to_device(np.zeros(4, np.float32))], {})
