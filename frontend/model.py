"""Networks: the functional ``Model`` (any DAG) and ``Sequential`` (a chain).

A network owns an immutable ``cnncomp.ir.Graph`` whose constants are its parameters.
``parameters()`` returns fresh copies and ``load_parameters()`` swaps in a new graph,
so a compiled model (which copies the graph's parameters) never changes underneath.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Mapping, Sequence, Union

import numpy as np

from cnncomp.errors import ParameterError, fmt_shape
from cnncomp.ir import INPUT, PARAM, Graph, Meta, Node, Value
from .layers import Input, Layer, SymbolicTensor

Tensors = Union[SymbolicTensor, Sequence[SymbolicTensor]]


def _as_list(t: Tensors, what: str) -> list[SymbolicTensor]:
    items = [t] if isinstance(t, SymbolicTensor) else list(t)
    if not items:
        raise ValueError(f"Model needs at least one {what}")
    for x in items:
        if not isinstance(x, SymbolicTensor):
            raise TypeError(f"Model {what}s must be symbolic tensors (from fe.Input or a "
                            f"layer call), got {type(x).__name__}")
    return items


def _next_free(prefix: str, taken, counters: Counter) -> str:
    """The next automatic name ``{prefix}_{n}`` (n counted per prefix) not yet taken."""
    while True:
        counters[prefix] += 1
        nm = f"{prefix}_{counters[prefix]}"
        if nm not in taken:
            return nm


def _trace(outputs: list[SymbolicTensor]) -> list[SymbolicTensor]:
    """Every tensor the outputs depend on, in creation (hence topological) order."""
    seen: dict[int, SymbolicTensor] = {}
    stack = list(outputs)
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen[id(t)] = t
        stack.extend(t.inputs)
    return sorted(seen.values(), key=lambda t: t.order)


class Model:
    """A network defined by its input and output symbolic tensors (any DAG)."""

    def __init__(self, inputs: Tensors, outputs: Tensors, name: str = "model", seed: int = 0):
        ins = _as_list(inputs, "input")
        outs = _as_list(outputs, "output")
        for t in ins:
            if not t.is_input:
                raise TypeError(f"Model inputs must come from fe.Input(...), got {t!r}")
        tensors = _trace(outs)
        leaves = [t for t in tensors if t.is_input]
        missing = [t for t in leaves if all(t is not i for i in ins)]
        if missing:
            raise ValueError(f"Model {name!r}: the outputs depend on "
                             f"{', '.join(repr(t) for t in missing)}, which is not among the "
                             "model's inputs; pass it in `inputs`")
        unused = [t for t in ins if all(t is not leaf for leaf in leaves)]
        if unused:
            raise ValueError(f"Model {name!r}: input {unused[0]!r} is not used by any output")
        names = self._assign_names(name, ins, tensors)
        self._graph = self._build_graph(name, ins, outs, tensors, names, seed)

    # ------------------------------------------------------------------ building
    @staticmethod
    def _assign_names(net: str, ins: list[SymbolicTensor], tensors: list[SymbolicTensor]
                      ) -> dict[int, str]:
        """User names stay; unnamed layers get ``{op}_{n}`` counted per op in this network."""
        names: dict[int, str] = {}
        taken: dict[str, str] = {}

        def claim(t: SymbolicTensor, nm: str, what: str) -> None:
            if nm in taken:
                raise ValueError(f"Model {net!r}: name {nm!r} is used twice ({taken[nm]} and "
                                 f"{what}); layer names must be unique within a network")
            taken[nm] = what
            names[id(t)] = nm

        for t in ins:
            if t.input_name:
                claim(t, t.input_name, f"Input {t.input_name!r}")
        for t in tensors:
            if not t.is_input and t.layer.name:
                claim(t, t.layer.name, t.layer.label())
        counters: Counter = Counter()
        unnamed_inputs = [t for t in ins if not t.input_name]
        for t in unnamed_inputs:
            alone = len(unnamed_inputs) == 1 and "input" not in taken
            claim(t, "input" if alone else _next_free("input", taken, counters),
                  "an unnamed Input")
        for t in tensors:
            if not t.is_input and not t.layer.name:
                claim(t, _next_free(t.layer.op.value, taken, counters), t.layer.label())
        return names

    @staticmethod
    def _build_graph(name: str, ins: list[SymbolicTensor], outs: list[SymbolicTensor],
                     tensors: list[SymbolicTensor], names: dict[int, str], seed: int) -> Graph:
        rng = np.random.default_rng(seed)
        values: dict[str, Value] = {}
        nodes: list[Node] = []
        constants: dict[str, np.ndarray] = {}
        for t in ins:
            values[names[id(t)]] = Value(names[id(t)], t.shape, kind=INPUT,
                                         layout=_layout(t.shape))
        for t in tensors:
            if t.is_input:
                continue
            nm = names[id(t)]
            params = t.layer.init_params(t.param_shapes, rng)
            pnames = []
            for suffix, shape in t.param_shapes.items():
                pn = f"{nm}.{suffix}"
                values[pn] = Value(pn, tuple(shape), kind=PARAM, layout="")
                constants[pn] = params[suffix]
                pnames.append(pn)
            values[nm] = Value(nm, t.shape, layout=_layout(t.shape))
            inputs = tuple(names[id(i)] for i in t.inputs) + tuple(pnames)
            nodes.append(Node(nm, t.layer.op, inputs, (nm,), t.attrs,
                              Meta(ops=(t.layer.op.value,), source=t.layer.source,
                                   layers=(nm,))))
        g = Graph(name, nodes, values, [names[id(t)] for t in ins],
                  [names[id(t)] for t in outs], constants)
        g.verify()
        return g

    @classmethod
    def from_graph(cls, graph: Graph) -> "Model":
        """Wrap an existing graph (a loaded file, an ONNX import) as a network."""
        graph.verify()
        self = cls.__new__(cls)
        self._graph = graph
        return self

    # ------------------------------------------------------------------ facts
    @property
    def name(self) -> str:
        return self._graph.name

    @property
    def graph(self) -> Graph:
        """The network's graph (immutable; its constants are read-only)."""
        return self._graph

    def to_graph(self) -> Graph:
        return self._graph

    @property
    def input_names(self) -> list[str]:
        return list(self._graph.inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._graph.outputs)

    @property
    def input_shape(self) -> tuple:
        """Per-sample shape of the (first) input, without the batch dimension."""
        return self._graph.values[self._graph.inputs[0]].shape[1:]

    @property
    def output_shape(self) -> tuple:
        return self._graph.values[self._graph.outputs[0]].shape[1:]

    def layer_names(self) -> list[str]:
        return [n.name for n in self._graph.nodes]

    # ------------------------------------------------------------------ parameters
    def parameters(self) -> dict[str, np.ndarray]:
        """``{"layer.weight": array, ...}``: fresh, writable float32 copies."""
        return {k: np.array(v, copy=True) for k, v in self._graph.constants.items()}

    def load_parameters(self, params: Mapping[str, np.ndarray]) -> None:
        """Replace every parameter; names and shapes must match exactly."""
        check_parameters(self._graph, params)
        new = {k: np.asarray(params[k], dtype=np.float32) for k in self._graph.constants}
        self._graph = self._graph.replace(constants={k: _frozen(v) for k, v in new.items()})

    def param_count(self) -> int:
        return self._graph.param_count()

    # ------------------------------------------------------------------ io
    def save(self, path: str) -> None:
        """Write the network (JSON graph + npz weights in one file, no pickle)."""
        from cnncomp.serialize import save_graph
        save_graph(self._graph, path, kind="network")

    # ------------------------------------------------------------------ printing
    def summary(self) -> str:
        """A Keras-style table: layer, op, output shape, parameter count."""
        g = self._graph
        rows = [("layer", "op", "output shape", "params")]
        for i in g.inputs:
            rows.append((i, "input", fmt_shape(g.values[i].shape), "0"))
        for n in g.nodes:
            count = sum(math.prod(g.values[p].shape) for p in n.inputs
                        if g.values[p].kind == PARAM)
            rows.append((n.name, n.op.value, fmt_shape(g.values[n.outputs[0]].shape),
                         f"{count:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        line = lambda r: "  ".join(s.ljust(w) if c < 3 else s.rjust(w)  # noqa: E731
                                   for c, (s, w) in enumerate(zip(r, widths)))
        sep = "-" * (sum(widths) + 6)
        out = [f"network {g.name!r}", line(rows[0]), sep] + [line(r) for r in rows[1:]]
        out += [sep, f"total parameters: {g.param_count():,}"]
        return "\n".join(out)

    def __repr__(self) -> str:
        g = self._graph
        return (f"<{type(self).__name__} {g.name!r}: {len(g.nodes)} layers, "
                f"{g.param_count():,} parameters, input {fmt_shape(g.values[g.inputs[0]].shape)}"
                f" -> output {fmt_shape(g.values[g.outputs[0]].shape)}>")


class Sequential(Model):
    """A chain of layers applied in order to one input of per-sample ``input_shape``."""

    def __init__(self, *layers: Layer, input_shape: Sequence[int], name: str = "sequential",
                 seed: int = 0, input_name: str = "input"):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential item {i} must be a layer (fe.Conv2d(...), ...), "
                                f"got {type(layer).__name__}")
        self._name_ahead(layers, input_name)
        x = Input(input_shape, name=input_name)
        h = x
        for layer in layers:
            h = layer(h)
        super().__init__(x, h, name=name, seed=seed)

    @staticmethod
    def _name_ahead(layers: Sequence[Layer], input_name: str) -> None:
        """Give unnamed layers their automatic names before applying, so errors can say them."""
        taken = {input_name} | {layer.name for layer in layers if layer.name}
        counters: Counter = Counter()
        for layer in layers:
            if not layer.name:
                layer._auto_name = _next_free(layer.op.value, taken, counters)
                taken.add(layer._auto_name)


