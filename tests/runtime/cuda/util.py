"""Helpers of the CUDA kernel tests: skip without CUDA, run one kernel on the device.

The tests run under the CUDA simulator (tests/conftest.py selects it before anything
imports numba, unless pytest runs with --run-cuda on a GPU machine). The simulator costs
about 1 ms per simulated thread, so every shape here is tiny.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pytest

from runtime.cuda_status import simulator_enabled, unavailable_reason


def require_cuda_or_skip() -> None:
    """Skip the calling test module unless CUDA kernels can run (GPU or simulator)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"CUDA target unavailable: {reason}", allow_module_level=True)


def on_simulator() -> bool:
    return simulator_enabled()


def to_device(a: np.ndarray) -> Any:
    from numba import cuda
    return cuda.to_device(np.ascontiguousarray(a, dtype=np.float32))


def run_cuda_kernel(op: str, ins: Sequence[np.ndarray], out_shape: Sequence[int],
                    attrs: Mapping[str, Any], fill: float = np.nan, out: Any = None,
                    **bind_kw: Any) -> np.ndarray:
    """Upload ``ins``, bind the CUDA kernel of ``op`` to a fresh output filled with
    ``fill`` (NaN: a kernel that forgets an element is caught), run it, download."""
    from runtime.registry import get_kernel
    d_ins = [to_device(a) for a in ins]
    d_out = to_device(np.full(tuple(out_shape), fill, np.float32)) if out is None else out
    run = get_kernel(op, "cuda")(d_ins, [d_out], dict(attrs), **bind_kw)
    run()
    return d_out.copy_to_host()
