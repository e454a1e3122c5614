"""The kernel registry: one table keyed by (op, target, layout, mode).

A registered kernel is a *binder*: ``bind(ins, outs, attrs) -> run`` receives the
arrays it will read and the arrays it must write (views into the arena that the
memory planner owns, or constant arrays), plus the op's attributes as a plain dict,
does any one-time preparation, and returns a zero-argument callable that computes
the op. The executor calls ``run()`` once per model call; re-planning memory for a
new batch size simply binds again. Kernels never allocate their outputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

Run = Callable[[], None]
Binder = Callable[[Sequence[np.ndarray], Sequence[np.ndarray], Mapping[str, Any]], Run]

TARGETS = ("cpu", "cuda")
MODES = ("forward", "backward", "update", "comm")  # comm: collectives (runtime/cpu/comm.py)


@dataclass(frozen=True)
class KernelKey:
    op: str
    target: str = "cpu"
    layout: str = "NCHW"
    mode: str = "forward"

    def __str__(self) -> str:
        return f"{self.op}[{self.target}, {self.layout}, {self.mode}]"


class KernelNotFoundError(LookupError):
    """No kernel is registered for a requested (op, target, layout, mode)."""


_KERNELS: dict[KernelKey, Binder] = {}
_LOADED_TARGETS: set[str] = set()


def register_kernel(op: str, target: str = "cpu", layout: str = "NCHW",
                    mode: str = "forward") -> Callable[[Binder], Binder]:
    """Register ``bind`` for one (op, target, layout, mode); duplicates are an error."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known targets: {', '.join(TARGETS)}")
    if mode not in MODES:
        raise ValueError(f"unknown kernel mode {mode!r}; known modes: {', '.join(MODES)}")
    key = KernelKey(op, target, layout, mode)

    def deco(bind: Binder) -> Binder:
        if key in _KERNELS:
            prev = _KERNELS[key]
            raise ValueError(f"kernel {key} is already registered by "
                             f"{prev.__module__}.{prev.__qualname__}")
        _KERNELS[key] = bind
        return bind

    return deco


def _load_target(target: str) -> None:
    """Import a target's kernel modules on first use (CUDA is never imported eagerly)."""
    if target in _LOADED_TARGETS:
        return
    if target == "cpu":
        import runtime.cpu  # noqa: F401  (registers on import)
    elif target == "cuda":
        import runtime.cuda  # noqa: F401
    else:
        raise ValueError(f"unknown target {target!r}; known targets: {', '.join(TARGETS)}")
    _LOADED_TARGETS.add(target)


def get_kernel(op: str, target: str = "cpu", layout: str = "NCHW",
               mode: str = "forward") -> Binder:
    """Look up a kernel; a miss says what *is* registered for that op."""
    _load_target(target)
    key = KernelKey(op, target, layout, mode)
    try:
        return _KERNELS[key]
    except KeyError:
        have = sorted(str(k) for k in _KERNELS if k.op == op)
        known = "; registered for this op: " + ", ".join(have) if have else \
            "; nothing is registered for this op"
        raise KernelNotFoundError(f"no kernel for {key}{known}") from None


def registered(target: str | None = None) -> list[KernelKey]:
    """All registered keys (optionally for one target), for listings and tests."""
    if target is not None:
        _load_target(target)
    return sorted((k for k in _KERNELS if target is None or k.target == target),
                  key=lambda k: (k.op, k.target, k.layout, k.mode))
