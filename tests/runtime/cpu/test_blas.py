"""runtime.cpu.blas: small products on one BLAS thread, the setting restored after."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.cpu import blas
from tests.helpers import rel_err, rng


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (64, 400, 120), (3, 7, 5), (256, 512, 128)])
def test_dot_against_float64(m, k, n):
    a = rng(m).standard_normal((m, k)).astype(np.float32)
    b = rng(n).standard_normal((n, k)).astype(np.float32).T  # F-ordered, as Linear's weight
    out = np.empty((m, n), np.float32)
    blas.dot(a, b, out)
    assert rel_err(out, a.astype(np.float64) @ b.astype(np.float64)) < 1e-5


def test_small_products_run_on_one_thread_and_restore(monkeypatch):
    libs = blas._blas_libs()
    if not libs or libs[0].get_num_threads() in (None, 1):
        pytest.skip("no BLAS whose threads threadpoolctl can set, or it runs one thread")
    monkeypatch.setattr(blas, "SERIAL_MAX_FLOPS", 1e7)  # the TBB layer's threshold
    before = [lib.get_num_threads() for lib in libs]
    seen = []
    real_dot = np.dot

    def spy(a, b, out=None):
        seen.append(libs[0].get_num_threads())
        return real_dot(a, b, out=out)
    monkeypatch.setattr(blas.np, "dot", spy)
    small = np.ones((64, 400), np.float32), np.ones((400, 120), np.float32)  # 6 MFLOP
    big = np.ones((256, 2048), np.float32), np.ones((2048, 256), np.float32)  # 268 MFLOP
    blas.dot(*small, np.empty((64, 120), np.float32))
    blas.dot(*big, np.empty((256, 256), np.float32))
    assert seen == [1, before[0]]
    assert [lib.get_num_threads() for lib in libs] == before

    def boom(a, b, out=None):
        raise ValueError("shapes")
    monkeypatch.setattr(blas.np, "dot", boom)
    with pytest.raises(ValueError):
        blas.dot(*small, np.empty((64, 120), np.float32))
    assert [lib.get_num_threads() for lib in libs] == before


def test_under_openmp_every_product_runs_on_one_blas_thread():
    # the OpenMP pool's spinning thread delayed a 2-thread product started right after a
    # region (LeNet-5 training steps' 90th percentile 2-3x the median)
    import numba
    assert (blas.SERIAL_MAX_FLOPS == float("inf")) == (numba.config.THREADING_LAYER == "omp")
