"""Linear and Concat CPU kernels vs torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import rel_err, rng, run_kernel


def t(a):
    return torch.tensor(a, dtype=torch.float64)


@pytest.mark.parametrize("n,f,o", [(1, 5, 3), (7, 33, 10), (64, 400, 120), (2, 4096, 17)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act,res", [("none", False), ("relu", False), ("tanh", True),
                                     ("leaky_relu", True)])
def test_linear(n, f, o, bias, act, res):
    r = rng(n)
    x = r.standard_normal((n, f)).astype(np.float32)
    w = r.standard_normal((o, f)).astype(np.float32)
    b = r.standard_normal(o).astype(np.float32)
    ref = F.linear(t(x), t(w), t(b) if bias else None)
    ins = [x, w] + ([b] if bias else [])
    if res:
        rr = r.standard_normal((n, o)).astype(np.float32)
        ref = ref + t(rr)
        ins.append(rr)
    acts = {"none": lambda z: z, "relu": F.relu, "tanh": torch.tanh,
            "leaky_relu": lambda z: F.leaky_relu(z, 0.3)}
    ref = acts[act](ref).numpy()
    attrs = dict(out_features=o, bias=bias, activation=act, alpha=0.3, residual=res)
    tol = 1e-5 if f < 1000 else 1e-4  # float32 accumulation over 4096 terms
    assert rel_err(run_kernel("linear", ins, ref.shape, attrs), ref) < tol


@pytest.mark.parametrize("axis", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_concat_rank4(axis, k):
    r = rng(axis * 10 + k)
    xs = []
    for i in range(k):
        shape = [2, 3, 4, 5]
        shape[axis] = i + 1
        xs.append(r.standard_normal(shape).astype(np.float32))
    ref = torch.cat([torch.tensor(x) for x in xs], dim=axis).numpy()
    np.testing.assert_array_equal(run_kernel("concat", xs, ref.shape, {"axis": axis}), ref)


def test_concat_rank2():
    xs = [rng(i).standard_normal((3, i + 2)).astype(np.float32) for i in range(3)]
    ref = np.concatenate(xs, axis=1)
    np.testing.assert_array_equal(run_kernel("concat", xs, ref.shape, {"axis": 1}), ref)
