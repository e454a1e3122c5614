"""``CompiledModel``: an optimized graph that runs on arrays of any batch size.

The graph is optimized once; a program (kernel calls + memory plan) is lowered per
batch size and cached, so a new batch size re-plans memory without recompiling kernels
and steady-state calls allocate nothing but the returned arrays.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from runtime.program import Executor, Step

from .errors import InputError, NonFiniteError, fmt_shape
from .ir import Graph
from .lower import MemoryPlan, lower

_MAX_CACHED_BATCHES = 4


@dataclass(frozen=True)
class KernelInfo:
    """One kernel that runs: ``name`` (its layer), ``ops`` (source ops it computes)."""
    name: str
    ops: tuple[str, ...]
    op: str
    target: str
    layout: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    flops_per_sample: int

    def __str__(self) -> str:
        return f"{self.name}: {'+'.join(self.ops)}"


@dataclass
class CompileOptions:
    target: str = "cpu"
    fuse: bool = True
    opt_level: int = 2
    layout: str = "auto"
    disable: tuple[str, ...] = ()
    check_finite: bool = False
    passes: tuple[str, ...] = ()
    verify: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "fuse": self.fuse, "opt_level": self.opt_level,
                "layout": self.layout, "disable": list(self.disable),
                "check_finite": self.check_finite, "passes": list(self.passes)}


class CompiledModel:
    """Call it with an array (or keyword arrays for several inputs); get arrays back."""

    def __init__(self, graph: Graph, options: CompileOptions, source: Optional[Graph] = None,
                 pass_records: Optional[list] = None):
        self.graph = graph
        self.source_graph = source if source is not None else graph
        self.options = options
        self.pass_records = list(pass_records or [])
        self._programs: "OrderedDict[int, tuple[Executor, MemoryPlan]]" = OrderedDict()
        self._last_batch: Optional[int] = None
        self._plan_memory = "plan_memory" in options.passes
        # lower once at batch 1 up front: surfaces missing kernels at compile time
        self._executor(1)

    # ------------------------------------------------------------------ facts
    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def target(self) -> str:
        return self.options.target

    @property
    def input_names(self) -> list[str]:
        return list(self.graph.inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self.graph.outputs)

    @property
    def kernels(self) -> list[KernelInfo]:
        """The kernels that run, in order (views such as Flatten are not kernels)."""
        program = self._executor(self._last_batch or 1)[0].program
        return [KernelInfo(s.name, s.ops, s.key.op, s.key.target, s.key.layout, s.inputs,
                           s.outputs, s.flops // max(self._batch_of(program), 1))
                for s in program.steps]

    @staticmethod
    def _batch_of(program) -> int:
        b = program.buffers[program.inputs[0]]
        return b.shape[0]

    def flops(self, batch: int = 1) -> int:
        return sum(k.flops_per_sample for k in self.kernels) * batch

    # ------------------------------------------------------------------ running
    def _executor(self, batch: int) -> tuple[Executor, MemoryPlan]:
        hit = self._programs.get(batch)
        if hit is not None:
            self._programs.move_to_end(batch)
            return hit
        program, plan = lower(self.graph, batch, self.options.target, self._plan_memory,
                              verify=self.options.verify)
        on_step = self._check_step if self.options.check_finite else None
        if self.options.target == "cuda":
            from runtime.cuda import CudaExecutor
            # one device copy of the parameters, shared by every batch size's executor
            shared = self.__dict__.setdefault("_device_constants", {})
            entry = (CudaExecutor(program, on_step, shared), plan)
        else:
            entry = (Executor(program, on_step), plan)
        self._programs[batch] = entry
        while len(self._programs) > _MAX_CACHED_BATCHES:
            self._programs.popitem(last=False)
        return entry

    @staticmethod
    def _check_step(step: Step, outs: list[np.ndarray]) -> None:
        for o, arr in zip(step.outputs, outs):
            if not np.isfinite(arr).all():
                bad = "NaN" if np.isnan(arr).any() else "Inf"
                raise NonFiniteError(
                    f"kernel {step.name!r} ({'+'.join(step.ops)}) produced {bad} in {o!r} "
                    f"{fmt_shape(arr.shape)}; its inputs were finite (check_finite=True)")

    def _check_inputs(self, args: tuple, kwargs: dict) -> dict[str, np.ndarray]:
        names = self.input_names
        if args and kwargs:
            raise InputError("pass the input either positionally or by keyword, not both")
        if len(args) > 1:
            raise InputError(f"model {self.name!r} takes one positional array; for several "
                             f"inputs pass keywords: {', '.join(names)}")
        if args:
            if len(names) != 1:
                raise InputError(f"model {self.name!r} has {len(names)} inputs; pass them by "
                                 f"keyword: {', '.join(f'{n}=...' for n in names)}")
            kwargs = {names[0]: args[0]}
        missing = [n for n in names if n not in kwargs]
        extra = [n for n in kwargs if n not in names]
        if missing or extra:
            raise InputError(f"model {self.name!r} takes inputs {names}; missing {missing}, "
                             f"unexpected {extra}")
        arrays, batch = {}, None
        for n in names:
            arrays[n] = a = self._check_array(n, kwargs[n])
            if batch is not None and a.shape[0] != batch:
                raise InputError(f"inputs disagree on the batch size: {batch} vs "
                                 f"{a.shape[0]} for {n!r}")
            batch = a.shape[0]
        return arrays

    def _check_array(self, name: str, x: Any) -> np.ndarray:
        want = self.graph.values[name].shape
        if not isinstance(x, np.ndarray):
            if isinstance(x, (list, tuple)):
                x = np.asarray(x)
            else:
                raise InputError(f"input {name!r}: expected a float32 ndarray of shape "
                                 f"{fmt_shape(want)}, got {type(x).__name__}")
        if x.dtype.kind != "f":
            raise InputError(f"input {name!r}: expected a real float array, got dtype "
                             f"{x.dtype}; convert it first, e.g. x.astype(np.float32)"
                             + (" / 255" if x.dtype == np.uint8 else ""))
        if x.ndim != len(want) or tuple(x.shape[1:]) != tuple(want[1:]):
            hint = ""
            if x.ndim == len(want) - 1 and tuple(x.shape) == tuple(want[1:]):
                hint = "; a single sample needs a batch axis: x[None]"
            raise InputError(f"input {name!r}: expected shape {fmt_shape(want)} (N = any batch "
                             f"size), got {tuple(x.shape)}{hint}")
        if x.shape[0] < 1:
            raise InputError(f"input {name!r}: the batch is empty (shape {tuple(x.shape)})")
        if self.options.check_finite and not np.isfinite(x).all():
            raise InputError(f"input {name!r} contains NaN or Inf (check_finite=True)")
        return np.ascontiguousarray(x, dtype=np.float32)

    def __call__(self, *args: np.ndarray, **kwargs: np.ndarray
                 ) -> Union[np.ndarray, dict[str, np.ndarray]]:
        arrays = self._check_inputs(args, kwargs)
        batch = next(iter(arrays.values())).shape[0]
        executor, _ = self._executor(batch)
        self._last_batch = batch
        outs = executor.run(arrays)
        if len(outs) == 1:
            return next(iter(outs.values()))
        return outs

    # ------------------------------------------------------------------ reports
    def memory_report(self, batch: Optional[int] = None) -> dict[str, Any]:
        """Activation memory (bytes) of the plan for ``batch`` (default: the last call's)."""
        batch = batch or self._last_batch or 1
        return self._executor(batch)[1].as_dict()

    def summary(self, batch: Optional[int] = None) -> str:
        """Kernels with fused ops, layouts, buffer offsets and FLOPs; memory; passes."""
        batch = batch or self._last_batch or 1
        executor, plan = self._executor(batch)
        program = executor.program
        rows = [("#", "kernel", "ops", "output", "layout", "offset", "MFLOP")]
        # CUDA: each step's launches, kernel<<<grid, block>>>
        launches = getattr(executor, "launches", None)
        if launches is not None:
            rows[0] += ("launch (grid, block)",)
        # CPU: the algorithm a conv kernel chose for this batch (Winograd or direct)
        algorithms = getattr(executor, "algorithms", None)
        if launches is None and algorithms and any(algorithms):
            rows[0] += ("algorithm",)
        else:
            algorithms = None
        for i, s in enumerate(program.steps):
            b = program.buffers[s.outputs[0]]
            rows.append((str(i), s.name, "+".join(s.ops), fmt_shape(b.shape), b.layout,
                         f"{b.offset:,}", f"{s.flops / 1e6:,.2f}"))
            if launches is not None:
                rows[-1] += ("; ".join(str(c) for c in launches[i]) or "(none)",)
            if algorithms is not None:
                rows[-1] += (algorithms[i],)
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        fmt = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
        total = sum(s.flops for s in program.steps)
        mib = lambda n: f"{n / 2**20:,.2f} MiB"  # noqa: E731
        views = [v for v in program.buffers if all(v not in s.outputs for s in program.steps)
                 and v not in program.inputs]
        lines = [f"compiled model {self.name!r}  target={self.target}  batch={batch}  "
                 f"fuse={self.options.fuse}",
                 fmt(rows[0]), "-" * (sum(widths) + 2 * len(widths))]
        lines += [fmt(r) for r in rows[1:]]
        lines += ["-" * (sum(widths) + 2 * len(widths)),
                  f"{len(program.steps)} kernels, {total / 1e9:,.3f} GFLOP per batch of {batch}"
                  + (f"; views (no kernel): {', '.join(views)}" if views else ""),
                  f"memory: planned {mib(plan.planned_bytes)} ({plan.strategy}), naive "
                  f"{mib(plan.naive_bytes)}, lower bound {mib(plan.lower_bound_bytes)}, "
                  f"weights {mib(plan.weights_bytes)}"]
        if self.pass_records:
            done = ", ".join(f"{r.name}{'' if r.changed else ' (no change)'}"
                             for r in self.pass_records)
            lines.append(f"passes: {done}")
        return "\n".join(lines)

    def save(self, path: str) -> None:
        """Write the optimized graph, its weights and the compile options (no pickle)."""
        from .serialize import save_graph
        save_graph(self.graph, path, kind="compiled", options=self.options.as_dict())

    def __repr__(self) -> str:
        return (f"<CompiledModel {self.name!r} target={self.target} "
                f"kernels={len(self.kernels)} fuse={self.options.fuse}>")

