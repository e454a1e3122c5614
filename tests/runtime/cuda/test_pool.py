"""Pooling CUDA kernels (simulator, tiny shapes) vs torch (float64) and the CPU kernels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import rel_err, rng, run_kernel
from tests.runtime.cuda.util import require_cuda_or_skip, run_cuda_kernel

require_cuda_or_skip()


def _t(a):
    return torch.tensor(a, dtype=torch.float64)


def _both(op, x, shape, attrs, **kw):
    return run_cuda_kernel(op, [x], shape, attrs, **kw), run_kernel(op, [x], shape, attrs)


@pytest.mark.parametrize("k,s,p,d,ceil", [
    (2, 2, 0, 1, False),
    (3, 2, 1, 1, False),
    (3, 2, 1, 1, True),      # ceil_mode: the last window runs past the input
    (3, 1, 1, 2, False),     # dilation
    (2, 3, 0, 1, True),
])
def test_max_pool(k, s, p, d, ceil):
    x = rng(0).standard_normal((2, 3, 7, 6)).astype(np.float32)
    ref = F.max_pool2d(_t(x), k, s, p, d, ceil_mode=ceil).numpy()
    attrs = dict(kernel_size=(k, k), stride=(s, s), padding=(p, p, p, p), dilation=(d, d),
                 ceil_mode=ceil)
    y, cpu = _both("max_pool2d", x, ref.shape, attrs)
    assert rel_err(y, ref) == 0 and np.array_equal(y, cpu)


def test_max_pool_nan_wins():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 0] = np.nan
    attrs = dict(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0, 0, 0), dilation=(1, 1),
                 ceil_mode=False)
    y = run_cuda_kernel("max_pool2d", [x], (1, 1, 2, 2), attrs)
    assert np.isnan(y[0, 0, 0, 0]) and (y.ravel()[1:] == 0).all()


@pytest.mark.parametrize("k,s,pads,ceil,cip", [
    (2, 2, (0, 0, 0, 0), False, True),
    (3, 2, (1, 1, 1, 1), False, True),
    (3, 2, (1, 1, 1, 1), True, False),
    (3, 2, (1, 0, 1, 0), True, True),
    (2, 1, (1, 1, 1, 1), False, False),
])
def test_avg_pool(k, s, pads, ceil, cip):
    x = rng(1).standard_normal((2, 2, 7, 6)).astype(np.float32)
    ph, pw = pads[0], pads[1]
    ref = F.avg_pool2d(_t(x), k, s, (ph, pw), ceil_mode=ceil, count_include_pad=cip).numpy()
    attrs = dict(kernel_size=(k, k), stride=(s, s), padding=pads, ceil_mode=ceil,
                 count_include_pad=cip)
    y, cpu = _both("avg_pool2d", x, ref.shape, attrs)
    assert rel_err(y, ref) < 1e-6 and rel_err(y, cpu) < 1e-6


@pytest.mark.parametrize("p,k,s,ceil", [(2.0, 2, 2, False), (3.0, 3, 2, False),
                                        (2.0, 3, 2, True), (1.5, 2, 1, False)])
def test_lp_pool(p, k, s, ceil):
    x = np.abs(rng(2).standard_normal((2, 2, 6, 7))).astype(np.float32)
    ref = F.lp_pool2d(_t(x), p, k, s, ceil_mode=ceil).numpy()
    attrs = dict(norm_type=p, kernel_size=(k, k), stride=(s, s), ceil_mode=ceil)
    y, cpu = _both("lp_pool2d", x, ref.shape, attrs)
    assert rel_err(y, ref) < 1e-5 and rel_err(y, cpu) < 1e-5


@pytest.mark.parametrize("hw,block", [((3, 4), None), ((3, 4), True), ((9, 10), None)])
def test_global_avg_pool(hw, block):
    # (9, 10) = 90 elements per plane takes the block-reduction path by default
    x = rng(3).standard_normal((2, 3) + hw).astype(np.float32)
    ref = _t(x).mean(dim=(2, 3)).numpy()
    y = run_cuda_kernel("global_avg_pool2d", [x], (2, 3), {}, block=block)
    assert rel_err(y, ref) < 1e-6
    assert rel_err(y, run_kernel("global_avg_pool2d", [x], (2, 3), {})) < 1e-6
