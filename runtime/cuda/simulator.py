"""Make numba-cuda's CUDA simulator safe for the shared-memory kernels (simulator only).

The simulator runs each CUDA thread of a block as a Python thread. A kernel's
``cuda.shared.array(...)`` call is meant to return ONE array per block, found by the
caller's (file, line) in a dict, but the lookup and the insertion of the first array are
not under a lock (numba-cuda 0.30, ``FakeCUDAShared.array``): when the interpreter
switches threads between them, two threads of a block each create their own "shared"
array, and the block silently computes garbage. In the test suite this hit a tiled GEMM
about once in a few full runs. ``install()`` replaces that method with the same lookup
under a lock; it also finds the caller with ``sys._getframe`` instead of formatting the
whole stack, which makes every shared-memory kernel start faster.
"""
from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

_LOCK = threading.Lock()
_installed = False


def install() -> bool:
    """Patch the simulator (idempotent); False when its internals are not as expected."""
    global _installed
    if _installed:
        return True
    try:
        from numba.cuda.np import numpy_support
        from numba.cuda.simulator.kernelapi import FakeCUDAShared
        from numba.cuda import types
    except ImportError:
        return False
    original = getattr(FakeCUDAShared, "array", None)
    if original is None:
        return False

    def array(self: Any, shape: Any, dtype: Any, alignment: Any = None) -> np.ndarray:
        allocations = getattr(self, "_allocations", None)
        if shape == 0 or alignment is not None or allocations is None:
            return original(self, shape, dtype, alignment)  # dynamic shared memory, errors
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with _LOCK:
            res = allocations.get(caller)
            if res is None:
                if isinstance(dtype, types.Type):
                    dtype = numpy_support.as_dtype(dtype)
                res = allocations[caller] = np.empty(shape, dtype)
        return res

    FakeCUDAShared.array = array
    _installed = True
    return True
