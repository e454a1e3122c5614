"""The graph IR: immutable values, nodes and graphs.

A ``Graph`` is an ordered (topological) tuple of ``Node``s over named ``Value``s.
Parameters are values of kind "param" whose data live in ``Graph.constants``.
Nothing here is mutated after construction: a pass builds a new graph with
``Graph.replace`` (or ``GraphBuilder``), so it can never corrupt the graph it was given.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Optional

import networkx as nx
import numpy as np

from .errors import GraphError, ShapeError, fmt_shape
from .ops import OP_DEFS, FusionClass, Op, output_shapes

ACTIVATION, PARAM, INPUT = "activation", "param", "input"


@dataclass(frozen=True)
class Value:
    """A named tensor: shape (batch entry None while symbolic), dtype and physical layout."""
    name: str
    shape: tuple
    dtype: str = "float32"
    layout: str = "NCHW"
    kind: str = ACTIVATION

    def __str__(self) -> str:
        dt = {"float32": "f32", "int64": "i64"}.get(self.dtype, self.dtype)
        dims = ",".join("N" if d is None else str(d) for d in self.shape)
        return f"{dt}[{dims}]"

    def concrete_shape(self, batch: int) -> tuple[int, ...]:
        """The shape with the symbolic batch entry replaced by ``batch``."""
        return tuple(batch if d is None else d for d in self.shape)


@dataclass(frozen=True)
class Meta:
    """Where a node came from, for error messages and kernel labels.

    ``ops``: the source-graph op names this node computes (a fused conv with a folded
    BN and a ReLU epilogue says ("conv2d", "batch_norm", "relu")).
    ``source``: the user's file:line that created the layer, if known.
    ``layers``: the user-visible layer names merged into this node.
    """
    ops: tuple[str, ...] = ()
    source: str = ""
    layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Node:
    name: str
    op: Op
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Any
    meta: Meta = field(default_factory=Meta)

    @property
    def ops(self) -> tuple[str, ...]:
        """Op names this node computes (its own op unless fusion recorded more)."""
        return self.meta.ops or (self.op.value,)

    def replace(self, **changes: Any) -> "Node":
        return dataclasses.replace(self, **changes)


def _freeze(arr: np.ndarray) -> np.ndarray:
    a = np.array(arr, copy=True, order="C")
    a.flags.writeable = False
    return a


class Graph:
    """An immutable, topologically ordered graph of nodes over named values."""

    def __init__(self, name: str, nodes: Iterable[Node], values: Mapping[str, Value],
                 inputs: Iterable[str], outputs: Iterable[str],
                 constants: Mapping[str, np.ndarray], *, copy_constants: bool = True):
        self.name = name
        self.nodes: tuple[Node, ...] = tuple(nodes)
        self.values: Mapping[str, Value] = MappingProxyType(dict(values))
        self.inputs: tuple[str, ...] = tuple(inputs)
        self.outputs: tuple[str, ...] = tuple(outputs)
        consts = {k: (_freeze(v) if copy_constants or v.flags.writeable else v)
                  for k, v in constants.items()}
        self.constants: Mapping[str, np.ndarray] = MappingProxyType(consts)
        self._producer = {o: n for n in self.nodes for o in n.outputs}
        users: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in dict.fromkeys(n.inputs):
                users.setdefault(i, []).append(n)
        self._users = users

    # ------------------------------------------------------------------ queries
    def producer(self, value: str) -> Optional[Node]:
        return self._producer.get(value)

    def users(self, value: str) -> list[Node]:
        """Nodes that read ``value``, in graph order."""
        return list(self._users.get(value, ()))

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} in graph {self.name!r}")

    def params(self) -> dict[str, np.ndarray]:
        return dict(self.constants)

    def replace(self, *, nodes: Optional[Iterable[Node]] = None,
                values: Optional[Mapping[str, Value]] = None,
                inputs: Optional[Iterable[str]] = None,
                outputs: Optional[Iterable[str]] = None,
                constants: Optional[Mapping[str, np.ndarray]] = None,
                name: Optional[str] = None) -> "Graph":
        """A new graph with some parts swapped; unused values/constants are dropped."""
        nodes = tuple(self.nodes if nodes is None else nodes)
        values = dict(self.values if values is None else values)
        inputs = tuple(self.inputs if inputs is None else inputs)
        outputs = tuple(self.outputs if outputs is None else outputs)
        constants = dict(self.constants if constants is None else constants)
        used = set(inputs) | set(outputs)
        for n in nodes:
            used.update(n.inputs)
            used.update(n.outputs)
        values = {k: v for k, v in values.items() if k in used}
        constants = {k: v for k, v in constants.items() if k in used}
        return Graph(name or self.name, nodes, values, inputs, outputs, constants,
                     copy_constants=False)

    # ------------------------------------------------------------------ checks
    def verify(self) -> None:
        """Check well-formedness: SSA, topological order, known values, shapes agree."""
        defined = set(self.inputs) | {k for k, v in self.values.items() if v.kind == PARAM}
        for i in self.inputs:
            if i not in self.values:
                raise GraphError(f"graph input {i!r} has no value")
        for k, v in self.values.items():
            if v.kind == PARAM:
                if k not in self.constants:
                    raise GraphError(f"parameter {k!r} has no data in graph.constants")
                if tuple(self.constants[k].shape) != tuple(v.shape):
                    raise GraphError(f"parameter {k!r}: data shape {self.constants[k].shape} "
                                     f"!= value shape {fmt_shape(v.shape)}")
        seen_names: set[str] = set()
        for n in self.nodes:
            if n.name in seen_names:
                raise GraphError(f"duplicate node name {n.name!r}")
            seen_names.add(n.name)
            for i in n.inputs:
                if i not in defined:
                    raise GraphError(f"node {n.name!r} ({n.op}) reads {i!r} before it is "
                                     "defined (not an input, parameter or earlier output)")
            for o in n.outputs:
                if o in defined:
                    raise GraphError(f"node {n.name!r} redefines value {o!r}")
                if o not in self.values:
                    raise GraphError(f"node {n.name!r} output {o!r} has no value")
                defined.add(o)
            expected = infer_node_shapes(self, n)
            if len(expected) != len(n.outputs):
                raise GraphError(f"node {n.name!r} ({n.op}) has {len(n.outputs)} outputs; "
                                 f"the op defines {len(expected)}")
            for o, want in zip(n.outputs, expected):
                got = self.values[o].shape
                if tuple(want) != tuple(got):
                    raise GraphError(f"node {n.name!r} ({n.op}): recorded shape of {o!r} "
                                     f"{fmt_shape(got)} != inferred {fmt_shape(want)}")
        for o in self.outputs:
            if o not in defined:
                raise GraphError(f"graph output {o!r} is never produced")

    # ------------------------------------------------------------------ printing
    def __str__(self) -> str:
        return self.to_text()

    def to_text(self) -> str:
        """Readable SSA text: one line per node with attrs, inputs and output type."""
        ins = ", ".join(f"%{i}: {self.values[i]} {self.values[i].layout}" for i in self.inputs)
        lines = [f"graph {self.name}({ins}) {{"]
        for n in self.nodes:
            args = ", ".join((f"@{i}" if self.values[i].kind == PARAM else f"%{i}")
                             for i in n.inputs)
            attrs = _attrs_text(n.attrs)
            fused = f"  # computes {'+'.join(n.ops)}" if len(n.ops) > 1 else ""
            if not n.outputs:  # an in-place update (optimizer step)
                lines.append(f"  {n.op.value}{attrs}({args}){fused}")
                continue
            outs = ", ".join(f"%{o}" for o in n.outputs)
            types = ", ".join(f"{self.values[o]} {self.values[o].layout}" for o in n.outputs)
            lines.append(f"  {outs} = {n.op.value}{attrs}({args}) : {types}{fused}")
        lines.append(f"  return {', '.join('%' + o for o in self.outputs)}")
        lines.append("}")
        return "\n".join(lines)

    def to_networkx(self) -> nx.DiGraph:
        """Dataflow graph: one vertex per node and per graph input, edges along values."""
        g = nx.DiGraph(name=self.name)
        for i in self.inputs:
            g.add_node(i, kind="input", label=f"{i}\n{self.values[i]} {self.values[i].layout}")
        for n in self.nodes:
            out = (f"{self.values[n.outputs[0]]} {self.values[n.outputs[0]].layout}"
                   if n.outputs else "(in place)")
            g.add_node(n.name, kind="node", op=n.op.value, ops=n.ops,
                       label=f"{n.name}\n{'+'.join(n.ops)}\n{out}")
        for n in self.nodes:
            for i in n.inputs:
                src = self._producer.get(i)
                if src is not None:
                    g.add_edge(src.name, n.name, value=i)
                elif i in self.inputs:
                    g.add_edge(i, n.name, value=i)
        return g

    def to_dot(self) -> str:
        """Graphviz DOT text (render with `dot -Tsvg`)."""
        g = self.to_networkx()
        out = [f'digraph "{self.name}" {{', "  rankdir=TB;",
               '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
        for v, d in g.nodes(data=True):
            fill = "#dbe9f6" if d["kind"] == "input" else (
                "#fde3c8" if len(d.get("ops", ())) > 1 else "#eeeeee")
            label = d["label"].replace('"', r"\"").replace("\n", r"\n")
            out.append(f'  "{v}" [label="{label}", fillcolor="{fill}"];')
        for a, b in g.edges():
            out.append(f'  "{a}" -> "{b}";')
        for o in self.outputs:
            src = self._producer.get(o)
            out.append(f'  "out:{o}" [label="output {o}", shape=ellipse, fillcolor="#d5f0d5"];')
            out.append(f'  "{src.name if src else o}" -> "out:{o}";')
        out.append("}")
        return "\n".join(out)

    # ------------------------------------------------------------------ facts
    def flops(self, batch: int = 1) -> dict[str, int]:
        """FLOPs of each node at a concrete batch size."""
        res = {}
        for n in self.nodes:
            d = OP_DEFS[n.op]
            xs = [self.values[i].concrete_shape(batch) for i in activation_inputs(n)]
            out = self.values[n.outputs[0]].concrete_shape(batch) if n.outputs else xs[0]
            res[n.name] = int(d.flops(n.attrs, xs, out))
        return res

    def param_count(self) -> int:
        return int(sum(math.prod(a.shape) for a in self.constants.values()))


def _attrs_text(attrs: Any) -> str:
    if not dataclasses.is_dataclass(attrs):
        return ""
    parts = []
    for f in dataclasses.fields(attrs):
        v = getattr(attrs, f.name)
        if v == f.default:
            continue
        if isinstance(v, tuple):
            v = "x".join(map(str, v))
        parts.append(f"{f.name}={v}")
    return "[" + ", ".join(parts) + "]" if parts else ""


def activation_inputs(n: Node) -> list[str]:
    """A node's data inputs by position: the op's first ``arity`` inputs (all of them for
    variadic ops), plus a fused residual (the last input); the rest are parameters."""
    d = OP_DEFS[n.op]
    if d.arity is None:
        return list(n.inputs)
    acts = list(n.inputs[:d.arity])
    if getattr(n.attrs, "residual", False):
        acts.append(n.inputs[-1])
    return acts


def infer_node_shapes(g: Graph, n: Node) -> list[tuple]:
    """Run the op's shape rule on a node's activation inputs (residual included):
    one shape per output."""
    xs = [g.values[i].shape for i in activation_inputs(n)]
    try:
        return output_shapes(n.op, n.attrs, xs)
    except ShapeError as e:
        raise ShapeError(f"layer {n.name!r} ({n.op}): {e}") from None


def infer_node_shape(g: Graph, n: Node) -> tuple:
    """The shape of a node's first output."""
    return infer_node_shapes(g, n)[0]


def is_fusable_anchor(op: Op) -> bool:
    return OP_DEFS[op].fusion is FusionClass.ANCHOR
