"""CPU kernels (Numba). Importing this package registers every CPU kernel.

Threading layer: OpenMP (GNU libgomp) when Numba can load it, else TBB, else workqueue;
NUMBA_THREADING_LAYER overrides. Measured on the 2-core development machine (README
"Threads"):
  * TBB yields between regions, but Numba's TBB layer opens a new task arena for every
    parallel region and the second thread joined it 20-40 us late: kernels under ~40 us
    (most of a batch-1 call) ran on one thread, some slower than their serial build;
  * OpenMP's threads spin between regions and take their share at once (a region of
    2 x 10 us: 11 us, TBB 23 us). MobileNet batch 1: 0.85x of TBB's time; batch 32
    networks and training within noise of TBB;
  * workqueue costs ~100 us per region.
GNU OpenMP cannot restart its threads in a forked child (Numba terminates a child that
tries), so a forked child runs the kernels on one thread (``_one_thread_after_fork``).
"""
import ctypes
import glob
import os
import sys

import numba


def _gnu_openmp() -> bool:
    try:
        from numba.np.ufunc import omppool
    except ImportError:  # no libgomp on this machine
        return False
    return getattr(omppool, "openmp_vendor", "") == "GNU"


def _load_tbb() -> bool:
    """Whether Numba's TBB layer can start: the tbb wheel puts libtbb in <env>/lib, which
    the loader does not search, so it is loaded by path first."""
    for lib in sorted(glob.glob(os.path.join(sys.prefix, "lib", "libtbb.so.12*"))):
        try:
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            return True
        except OSError:
            continue
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401  (system-wide TBB)
        return True
    except ImportError:
        return False


def _select_threading_layer() -> str:
    chosen = os.environ.get("NUMBA_THREADING_LAYER")
    if chosen:  # the user's choice; TBB (or Numba's safe/threadsafe/... picks) need libtbb
        if chosen not in ("omp", "workqueue"):
            _load_tbb()
        return chosen
    if _gnu_openmp():
        return "omp"
    return "tbb" if _load_tbb() else "workqueue"


def _one_thread_after_fork() -> None:
    """In a forked child of a process whose kernels ran on GNU OpenMP: the parent's
    OpenMP threads do not exist here, and a parallel region would wait for them forever
    (Numba terminates the child instead). One thread needs none of them: re-register
    the pool for this process with one thread, so kernels run serially and correctly."""
    from numba.np.ufunc import parallel
    if not parallel._is_initialized or parallel._threading_layer != "omp" or not _gnu_openmp():
        return
    from numba.np.ufunc import omppool
    ctypes.CFUNCTYPE(None, ctypes.c_int)(omppool.launch_threads)(1)
    numba.set_num_threads(1)


numba.config.THREADING_LAYER = _select_threading_layer()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_one_thread_after_fork)

from .jit import drop_stale_caches  # noqa: E402

drop_stale_caches()  # before any kernel module loads its cached kernels

from . import (conv, conv_blocked, elementwise, layout, linear, norm,  # noqa: E402,F401
               pool)  # (each registers its kernels on import)
from . import nhwc  # noqa: E402,F401  (channels-last kernels)
from . import (grad_conv, grad_elementwise, grad_norm, grad_pool,  # noqa: E402,F401
               optim)  # training: backward, loss and optimizer-update kernels
from . import comm  # noqa: E402,F401  (data-parallel collectives; mpi4py only when run)
from . import onnx_ops  # noqa: E402,F401  (ops of imported ONNX models)
