"""The device executor: runs a CUDA ``Program`` with one device arena.

Like ``runtime.program.Executor`` on the CPU: every buffer is a view at its byte offset
into ONE device allocation (``numba.cuda.device_array`` of uint8), every step is bound
once to those views and to the parameters, which are uploaded once. A call copies only
the inputs to the device and the outputs back. Each step's kernel launches (name, grid,
block) are recorded in ``launches`` for summaries.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, MutableMapping, Optional

import numpy as np
from numba import cuda

from ..program import Buffer, Program, Step
from ..registry import get_kernel
from .common import LaunchConfig


def device_view(arena: Any, b: Buffer) -> Any:
    """The device array of buffer ``b``: a typed view of the arena's bytes at its offset."""
    item = np.dtype(b.dtype).itemsize
    if b.offset % item:
        raise ValueError(f"buffer {b.name!r}: offset {b.offset} is not a multiple of its "
                         f"element size {item}")
    if b.offset + b.nbytes > arena.size:
        raise ValueError(f"buffer {b.name!r} [{b.offset}, {b.offset + b.nbytes}) runs past "
                         f"the arena ({arena.size} bytes)")
    return arena[b.offset:b.offset + b.nbytes].view(np.dtype(b.dtype)).reshape(b.shape)


def upload_constants(constants: Mapping[str, np.ndarray],
                     cache: Optional[MutableMapping[str, Any]] = None) -> dict[str, Any]:
    """Device copies of the parameters; arrays already in ``cache`` (same shape and dtype)
    are reused, new ones are added to it, so several executors share one upload."""
    cache = {} if cache is None else cache
    out = {}
    for name, a in constants.items():
        have = cache.get(name)
        if have is None or tuple(have.shape) != tuple(a.shape) or have.dtype != a.dtype:
            have = cache[name] = cuda.to_device(np.ascontiguousarray(a))
        out[name] = have
    return out


class CudaExecutor:
    """Runs a CUDA program: one device arena, every kernel bound once, steps in order.

    ``run(inputs)`` copies the inputs in, launches every step and returns host copies of
    the outputs; ``profile`` times each step; ``launches[i]`` lists step i's launches.
    ``on_step(step, outputs)`` (for check_finite) gets host copies after each step.
    """

    def __init__(self, program: Program,
                 on_step: Optional[Callable[[Step, list[np.ndarray]], None]] = None,
                 device_constants: Optional[MutableMapping[str, Any]] = None):
        if program.target != "cuda":
            raise ValueError(f"CudaExecutor runs target 'cuda' programs, got {program.target!r}")
        self.program = program
        self.arena = cuda.device_array(max(int(program.arena_bytes), 1), np.uint8)
        self.views = {name: device_view(self.arena, b) for name, b in program.buffers.items()}
        self.constants = upload_constants(program.constants, device_constants)
        self._on_step = on_step
        self._runs: list[Callable[[], None]] = []
        self.launches: list[tuple[LaunchConfig, ...]] = []
        for s in program.steps:
            ins = [self._array(i) for i in s.inputs]
            outs = [self._array(o) for o in s.outputs]
            bind = get_kernel(s.key.op, s.key.target, s.key.layout, s.key.mode)
            run = bind(ins, outs, dict(s.attrs))
            self._runs.append(run)
            self.launches.append(tuple(getattr(run, "launches", ())))

    def _array(self, name: str) -> Any:
        if name in self.views:
            return self.views[name]
        return self.constants[name]

    @property
    def device_bytes(self) -> int:
        """Device memory held: the arena plus the parameters."""
        return int(self.arena.size) + sum(int(a.nbytes) for a in self.constants.values())

    def _copy_in(self, inputs: Mapping[str, np.ndarray]) -> None:
        for name in self.program.inputs:
            view = self.views[name]
            host = np.ascontiguousarray(inputs[name], dtype=view.dtype)
            if tuple(host.shape) != tuple(view.shape):
                raise ValueError(f"input {name!r}: shape {host.shape}, the program was "
                                 f"planned for {tuple(view.shape)}")
            view.copy_to_device(host)

    def launch_all(self) -> None:
        """Launch every step on what is already on the device (no copies). Asynchronous:
        follow with numba.cuda.synchronize() to wait (benchmarks time kernels this way)."""
        for run in self._runs:
            run()

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy inputs to the device, run every step, return host copies of the outputs."""
        self._copy_in(inputs)
        if self._on_step is None:
            for run in self._runs:
                run()
        else:
            for step, run in zip(self.program.steps, self._runs):
                run()
                self._on_step(step, [self.views[o].copy_to_host() for o in step.outputs])
        return {name: self.views[name].copy_to_host() for name in self.program.outputs}

    def profile(self, inputs: Mapping[str, np.ndarray], repeat: int = 5) -> list[float]:
        """Median seconds of each step over ``repeat`` full runs (synchronizing around
        every step, so each time is that step's kernels alone)."""
        self._copy_in(inputs)
        times = np.zeros((repeat, len(self._runs)))
        cuda.synchronize()
        for r in range(repeat):
            for i, run in enumerate(self._runs):
                t0 = time.perf_counter()
                run()
                cuda.synchronize()
                times[r, i] = time.perf_counter() - t0
        return [float(t) for t in np.median(times, axis=0)]

    def launch_table(self) -> list[tuple[str, str]]:
        """(step name, 'kernel<<<grid, block>>>; ...') for every step, for summaries."""
        return [(s.name, "; ".join(str(c) for c in cfgs) or "(no launch)")
                for s, cfgs in zip(self.program.steps, self.launches)]
