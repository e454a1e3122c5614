"""batch_norm, local_response_norm and softmax CUDA kernels (simulator) vs torch / CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import rel_err, rng, run_kernel
from tests.runtime.cuda.util import require_cuda_or_skip, run_cuda_kernel, to_device

require_cuda_or_skip()

ACTS = {"none": lambda t: t, "relu": F.relu, "leaky_relu": lambda t: F.leaky_relu(t, 0.1),
        "sigmoid": torch.sigmoid, "tanh": torch.tanh}


def _t(a):
    return torch.tensor(a, dtype=torch.float64)


def _bn_params(c, seed):
    r = rng(seed)
    return [r.normal(1, 0.3, c).astype(np.float32), r.normal(0, 0.3, c).astype(np.float32),
            r.normal(0, 0.3, c).astype(np.float32), r.uniform(0.5, 1.5, c).astype(np.float32)]


@pytest.mark.parametrize("shape,act", [((2, 3, 4, 5), "none"), ((2, 3, 4, 5), "relu"),
                                       ((3, 5), "sigmoid"), ((1, 4, 3, 3), "leaky_relu"),
                                       ((2, 2, 3, 1), "tanh")])
def test_batch_norm(shape, act):
    x = rng(0).standard_normal(shape).astype(np.float32)
    w, b, m, v = _bn_params(shape[1], 1)
    ref = ACTS[act](F.batch_norm(_t(x), _t(m), _t(v), _t(w), _t(b), False, eps=1e-3)).numpy()
    attrs = dict(eps=1e-3, activation=act, alpha=0.1 if act == "leaky_relu" else 0.0)
    y = run_cuda_kernel("batch_norm", [x, w, b, m, v], shape, attrs)
    assert rel_err(y, ref) < 1e-6
    assert rel_err(y, run_kernel("batch_norm", [x, w, b, m, v], shape, attrs)) < 1e-6


def test_batch_norm_in_place_and_sees_updated_parameters():
    from runtime.registry import get_kernel
    x = rng(2).standard_normal((2, 3, 2, 2)).astype(np.float32)
    params = _bn_params(3, 3)
    d_x = to_device(x)
    d_p = [to_device(p) for p in params]
    run = get_kernel("batch_norm", "cuda")([d_x] + d_p, [d_x], dict(eps=1e-5))
    run()
    w, b, m, v = (_t(p) for p in params)
    ref = F.batch_norm(_t(x), m, v, w, b, False, eps=1e-5).numpy()
    assert rel_err(d_x.copy_to_host(), ref) < 1e-6
    # a parameter changed on the device after binding is used by the next run
    d_p[0].copy_to_device(np.full(3, 2.0, np.float32))
    d_x.copy_to_device(x)
    run()
    ref2 = F.batch_norm(_t(x), m, v, _t(np.full(3, 2.0)), b, False, eps=1e-5).numpy()
    assert rel_err(d_x.copy_to_host(), ref2) < 1e-6


@pytest.mark.parametrize("size,alpha,beta,k", [(1, 1e-2, 0.75, 1.0), (2, 1e-1, 0.5, 2.0),
                                               (3, 1e-1, 0.75, 1.0), (5, 1e-2, 0.75, 1.0)])
def test_local_response_norm(size, alpha, beta, k):
    x = rng(4).standard_normal((2, 6, 3, 2)).astype(np.float32)
    ref = F.local_response_norm(_t(x), size, alpha, beta, k).numpy()
    attrs = dict(size=size, alpha=alpha, beta=beta, k=k)
    y = run_cuda_kernel("local_response_norm", [x], x.shape, attrs)
    assert rel_err(y, ref) < 1e-6
    assert rel_err(y, run_kernel("local_response_norm", [x], x.shape, attrs)) < 1e-6


@pytest.mark.parametrize("shape", [(3, 10), (2, 4, 3, 2), (1, 1, 2, 2)])
def test_softmax(shape):
    x = (rng(5).standard_normal(shape) * 30).astype(np.float32)  # large logits: stability
    ref = torch.softmax(_t(x), dim=1).numpy()
    y = run_cuda_kernel("softmax", [x], shape, dict(axis=1))
    assert rel_err(y, ref) < 1e-6
    assert rel_err(y, run_kernel("softmax", [x], shape, dict(axis=1))) < 1e-6


def test_softmax_nan_row():
    x = np.zeros((2, 3), np.float32)
    x[0, 1] = np.nan
    y = run_cuda_kernel("softmax", [x], x.shape, dict(axis=1))
    assert np.isnan(y[0]).all() and np.allclose(y[1], 1 / 3)
