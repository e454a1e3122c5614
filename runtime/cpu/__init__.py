"""CPU kernels (Numba). Importing this package registers every CPU kernel.

Threading layer, measured on the 2-core development machine (see README "Performance"):
  * "omp" starts a parallel region in ~2-10 us but its threads spin-wait afterwards,
    starving the BLAS threads our GEMM-based kernels call next (a 3x3 conv at batch 32
    ran 5-6x slower) and PyTorch's in the same process;
  * "workqueue" never spins but costs ~100-130 us per parallel region;
  * "tbb" costs ~2-5 us per region and yields: BLAS and PyTorch keep full speed.
So we use TBB (the `tbb` wheel, a dependency) unless the user chose a layer with
NUMBA_THREADING_LAYER; without TBB we fall back to "workqueue".
"""
import ctypes
import glob
import os
import sys

import numba


def _select_threading_layer() -> str:
    if "NUMBA_THREADING_LAYER" in os.environ:
        return os.environ["NUMBA_THREADING_LAYER"]
    # the tbb wheel puts libtbb in <env>/lib, which the loader does not search: load it
    # by path so Numba's TBB pool finds it
    for lib in sorted(glob.glob(os.path.join(sys.prefix, "lib", "libtbb.so.12*"))):
        try:
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            return "tbb"
        except OSError:
            continue
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401  (system-wide TBB)
        return "tbb"
    except ImportError:
        return "workqueue"


numba.config.THREADING_LAYER = _select_threading_layer()

from .jit import drop_stale_caches  # noqa: E402

drop_stale_caches()  # before any kernel module loads its cached kernels

from . import (conv, conv_blocked, elementwise, layout, linear, norm,  # noqa: E402,F401
               pool)  # (each registers its kernels on import)
from . import nhwc  # noqa: E402,F401  (channels-last kernels)
from . import (grad_conv, grad_elementwise, grad_norm, grad_pool,  # noqa: E402,F401
               optim)  # training: backward, loss and optimizer-update kernels
from . import comm  # noqa: E402,F401  (data-parallel collectives; mpi4py only when run)
from . import onnx_ops  # noqa: E402,F401  (ops of imported ONNX models)
