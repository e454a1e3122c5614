"""Linear and Concat CPU kernels vs PyTorch (float64 oracle)."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime.cpu.linear import CONCAT_PARALLEL_MIN
from runtime.registry import get_kernel
from tests.helpers import rel_err, rng, run_kernel

ACTS = ["none", "relu", "leaky_relu", "sigmoid", "tanh"]


def t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def torch_act(z: torch.Tensor, act: str, alpha: float) -> torch.Tensor:
    return {"none": lambda v: v, "relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
            "leaky_relu": lambda v: F.leaky_relu(v, alpha)}[act](z)


def linear_case(n: int, f: int, o: int, bias: bool, act: str, res: bool, seed: int = 0):
    """Inputs, attrs and the float64 reference of one Linear node."""
    r = rng(seed + n * 1000 + f + o)
    x = r.standard_normal((n, f)).astype(np.float32)
    w = (r.standard_normal((o, f)) / np.sqrt(f)).astype(np.float32)
    b = r.standard_normal(o).astype(np.float32)
    ins = [x, w] + ([b] if bias else [])
    ref = F.linear(t(x), t(w), t(b) if bias else None)
    if res:
        rr = r.standard_normal((n, o)).astype(np.float32)
        ref = ref + t(rr)
        ins.append(rr)
    attrs = dict(out_features=o, bias=bias, activation=act, alpha=0.3, residual=res)
    return ins, attrs, torch_act(ref, act, 0.3).numpy()


# (N, F, O): batch 1, odd sizes, large F, and outputs past the parallel-epilogue threshold
SIZES = [(1, 5, 3), (7, 33, 10), (1, 4096, 1000), (64, 400, 120), (2, 4096, 17),
         (300, 64, 301)]


@pytest.mark.parametrize("n,f,o", SIZES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("res", [False, True])
@pytest.mark.parametrize("act", ACTS)
def test_linear(n, f, o, bias, act, res):
    ins, attrs, ref = linear_case(n, f, o, bias, act, res)
    tol = 1e-5 if f < 1000 else 1e-4  # float32 accumulation over 4096 terms
    assert rel_err(run_kernel("linear", ins, ref.shape, attrs), ref) < tol


@pytest.mark.parametrize("act", ACTS)
def test_linear_nan_inf_propagate(act):
    """NaN and inf in x or the bias propagate as in PyTorch (NaN rows stay NaN)."""
    ins, attrs, _ = linear_case(4, 9, 6, True, act, True)
    ins[0][1, 3] = np.nan
    ins[0][2, 0] = np.inf
    ins[2][5] = -np.inf  # bias
    ref = torch_act(F.linear(t(ins[0]), t(ins[1]), t(ins[2])) + t(ins[3]), act, 0.3).numpy()
    got = run_kernel("linear", ins, ref.shape, attrs)
    assert np.isnan(got[1]).all()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    inf = np.isinf(ref)
    np.testing.assert_array_equal(got[inf], ref[inf])
    fin = np.isfinite(ref)
    assert rel_err(got[fin], ref[fin]) < 1e-5


def test_linear_allocates_nothing_per_call():
    """BLAS writes the output buffer directly; run() makes no array-sized temporaries."""
    for bias, act, res in [(False, "none", False), (True, "relu", True)]:
        ins, attrs, ref = linear_case(64, 300, 500, bias, act, res)
        out = np.empty(ref.shape, np.float32)
        run = get_kernel("linear")(ins, [out], attrs)
        run()
        tracemalloc.start()
        run()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 4096, f"run() allocated {peak} bytes (output is {out.nbytes})"
        assert rel_err(out, ref) < 1e-5


def test_linear_rejects_bad_binding():
    ins, attrs, ref = linear_case(3, 8, 5, True, "none", True)
    with pytest.raises(ValueError, match="inputs"):
        get_kernel("linear")(ins[:3], [np.empty(ref.shape, np.float32)], attrs)
    with pytest.raises(ValueError, match="disagree"):
        get_kernel("linear")(ins, [np.empty((3, 6), np.float32)], attrs)
    with pytest.raises(ValueError, match="share memory"):  # output over the residual
        get_kernel("linear")(ins, [ins[-1]], attrs)


# ---------------------------------------------------------------- concat

def concat_inputs(base: tuple, axis: int, extents: list[int], seed: int) -> list[np.ndarray]:
    r = rng(seed)
    xs = []
    for e in extents:
        shape = list(base)
        shape[axis] = e
        xs.append(r.standard_normal(shape).astype(np.float32))
    return xs


def check_concat(xs: list[np.ndarray], axis: int) -> None:
    ref = torch.cat([torch.tensor(x) for x in xs], dim=axis).numpy()
    np.testing.assert_array_equal(run_kernel("concat", xs, ref.shape, {"axis": axis}), ref)


EXTENTS = {1: [[3], [3, 5], [1, 4, 2]], 2: [[7], [2, 7], [5, 1, 3]], 3: [[9], [9, 4], [1, 2, 6]]}


@pytest.mark.parametrize("axis", [1, 2, 3])
@pytest.mark.parametrize("k", [0, 1, 2])
@pytest.mark.parametrize("base", [(1, 3, 5, 7), (3, 2, 4, 5)])
def test_concat_rank4(base, axis, k):
    check_concat(concat_inputs(base, axis, EXTENTS[axis][k], axis * 10 + k), axis)


@pytest.mark.parametrize("extents", [[5], [3, 8], [1, 7, 2]])
@pytest.mark.parametrize("n", [1, 4])
def test_concat_rank2(n, extents):
    check_concat(concat_inputs((n, 1), 1, extents, len(extents)), 1)


@pytest.mark.parametrize("base,axis,extents", [
    ((1, 0, 56, 57), 1, [64, 32, 33]),       # batch 1: rows split into chunks across threads
    ((8, 0, 28, 29), 1, [48, 17]),          # many images: one task per image
    ((2, 24, 0, 57), 2, [30, 27, 1]),
    ((2, 24, 57, 0), 3, [31, 1, 29]),       # tiny blocks, many rows
    ((1, 0), 1, [150000, 3, 12345]),        # rank 2, batch 1, long rows
    ((9, 0), 1, [9000, 1, 10001]),
])
def test_concat_large(base, axis, extents):
    """Outputs past the parallel threshold, where the row/column task split matters."""
    assert np.prod([e or sum(extents) for e in base]) >= CONCAT_PARALLEL_MIN
    check_concat(concat_inputs(base, axis, extents, sum(extents)), axis)


def test_concat_copies_nan_inf():
    xs = concat_inputs((2, 3, 4, 5), 1, [2, 3], 0)
    xs[0][1, 1, 2, 3] = np.nan
    xs[1][0, 2, 0, 0] = -np.inf
    check_concat(xs, 1)  # assert_array_equal treats NaN as equal to NaN


def test_concat_rejects_bad_binding():
    xs = concat_inputs((2, 3, 4, 5), 2, [2, 3], 0)
    with pytest.raises(ValueError, match="add up"):
        get_kernel("concat")(xs, [np.empty((2, 3, 6, 5), np.float32)], {"axis": 2})
    with pytest.raises(ValueError, match="does not fit"):
        get_kernel("concat")(xs, [np.empty((2, 3, 5, 5), np.float32)], {"axis": 1})
    with pytest.raises(ValueError, match="out of range"):
        get_kernel("concat")(xs, [np.empty((4, 3, 4, 5), np.float32)], {"axis": 0})
