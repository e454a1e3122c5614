"""The program the compiler hands the runtime: kernel calls over buffers in one arena.

A ``Program`` is plain data: buffers (name, shape, byte offset in the arena), constant
arrays (parameters), and an ordered list of ``Step``s, each naming its kernel key and
its input/output buffers. ``Executor`` binds every step once to views of one arena and
then runs them in order on each call, allocating nothing but the returned outputs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import numpy as np

from .registry import KernelKey, get_kernel

ALIGN = 64  # bytes: a cache line, and a whole AVX-512 vector


@dataclass(frozen=True)
class Buffer:
    """An activation tensor at ``offset`` bytes into the arena (several may share bytes)."""
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    offset: int = 0
    layout: str = "NCHW"

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Step:
    """One kernel call. ``name`` labels it for summaries, profiles and errors."""
    name: str
    key: KernelKey
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    ops: tuple[str, ...] = ()
    flops: int = 0


@dataclass(frozen=True)
class Program:
    target: str
    steps: tuple[Step, ...]
    buffers: Mapping[str, Buffer]
    constants: Mapping[str, np.ndarray]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    arena_bytes: int


def _view(arena: np.ndarray, b: Buffer) -> np.ndarray:
    n = b.nbytes
    return arena[b.offset:b.offset + n].view(b.dtype).reshape(b.shape)


def new_arena(nbytes: int) -> np.ndarray:
    """A zeroed, ALIGN-aligned byte array of at least ``nbytes`` bytes."""
    raw = np.zeros(nbytes + ALIGN, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start:start + nbytes]


class Executor:
    """Runs a CPU program: one arena, every kernel bound once, steps called in order."""

    def __init__(self, program: Program,
                 on_step: Optional[Callable[[Step, list[np.ndarray]], None]] = None):
        self.program = program
        self.arena = new_arena(program.arena_bytes)
        self.views = {name: _view(self.arena, b) for name, b in program.buffers.items()}
        self._on_step = on_step
        self._runs: list[Callable[[], None]] = []
        for s in program.steps:
            ins = [self._array(i) for i in s.inputs]
            outs = [self._array(o) for o in s.outputs]
            bind = get_kernel(s.key.op, s.key.target, s.key.layout, s.key.mode)
            self._runs.append(bind(ins, outs, dict(s.attrs)))

    @property
    def algorithms(self) -> list[str]:
        """Per step, the algorithm its kernel chose when bound ("winograd", "direct"...; ""
        where a kernel has one way only): the choice depends on the batch."""
        return [getattr(run, "algorithm", "") for run in self._runs]

    def _array(self, name: str) -> np.ndarray:
        if name in self.views:
            return self.views[name]
        return self.program.constants[name]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy inputs in, run every step, return fresh copies of the outputs."""
        for name in self.program.inputs:
            np.copyto(self.views[name], inputs[name], casting="same_kind")
        if self._on_step is None:
            for run in self._runs:
                run()
        else:
            for step, run in zip(self.program.steps, self._runs):
                run()
                self._on_step(step, [self.views[o] for o in step.outputs])
        return {name: np.array(self.views[name], copy=True) for name in self.program.outputs}

    def profile(self, inputs: Mapping[str, np.ndarray], repeat: int = 5) -> list[float]:
        """Median seconds of each step over ``repeat`` full runs (for --profile)."""
        for name in self.program.inputs:
            np.copyto(self.views[name], inputs[name], casting="same_kind")
        times = np.zeros((repeat, len(self._runs)))
        for r in range(repeat):
            for i, run in enumerate(self._runs):
                t0 = time.perf_counter()
                run()
                times[r, i] = time.perf_counter() - t0
        return [float(t) for t in np.median(times, axis=0)]