def _layout(shape: tuple) -> str:
    return {4: "NCHW", 2: "NC"}.get(len(shape), "")


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float32, copy=True, order="C")
    a.flags.writeable = False
    return a


def check_parameters(graph: Graph, params: Mapping[str, np.ndarray]) -> None:
    """Raise ParameterError listing every missing, extra and mis-shaped parameter."""
    want = {k: tuple(v.shape) for k, v in graph.constants.items()}
    missing = [k for k in want if k not in params]
    extra = [k for k in params if k not in want]
    bad = []
    for k, shape in want.items():
        if k in params:
            a = np.asarray(params[k])
            if tuple(a.shape) != shape:
                bad.append(f"{k}: expected {shape}, got {tuple(a.shape)}")
            elif not np.issubdtype(a.dtype, np.floating):
                bad.append(f"{k}: expected a float array, got dtype {a.dtype}")
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append("missing: " + ", ".join(missing))
        if extra:
            parts.append("unexpected: " + ", ".join(extra))
        if bad:
            parts.append("wrong shape/dtype: " + "; ".join(bad))
        raise ParameterError(f"cannot load parameters into {graph.name!r}: " + " | ".join(parts))


def load(path: str) -> Model:
    """Load a network saved by ``Model.save`` (or the graph inside a saved compiled model)."""
    from cnncomp.serialize import load_graph
    graph, _ = load_graph(path)
    return Model.from_graph(graph)
