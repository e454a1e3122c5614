"""Can the CUDA target run here? One answer, shared by the compiler, the kernels and tools.

Kept outside ``runtime.cuda`` so that asking never imports (or fails to import) the
kernels. ``numba.cuda`` decides at its first import whether it is the real driver or the
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), so the simulator must be chosen in the
environment before anything imports numba.cuda.
"""
from __future__ import annotations

import os
from typing import Optional

INSTALL_HINT = ("install the maintained CUDA target with `pip install 'cnncomp[cuda]'` "
                "(the numba-cuda package)")
SIMULATOR_HINT = ("to run the CUDA kernels without a GPU (slowly, for tests on tiny shapes) "
                  "set NUMBA_ENABLE_CUDASIM=1 in the environment before Python starts")


class CudaUnavailableError(RuntimeError):
    """The CUDA target cannot run: numba-cuda is missing, or there is no GPU and the
    CUDA simulator is off. The message says which and how to fix it."""


def simulator_enabled() -> bool:
    """Does numba.cuda run the CUDA simulator? Once numba.cuda is imported its choice is
    final, so ask it; before that, the environment decides."""
    import sys
    cuda = sys.modules.get("numba.cuda")
    if cuda is not None and hasattr(cuda, "is_available"):
        return cuda.is_available.__module__.endswith("simulator_init")
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0").strip() not in ("", "0")


def unavailable_reason() -> Optional[str]:
    """None when CUDA kernels can run (a GPU, or the simulator); otherwise why not."""
    try:
        from numba import cuda
    except ImportError as e:
        return f"the CUDA target needs numba.cuda, which failed to import ({e}); {INSTALL_HINT}"
    if getattr(cuda, "implementation", "Built-in") != "NVIDIA":
        return (f"the CUDA target needs the maintained numba-cuda package, but numba's "
                f"deprecated built-in numba.cuda was found; {INSTALL_HINT}")
    if simulator_enabled():
        return None
    try:
        ok = cuda.is_available()
    except Exception as e:  # a broken driver install raises instead of answering
        return (f"no usable CUDA GPU: the CUDA driver failed ({e}); {SIMULATOR_HINT}")
    if not ok:
        return f"no CUDA GPU was found on this machine (numba.cuda.is_available() is False); " \
               f"{SIMULATOR_HINT}"
    return None


def require_cuda() -> None:
    """Raise CudaUnavailableError with a clear message unless CUDA kernels can run."""
    reason = unavailable_reason()
    if reason is not None:
        raise CudaUnavailableError(reason)


def device_description() -> str:
    """'NVIDIA H100 ... (compute 9.0)', or 'CUDA simulator' (call only when available)."""
    if simulator_enabled():
        return "CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
    from numba import cuda
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    return f"{name} (compute {dev.compute_capability[0]}.{dev.compute_capability[1]})"
