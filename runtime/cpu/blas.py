"""Matrix products that kernels hand to numpy's BLAS: small ones on one BLAS thread.

BLAS keeps its own worker threads beside Numba's pool. Right after a parallel kernel,
the pool's worker still spins (waiting for the next one) when a product wakes BLAS's
worker: three busy threads on a 2-core machine, and a product whose half waits for the
scheduler stalls the step by a time slice (10-25 ms spikes). Run alone, a small
product is about as fast on one thread. LeNet-5's training step at batch 64 (nine
products of 0.1-6 MFLOP), 40 interleaved rounds of the benchmark's protocol in a busy
phase of this VM: median 10.7 ms (90th percentile 15.0) with BLAS as it is, 6.8 ms
(11.2) with this module, 6.2 ms (8.7) with BLAS on one thread throughout; in a quiet
phase the three were within 10%. Products after a parallel kernel, one thread against
two (Zen 4, 30 rounds): 6 MFLOP 0.17 vs 0.19 ms, 17 MFLOP 0.31 vs 0.26 ms, 75 MFLOP
0.95 vs 0.57 ms; hence the threshold. Setting the limit costs ~1-3 us a call, so the
products OpenBLAS runs on one thread anyway are left alone.

Under Numba's OpenMP layer (runtime/cpu's default) the pool's thread spins after every
region for longer, and a 2-thread product started right after one waited for it (67
MFLOP: 3.3 ms against 0.44 ms). There every product runs on one BLAS thread: LeNet-5's
training step at batch 64 (a 31 MFLOP product after an im2col kernel), 40 rounds x 2:
median 2.9-3.5 ms either way, but 90th percentile 6.5-11.8 ms with two BLAS threads for
the large products against 3.4-4.0 ms with one; ResNet-18's step 644 vs 652 ms (median).

The limit is set through threadpoolctl for each call and restored after it. It changes
a process-wide setting of OpenBLAS, so threadpoolctl lets only one Python thread set it;
calls from other threads run with BLAS's own setting.
"""
from __future__ import annotations

from typing import Any

import numba
import numpy as np

# products below this run on one BLAS thread (all of them under the OpenMP layer)
SERIAL_MAX_FLOPS = float("inf") if numba.config.THREADING_LAYER == "omp" else 1e7
SERIAL_ANYWAY_FLOPS = 2 * 65536 * 4  # OpenBLAS runs products this small on one thread itself

_libs: list[Any] | None = None


def _blas_libs() -> list[Any]:
    """threadpoolctl's controllers of the BLAS libraries loaded (numpy's), found once."""
    global _libs
    if _libs is None:
        try:
            from threadpoolctl import ThreadpoolController
            _libs = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:  # threadpoolctl missing or unable to read a library: BLAS as is
            _libs = []
    return _libs


def dot(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``np.dot(a, b, out=out)`` for 2-D operands, on one BLAS thread when it is small."""
    flops = 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
    if flops >= SERIAL_MAX_FLOPS or flops < SERIAL_ANYWAY_FLOPS:
        np.dot(a, b, out=out)
        return
    libs = _blas_libs()
    prev = [lib.get_num_threads() for lib in libs]
    for lib in libs:
        lib.set_num_threads(1)
    try:
        np.dot(a, b, out=out)
    finally:
        for lib, n in zip(libs, prev):
            if n is not None:
                lib.set_num_threads(n)
