"""CPU kernels (Numba). Importing this package registers every CPU kernel.

Numba's OpenMP threading layer spin-waits after each parallel region, which starves the
BLAS threads our GEMM-based kernels (and PyTorch in the same process) call next: measured
here, a 3x3 conv at batch 32 ran 5.6x slower under "omp" than under "workqueue". So we
select "workqueue" unless the user chose a layer (NUMBA_THREADING_LAYER).
"""
import os

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

from . import conv, elementwise, linear, norm, pool  # noqa: E402,F401  (register on import)
