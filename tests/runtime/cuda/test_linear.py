"""linear and concat CUDA kernels (simulator, tiny shapes) vs torch and the CPU kernels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import rel_err, rng, run_kernel
from tests.runtime.cuda.util import require_cuda_or_skip, run_cuda_kernel, to_device

require_cuda_or_skip()

ACTS = {"none": lambda t: t, "relu": F.relu, "leaky_relu": lambda t: F.leaky_relu(t, 0.2),
        "sigmoid": torch.sigmoid, "tanh": torch.tanh}


def linear_case(n, f, o, bias=True, act="none", res=False, seed=0, tile=None):
    r = rng(seed)
    x = r.standard_normal((n, f)).astype(np.float32)
    w = r.standard_normal((o, f)).astype(np.float32)
    b = r.standard_normal(o).astype(np.float32)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    ref = F.linear(t(x), t(w), t(b) if bias else None)
    ins = [x, w] + ([b] if bias else [])
    if res:
        resid = r.standard_normal((n, o)).astype(np.float32)
        ref = ref + t(resid)
        ins.append(resid)
    ref = ACTS[act](ref).numpy()
    attrs = dict(out_features=o, bias=bias, activation=act,
                 alpha=0.2 if act == "leaky_relu" else 0.0, residual=res)
    y = run_cuda_kernel("linear", ins, (n, o), attrs, tile=tile)
    return y, run_kernel("linear", ins, (n, o), attrs), ref


@pytest.mark.parametrize("case", [
    dict(n=2, f=16, o=10),                       # LeNet's last layer
    dict(n=1, f=37, o=5, bias=False),            # batch 1, K not a multiple of 16
    dict(n=3, f=20, o=40, act="relu"),           # partial feature tiles
    dict(n=2, f=8, o=6, act="leaky_relu", res=True),
    dict(n=2, f=9, o=3, act="sigmoid"),
    dict(n=2, f=9, o=3, act="tanh", res=True, bias=False),
    dict(n=20, f=5, o=3),                        # more rows than features
])
def test_linear_grid(case):
    y, cpu, ref = linear_case(**case)
    assert rel_err(y, ref) < 1e-5
    assert rel_err(y, cpu) < 1e-5


@pytest.mark.parametrize("tile", [(1, 1), (2, 2), (4, 1), (1, 2)])
def test_linear_every_register_tile(tile):
    y, cpu, ref = linear_case(18, 21, 35, act="relu", res=True, seed=3, tile=tile)
    assert rel_err(y, ref) < 1e-5


def test_linear_rejects_aliased_output_and_bad_shapes():
    from runtime.registry import get_kernel
    bind = get_kernel("linear", "cuda")
    x = to_device(np.zeros((2, 4), np.float32))
    w = to_device(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="share memory"):
        bind([x, w], [x], dict(out_features=4, bias=False))
    with pytest.raises(ValueError, match="disagree"):
        bind([x, w], [to_device(np.zeros((2, 3), np.float32))], dict(out_features=3,
                                                                     bias=False))


@pytest.mark.parametrize("axis,shapes", [
    (1, [(2, 3, 4, 5), (2, 1, 4, 5), (2, 2, 4, 5)]),   # channels (inception)
    (2, [(2, 3, 2, 5), (2, 3, 3, 5)]),
    (3, [(1, 2, 3, 1), (1, 2, 3, 4)]),
    (1, [(3, 4), (3, 2)]),                             # rank 2
    (1, [(2, 3, 2, 2)]),                               # a single input
])
def test_concat(axis, shapes):
    r = rng(4)
    ins = [r.standard_normal(s).astype(np.float32) for s in shapes]
    want = np.concatenate(ins, axis=axis)
    y = run_cuda_kernel("concat", ins, want.shape, dict(axis=axis))
    assert np.array_equal(y, want)
    assert np.array_equal(y, run_kernel("concat", ins, want.shape, dict(axis=axis)))


def test_concat_launches_one_copy_per_input():
    from numba import cuda
    from runtime.registry import get_kernel
    ins = [to_device(np.zeros((2, c, 2, 2), np.float32)) for c in (1, 2, 3)]
    run = get_kernel("concat", "cuda")(ins, [cuda.device_array((2, 6, 2, 2), np.float32)],
                                       dict(axis=1))
    assert [c.kernel for c in run.launches] == ["concat_copy"] * 3
