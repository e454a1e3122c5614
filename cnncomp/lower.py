"""Lowering: an optimized graph + a batch size -> a runtime ``Program``.

Every node becomes one kernel call, except ops that only relabel bytes (Flatten of an
NCHW tensor, an inference-time Dropout), which become views of their input's buffer.
Buffers then get arena offsets from the memory planner.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from runtime.program import Buffer, Program, Step
from runtime.registry import KernelKey

from .ir import PARAM, Graph, Node, activation_inputs
from .ops import OP_DEFS, FusionClass, Op, attrs_to_dict, op_def
from .passes.select_layout import physical_shape
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


def _kernel_layout(n: Node, g: Graph) -> str:
    """Registry layout of a node's kernel: its output's layout (rank-2 'NC' uses NCHW
    kernels); a layout transform is registered under the non-NCHW side."""
    if n.op is Op.LAYOUT_TRANSFORM:
        return n.attrs.dst if n.attrs.src == "NCHW" else n.attrs.src
    layout = g.values[(n.outputs or n.inputs)[0]].layout
    if layout in ("NC", "") and n.inputs and len(g.values[n.inputs[0]].shape) == 4:
        layout = g.values[n.inputs[0]].layout  # a reduction to (N, C): its input's layout
    return "NCHW" if layout in ("NCHW", "NC", "") else layout


def is_view(node: Node, g: Graph) -> bool:
    """Does this node only relabel its input's bytes (no data movement)? Flatten of an
    NCHW tensor, and Dropout, which is the identity in these inference programs."""
    if node.op in (Op.FLATTEN, Op.RESHAPE):
        return g.values[node.inputs[0]].layout in ("NCHW", "NC")
    return node.op is Op.DROPOUT


def lower(g: Graph, batch: int, target: str = "cpu", plan: bool = True,
          verify: bool = False) -> tuple[Program, MemoryPlan]:
    """Lower ``g`` for a concrete ``batch``; ``plan=False`` gives the naive memory plan.

    With planning on, an elementwise kernel whose input dies at that kernel writes its
    output over the input (in place), and buffers share arena bytes by live range.
    """
    parent: dict[str, str] = {}  # value -> value whose bytes it uses (views, in-place)
    steps: list[Step] = []
    for n in g.nodes:
        if is_view(n, g):
            parent[n.outputs[0]] = n.inputs[0]
            continue
        xs = [g.values[i].concrete_shape(batch) for i in activation_inputs(n)]
        out_shape = g.values[n.outputs[0]].concrete_shape(batch) if n.outputs else xs[0]
        d = op_def(n.op)
        flops = d.flops(n.attrs, xs, out_shape)
        key = KernelKey(n.op.value, target, _kernel_layout(n, g), d.mode)
        steps.append(Step(n.name, key, n.inputs, n.outputs, attrs_to_dict(n.attrs), n.ops,
                          int(flops)))

    def find(v: str) -> str:
        while v in parent:
            v = parent[v]
        return v

    activations = [v for v in g.values.values() if v.kind != PARAM]
    shape = {v.name: physical_shape(v.concrete_shape(batch), v.layout) for v in activations}
    size = {v.name: math.prod(shape[v.name]) * np.dtype(v.dtype).itemsize for v in activations}
    end_of_time = len(steps)
    last_read = {v.name: -1 for v in activations}
    for t, s in enumerate(steps):
        for i in s.inputs:
            if i in last_read:
                last_read[i] = t
    for o in g.outputs:
        last_read[o] = end_of_time
    # a view is read whenever its source is needed: fold views into their sources
    for v in reversed([v.name for v in activations]):
        if v in parent:
            last_read[parent[v]] = max(last_read[parent[v]], last_read[v])
    naive_plan = [Interval(v.name, size[v.name], 0, 0) for v in activations
                  if v.name not in parent]
    if plan:
        _alias_in_place(g, steps, parent, find, last_read, size)

    owners = [v for v in activations if v.name not in parent]
    group_end = _group_ends(last_read, find)
    start = {v.name: -1 for v in owners if v.name in g.inputs}
    for t, s in enumerate(steps):
        for o in s.outputs:
            start.setdefault(find(o), t)
    intervals = [Interval(v.name, size[v.name], start.get(v.name, -1),
                          max(group_end[v.name], start.get(v.name, -1))) for v in owners]
    offsets = plan_greedy_by_size(intervals) if plan else plan_naive(intervals)
    if verify:
        check_plan(intervals, offsets)
    buffers = {v.name: Buffer(v.name, shape[v.name], v.dtype, offsets[find(v.name)], v.layout)
               for v in activations}
    program = Program(target, tuple(steps), buffers, dict(g.constants), tuple(g.inputs),
                      tuple(g.outputs), arena_size(intervals, offsets))
    memory = MemoryPlan(
        naive_bytes=arena_size(naive_plan, plan_naive(naive_plan)),
        planned_bytes=program.arena_bytes,
        lower_bound_bytes=lower_bound(intervals),
        weights_bytes=int(sum(a.nbytes for a in g.constants.values())),
        batch=batch, strategy="greedy_by_size+in_place" if plan else "naive")
    return program, memory


def _group_ends(last_read: dict[str, int], find) -> dict[str, int]:
    """For each buffer owner: the last step reading any value that shares its bytes."""
    ends: dict[str, int] = {}
    for v, t in last_read.items():
        r = find(v)
        ends[r] = max(ends.get(r, -1), t)
    return ends


def _alias_in_place(g: Graph, steps: list[Step], parent: dict[str, str], find,
                    last_read: dict[str, int], size: dict[str, int]) -> None:
    """Let elementwise kernels overwrite an input that no later kernel reads.

    Elementwise kernels (fusion class ELEMENTWISE) are written to be correct in place.
    Graph inputs are never overwritten; the group of values sharing the bytes must have
    no reader after this step.
    """
    group_end = _group_ends(last_read, find)
    for t, s in enumerate(steps):
        op = Op(s.key.op)
        if OP_DEFS[op].fusion is not FusionClass.ELEMENTWISE or not s.outputs:
            continue
        out = s.outputs[0]
        for i in s.inputs:
            if g.values[i].kind == PARAM or size[i] != size[out]:
                continue
            r = find(i)
            if r in g.inputs or group_end.get(r) != t:
                continue
            parent[out] = r
            group_end[r] = max(t, last_read[out])
            break
