"""Shared test helpers: the relative error of DESIGN.md and a one-kernel runner."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from runtime.registry import get_kernel


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b||_2 / ||b||_2 over the whole output (0 when both are zero)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != reference {b.shape}"
    den = np.linalg.norm(b.ravel())
    num = np.linalg.norm((a - b).ravel())
    return float(num / den) if den > 0 else float(num)


def run_kernel(op: str, ins: Sequence[np.ndarray], out_shape: Sequence[int],
               attrs: Mapping[str, Any], target: str = "cpu", layout: str = "NCHW",
               mode: str = "forward", fill: float = np.nan) -> np.ndarray:
    """Bind one registered kernel to fresh buffers and run it once.

    The output starts filled with ``fill`` (NaN by default) so a kernel that forgets to
    write an element is caught.
    """
    ins = [np.ascontiguousarray(a, dtype=np.float32) for a in ins]
    out = np.full(tuple(out_shape), fill, dtype=np.float32)
    run = get_kernel(op, target, layout, mode)(ins, [out], dict(attrs))
    run()
    return out


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def lenet():
    """LeNet-5 with unnamed ReLU/pool/linear layers, so tests see the automatic names."""
    import frontend as fe
    return fe.Sequential(
        fe.Conv2d(6, 5, padding=2, name="c1"), fe.ReLU(), fe.MaxPool2d(2),
        fe.Conv2d(16, 5, name="c2"), fe.ReLU(), fe.MaxPool2d(2),
        fe.Flatten(), fe.Linear(120), fe.ReLU(), fe.Linear(84), fe.ReLU(), fe.Linear(10),
        input_shape=(1, 28, 28), name="lenet5")
