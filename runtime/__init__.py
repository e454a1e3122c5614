"""cnncomp runtime: kernels (per target), the kernel registry, the arena and the executor.

This package never imports ``cnncomp`` or ``frontend``: it runs an explicit program of
kernel calls over buffers that the compiler hands it.
"""
import os as _os
import sys as _sys
import warnings as _warnings

# OpenBLAS's worker threads busy-wait for 2^28 cycles (~0.1 s) after every matrix product,
# on the very cores the next Numba kernel needs: im2col -> GEMM -> epilogue chains (NCHW
# and NHWC convs, every training step) ran 1.3-1.9x slower (LeNet-5 training step b64:
# 26-28 ms default, 14-17 ms with a 16-cycle timeout; ResNet-18 NHWC b32: 540-670 vs
# 350-420 ms, on a 2-core Zen 3). OpenBLAS reads the setting once, when numpy loads it.
if "numpy" in _sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in _os.environ:
    _warnings.warn(
        "numpy was imported before cnncomp, so its OpenBLAS threads busy-wait ~0.1 s after "
        "every matrix product and slow down cnncomp's next kernels (1.3-1.9x measured on "
        "GEMM-heavy models and training). Import cnncomp (or frontend) before numpy, or "
        "set OPENBLAS_THREAD_TIMEOUT=4 in the environment.", RuntimeWarning, stacklevel=2)
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .registry import KernelKey, KernelNotFoundError, get_kernel, register_kernel, registered

__all__ = ["KernelKey", "KernelNotFoundError", "get_kernel", "register_kernel", "registered"]
