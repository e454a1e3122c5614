"""The simulator fix in runtime.cuda.simulator: one shared array per call site and block."""
from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.cuda.util import on_simulator, require_cuda_or_skip

require_cuda_or_skip()

import runtime.cuda  # noqa: E402,F401  (installs the fix)
from numba import cuda, float32  # noqa: E402  (a module global: the simulator swaps it)

pytestmark = pytest.mark.skipif(not on_simulator(), reason="about the CUDA simulator only")


def test_shared_arrays_are_one_per_call_site_and_block():
    from numba.cuda.simulator.kernelapi import FakeCUDAShared
    assert FakeCUDAShared.array.__module__ == "runtime.cuda.simulator"

    @cuda.jit
    def reverse_twice(x, out):
        a = cuda.shared.array(32, float32)
        b = cuda.shared.array(32, float32)  # same shape, another line: another array
        t = cuda.threadIdx.x
        a[t] = x[cuda.blockIdx.x, t]
        b[t] = -x[cuda.blockIdx.x, t]
        cuda.syncthreads()
        out[cuda.blockIdx.x, t] = a[31 - t] + 10 * b[t]

    x = np.arange(64, dtype=np.float32).reshape(2, 32)
    out = np.zeros_like(x)
    reverse_twice[2, 32](x, out)
    np.testing.assert_array_equal(out, x[:, ::-1] - 10 * x)
