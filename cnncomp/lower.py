"""Lowering: an optimized graph + a batch size -> a runtime ``Program``.

Every node becomes one kernel call, except ops that only relabel bytes (Flatten of an
NCHW tensor, an inference-time Dropout), which become views of their input's buffer.
Buffers then get arena offsets from the memory planner.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from runtime.program import Buffer, Program, Step
from runtime.registry import KernelKey

from .ir import PARAM, Graph, Node
from .ops import Op, attrs_to_dict, op_def
from .passes.plan_memory import (Interval, arena_size, check_plan, lower_bound, plan_greedy_by_size,
                                 plan_naive)


@dataclass(frozen=True)
class MemoryPlan:
    """Sizes (bytes) describing one lowered program's activation memory."""
    naive_bytes: int
    planned_bytes: int
    lower_bound_bytes: int
    weights_bytes: int
    batch: int
    strategy: str

    def as_dict(self) -> dict:
        return {"naive_bytes": self.naive_bytes, "planned_bytes": self.planned_bytes,
                "lower_bound_bytes": self.lower_bound_bytes, "weights_bytes": self.weights_bytes,
                "batch": self.batch, "strategy": self.strategy,
                "planned_over_naive": self.planned_bytes / max(self.naive_bytes, 1),
                "planned_over_lower_bound": self.planned_bytes / max(self.lower_bound_bytes, 1)}


def _kernel_layout(layout: str) -> str:
    """Kernel registry layout for a value layout (rank-2 'NC' tensors use NCHW kernels)."""
    return "NCHW" if layout in ("NCHW", "NC", "") else layout


def is_view(node: Node, g: Graph, training: bool = False) -> bool:
    """Does this node only relabel its input's bytes (no data movement)?"""
    if node.op is Op.FLATTEN:
        return g.values[node.inputs[0]].layout in ("NCHW", "NC")
    if node.op is Op.DROPOUT:
        return not training
    return False


def lower(g: Graph, batch: int, target: str = "cpu", plan: bool = True,
          verify: bool = False) -> tuple[Program, MemoryPlan]:
    """Lower ``g`` for a concrete ``batch``; ``plan=False`` gives the naive memory plan."""
    root: dict[str, str] = {}  # value -> value that owns its bytes
    steps: list[Step] = []
    for n in g.nodes:
        if is_view(n, g):
            src = n.inputs[0]
            root[n.outputs[0]] = root.get(src, src)
            continue
        xs = [g.values[i].concrete_shape(batch) for i in n.inputs if g.values[i].kind != PARAM]
        out_shape = g.values[n.outputs[0]].concrete_shape(batch)
        flops = op_def(n.op).flops(n.attrs, xs, out_shape)
        key = KernelKey(n.op.value, target, _kernel_layout(g.values[n.outputs[0]].layout))
        steps.append(Step(n.name, key, n.inputs, n.outputs, attrs_to_dict(n.attrs), n.ops,
                          int(flops)))

    activations = [v for v in g.values.values() if v.kind != PARAM]
    owners = [v for v in activations if v.name not in root]
    size = {v.name: math.prod(v.concrete_shape(batch)) * 4 for v in activations}

    # live ranges over step indices: inputs from -1, outputs to len(steps)
    start = {v.name: -1 for v in owners if v.name in g.inputs}
    end = {v.name: -1 for v in owners}
    for t, s in enumerate(steps):
        for o in s.outputs:
            start.setdefault(root.get(o, o), t)
        for i in s.inputs:
            if g.values[i].kind != PARAM:
                r = root.get(i, i)
                end[r] = max(end[r], t)
    for o in g.outputs:
        end[root.get(o, o)] = len(steps)
    intervals = [Interval(v.name, size[v.name], start.get(v.name, -1),
                          max(end[v.name], start.get(v.name, -1))) for v in owners]
    offsets = plan_greedy_by_size(intervals) if plan else plan_naive(intervals)
    if verify:
        check_plan(intervals, offsets)
    buffers = {}
    for v in activations:
        r = root.get(v.name, v.name)
        buffers[v.name] = Buffer(v.name, v.concrete_shape(batch), v.dtype, offsets[r],
                                 v.layout)
    program = Program(target, tuple(steps), buffers, dict(g.constants), tuple(g.inputs),
                      tuple(g.outputs), arena_size(intervals, offsets))
    memory = MemoryPlan(
        naive_bytes=arena_size(intervals, plan_naive(intervals)),
        planned_bytes=program.arena_bytes,
        lower_bound_bytes=lower_bound(intervals),
        weights_bytes=int(sum(a.nbytes for a in g.constants.values())),
        batch=batch, strategy="greedy_by_size" if plan else "naive")
    return program, memory
