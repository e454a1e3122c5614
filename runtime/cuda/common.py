"""Shared pieces of the CUDA kernels: the activation epilogue, launches that remember
their configuration, and small device-array helpers.

Every binder returns a ``CudaRun``: a callable that launches its kernels in order on the
default stream (asynchronously; copies back to the host synchronize), and whose
``launches`` list records each kernel's name, grid and block for summaries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from numba import cuda

from ..cpu.activation import ACT_CODES, act_code  # noqa: F401  (one table of codes)

F32_ZERO = np.float32(0.0)
F32_ONE = np.float32(1.0)

THREADS = 256        # threads per block of the 1-D (elementwise-style) kernels
MAX_BLOCKS = 65535   # grid cap of the grid-stride kernels (they loop over the rest)


def _device_jit_options() -> dict:
    from ..cuda_status import simulator_enabled
    # the simulator's cuda.jit takes no NVVM options
    return {} if simulator_enabled() else {"forceinline": True}


DEVICE_OPTIONS = _device_jit_options()


def device_function(fn: Callable) -> Any:
    """``cuda.jit(device=True)``, force-inlined on a real GPU (register tiles passed to
    an inlined helper stay in registers)."""
    return cuda.jit(device=True, **DEVICE_OPTIONS)(fn)


@device_function
def apply_act(v, code, alpha):
    """The activation epilogue, same formulas and NaN behaviour as runtime.cpu.activation:
    0 none, 1 relu, 2 leaky_relu (slope alpha), 3 sigmoid (stable), 4 tanh."""
    if code == 0:
        return v
    if code == 1:
        return v if not v < F32_ZERO else F32_ZERO
    if code == 2:
        return v if not v < F32_ZERO else v * alpha
    if code == 3:
        if v >= F32_ZERO:
            z = math.exp(-v)
            return F32_ONE / (F32_ONE + z)
        z = math.exp(v)
        return z / (F32_ONE + z)
    return math.tanh(v)


Dim3 = tuple[int, int, int]


def dim3(d: int | Sequence[int]) -> Dim3:
    t = (int(d),) if isinstance(d, (int, np.integer)) else tuple(int(x) for x in d)
    if not 1 <= len(t) <= 3 or min(t) < 1:
        raise ValueError(f"bad launch dimension {d!r}")
    return t + (1,) * (3 - len(t))  # type: ignore[return-value]


@dataclass(frozen=True)
class LaunchConfig:
    """One kernel launch of a step: kernel name, grid and block (each x, y, z)."""
    kernel: str
    grid: Dim3
    block: Dim3

    @property
    def threads(self) -> int:
        return math.prod(self.grid) * math.prod(self.block)

    def __str__(self) -> str:
        """'conv_gemm<<<5x1x2, 16x16>>>' (trailing 1s of grid and block dropped)."""
        gs = "x".join(str(d) for d in _trim(self.grid))
        bs = "x".join(str(d) for d in _trim(self.block))
        return f"{self.kernel}<<<{gs}, {bs}>>>"


def _trim(d: Dim3) -> tuple[int, ...]:
    t = list(d)
    while len(t) > 1 and t[-1] == 1:
        t.pop()
    return tuple(t)


def kernel_name(kernel: Any) -> str:
    fn = getattr(kernel, "py_func", kernel)
    return getattr(fn, "__name__", type(kernel).__name__).lstrip("_")


class CudaRun:
    """A bound step: ``run()`` launches its kernels in order; ``launches`` records them.

    Kernels are configured at call time (``kernel[grid, block](*args)``): the simulator's
    kernel object keeps only its latest configuration.
    """

    def __init__(self) -> None:
        self._calls: list[tuple[Any, Dim3, Dim3, tuple]] = []
        self.launches: list[LaunchConfig] = []

    def launch(self, kernel: Any, grid: int | Sequence[int], block: int | Sequence[int],
               *args: Any, name: str | None = None) -> "CudaRun":
        g, b = dim3(grid), dim3(block)
        self._calls.append((kernel, g, b, args))
        self.launches.append(LaunchConfig(name or kernel_name(kernel), g, b))
        return self

    def __call__(self) -> None:
        for kernel, g, b, args in self._calls:
            kernel[g, b](*args)


def noop() -> CudaRun:
    """A step that moves no data (e.g. an in-place copy): launches nothing."""
    return CudaRun()


def blocks_for(n: int, threads: int = THREADS) -> int:
    """Blocks of a 1-D grid-stride launch over ``n`` items (at least 1, at most the cap)."""
    return max(1, min(MAX_BLOCKS, -(-n // threads)))


# ---------------------------------------------------------------- device arrays

_DUMMIES: dict[tuple, Any] = {}


def dummy(ndim: int) -> Any:
    """A tiny float32 device array standing in for an absent optional input (bias,
    residual) so each kernel has one signature; never read."""
    key = (ndim,)
    if key not in _DUMMIES:
        _DUMMIES[key] = cuda.to_device(np.zeros((1,) * ndim, np.float32))
    return _DUMMIES[key]


def device_span(a: Any) -> tuple[int, int]:
    """[start, end) byte addresses of a contiguous device array (real or simulated)."""
    host = getattr(a, "_ary", None)  # the simulator's FakeCUDAArray wraps a numpy array
    if host is not None:
        start = host.__array_interface__["data"][0]
    else:
        start = int(a.device_ctypes_pointer.value or 0)
    return start, start + int(a.size) * int(a.dtype.itemsize)


def same_memory(a: Any, b: Any, what: str) -> bool:
    """True when ``a`` and ``b`` are exactly the same bytes (an in-place kernel); a partial
    overlap is an error, as on the CPU."""
    sa, sb = device_span(a), device_span(b)
    if sa == sb:
        return True
    if sa[0] < sb[1] and sb[0] < sa[1]:
        raise ValueError(f"{what}: output partially overlaps an input; only exact in-place "
                         "aliasing is supported")
    return False


def check_f32(arrays: Sequence[Any], what: str) -> None:
    for a in arrays:
        if np.dtype(a.dtype) != np.float32:
            raise ValueError(f"{what}: arrays must be float32, got {a.dtype}")
        if not a.is_c_contiguous():
            raise ValueError(f"{what}: arrays must be C-contiguous, got strides {a.strides}")


Binder = Callable[[Sequence[Any], Sequence[Any], Any], CudaRun]
