"""BatchNorm (inference), LocalResponseNorm and Softmax CPU kernels vs torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import rel_err, rng, run_kernel

ACTS = {"none": lambda x: x, "relu": F.relu, "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
        "sigmoid": torch.sigmoid, "tanh": torch.tanh}


def t(a):
    return torch.tensor(a, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (4, 16, 9, 9), (3, 5), (64, 8, 16, 16)])
@pytest.mark.parametrize("act", list(ACTS))
def test_batch_norm(shape, act):
    r = rng(len(shape))
    c = shape[1]
    x = r.standard_normal(shape).astype(np.float32)
    w, b, m = (r.standard_normal(c).astype(np.float32) for _ in range(3))
    v = r.uniform(0.2, 2, c).astype(np.float32)
    ref = ACTS[act](F.batch_norm(t(x), t(m), t(v), t(w), t(b), False, eps=1e-3)).numpy()
    attrs = dict(eps=1e-3, momentum=0.1, activation=act, alpha=0.2)
    assert rel_err(run_kernel("batch_norm", [x, w, b, m, v], shape, attrs), ref) < 1e-6
    # in place: the output is the input's memory
    from runtime.registry import get_kernel
    buf = x.copy()
    get_kernel("batch_norm")([buf, w, b, m, v], [buf], attrs)()
    assert rel_err(buf, ref) < 1e-6


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("c", [1, 3, 8])
def test_lrn(size, c):
    x = rng(size).standard_normal((2, c, 5, 4)).astype(np.float32) * 3
    ref = F.local_response_norm(t(x), size, alpha=1e-2, beta=0.75, k=2.0).numpy()
    attrs = dict(size=size, alpha=1e-2, beta=0.75, k=2.0)
    assert rel_err(run_kernel("local_response_norm", [x], x.shape, attrs), ref) < 1e-5


@pytest.mark.parametrize("shape", [(3, 10), (1, 1), (2, 5, 3, 4)])
@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_softmax(shape, scale):
    x = (rng(1).standard_normal(shape) * scale).astype(np.float32)
    ref = F.softmax(t(x), dim=1).numpy()
    assert rel_err(run_kernel("softmax", [x], shape, {"axis": 1}), ref) < 1e-5


def test_softmax_nan_row():
    x = np.zeros((2, 4), np.float32)
    x[0, 2] = np.nan
    y = run_kernel("softmax", [x], x.shape, {"axis": 1})
    assert np.isnan(y[0]).all() and np.allclose(y[1], 0.25)
