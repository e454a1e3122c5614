"""Import ONNX models into the cnncomp graph IR: ``fe.from_onnx(path_or_ModelProto)``.

    import frontend as fe, cnncomp
    net = fe.from_onnx("resnet50.onnx")      # a fe.Model: parameters(), summary(), save()
    model = cnncomp.compile(net)              # fused, layout-selected, memory-planned
    probs = model(x)                          # x: float32 NCHW, any batch size

What it reads: ModelProto files from the old model zoo (opsets 6-9, every weight also
listed as a graph input) up to the newest opsets the onnx package writes, for the CNN
operator set: Conv (1-D and 2-D), BatchNormalization, Relu, LeakyRelu, Sigmoid, Tanh,
Softmax, LogSoftmax, MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool,
LRN, Gemm, MatMul, Flatten, Reshape, Squeeze, Unsqueeze, Concat, Add, Sub, Mul, Div,
Sum, Dropout, Pad, Clip, Identity, Transpose, Constant, ConstantOfShape, and every
shape-computing subgraph (Shape, Gather, Slice, Cast, Concat, arithmetic ...) whose
inputs are constants: those are folded with numpy at import.

How ONNX maps onto the IR:

* **The batch axis.** The IR's first axis is the batch (``None`` in shapes: one
  compiled model serves every batch size). ONNX axis 0 becomes that axis, so a model
  exported at batch 1 runs at any batch; a ``Reshape`` to ``(1, 9216)`` or ``(-1,
  9216)`` keeps the batch. A graph that computes *along* axis 0 (a softmax over axis 0,
  a concat along it, a transpose that moves it) cannot be batched; with
  ``batch_axis="auto"`` (the default) it is imported as one sample instead: the IR
  gets a leading batch axis of its own, and ops that need ONNX's batch axis (Conv,
  pools, BatchNormalization, Gemm) accept an ONNX batch of 1 there.
* **Parameters.** Initializers (and graph inputs given in ``constants=``) become IR
  parameters named after the initializer when a node uses it unchanged (so a PyTorch
  export keeps its state-dict names), else ``{node}.{weight|bias|...}``. Weights that a
  subgraph computes (ConstantOfShape, Unsqueeze, Transpose, Mul of constants ...) are
  folded first.
* **Rewrites.** Gemm/MatMul with a constant right operand become ``linear`` (alpha,
  transB folded into the weight); a Mul/Add/Sub/Div by a per-channel (or scalar)
  constant becomes an affine ``batch_norm`` (merged into a preceding BatchNormalization,
  and folded into the Conv by the compiler's ``fold_batch_norm``); Clip(0, inf) is
  ``relu``; a zero Pad before a Conv or AveragePool becomes its padding; 1-D Conv and
  pools run as 2-D ones over (N, C, 1, L); GlobalMaxPool is a max pool over the whole
  plane; Softmax over another axis (or opset < 13's "flatten to 2-D" form) runs as the
  IR's axis-1 softmax between reshapes (and transposes, if other axes are in the way).

Everything unsupported is reported at once: an ``OnnxImportError`` lists every node
(name, op type) with what is wrong and what to do, instead of failing on the first.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from cnncomp import ops as O
from cnncomp.errors import CnnCompError, ShapeError, fmt_shape
from cnncomp.ir import INPUT, PARAM, Graph, Meta, Node, Value
from cnncomp.ops import Op

__all__ = ["from_onnx", "import_onnx", "OnnxImportError", "OnnxGraph", "OutputSpec",
           "param_inputs", "SUPPORTED_OPS"]

# The affine batch_norm a per-channel Mul/Add becomes: mean 0 and var + eps == 1 exactly
# (both values are exact in float32 and float64), so the scale is gamma bit for bit.
AFFINE_VAR, AFFINE_EPS = 0.75, 0.25


class OnnxImportError(CnnCompError, ValueError):
    """An ONNX model cannot be imported; ``problems`` lists every offending node."""

    def __init__(self, model: str, problems: Sequence["Problem"]):
        self.problems = list(problems)
        lines = [f"cannot import ONNX model {model!r}: {len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Problem:
    node: str
    op: str
    message: str
    batch: bool = False  # the op works along ONNX axis 0 (batched import impossible)

    def __str__(self) -> str:
        return f"node {self.node!r} ({self.op}): {self.message}"


@dataclass(frozen=True)
class OutputSpec:
    """One ONNX graph output: an IR value ('value'), a constant the model computes without
    any input ('constant'), or Dropout's all-true mask of an IR value ('ones')."""
    name: str
    kind: str
    value: Optional[str] = None
    array: Optional[np.ndarray] = None
    dtype: Any = np.float32


@dataclass
class OnnxGraph:
    """The result of an import: the graph and how ONNX names and shapes map onto it."""
    graph: Graph
    batch_axis: bool            # True: ONNX axis 0 is the IR batch; False: one sample
    inputs: dict                # ONNX data input name -> IR input name
    input_dtypes: dict          # ONNX data input name -> numpy dtype it declares
    outputs: list               # OutputSpec per ONNX graph output, in order
    opset: int
    notes: list = field(default_factory=list)


class _Fail(Exception):
    """A node cannot be converted (becomes a Problem)."""

    def __init__(self, message: str, batch: bool = False):
        super().__init__(message)
        self.batch = batch


def _batch_fail(what: str) -> _Fail:
    return _Fail(f"{what}; cnncomp treats ONNX axis 0 as the batch axis, which ops never "
                 "mix with the others (import with batch_axis=False to treat the model as "
                 "one sample)", batch=True)


@dataclass(frozen=True)
class _Act:
    """An activation: an IR value computed at run time."""
    name: str


@dataclass(frozen=True)
class _Mask:
    """Dropout's mask output at inference: all true, shaped like ``ref``."""
    ref: _Act


class _Poison:
    """The output of a node that failed: its users are skipped without a new problem."""


_POISON = _Poison()

# --------------------------------------------------------------------------- op tables

_COMMON = {"consumed_inputs"}  # opset < 6 bookkeeping, meaningless at inference
_ATTRS: dict[str, set] = {
    "Conv": {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"},
    "BatchNormalization": {"epsilon", "momentum", "spatial", "is_test", "training_mode"},
    "Relu": set(), "Sigmoid": set(), "Tanh": set(), "LeakyRelu": {"alpha"},
    "Softmax": {"axis"}, "LogSoftmax": {"axis"},
    "MaxPool": {"auto_pad", "kernel_shape", "pads", "strides", "storage_order", "dilations",
                "ceil_mode"},
    "AveragePool": {"auto_pad", "kernel_shape", "pads", "strides", "count_include_pad",
                    "ceil_mode", "dilations"},
    "LpPool": {"auto_pad", "kernel_shape", "pads", "strides", "p", "dilations", "ceil_mode"},
    "GlobalAveragePool": set(), "GlobalMaxPool": set(),
    "LRN": {"alpha", "beta", "bias", "size"},
    "Gemm": {"alpha", "beta", "transA", "transB", "broadcast"},
    "MatMul": set(), "Flatten": {"axis"}, "Reshape": {"shape", "allowzero"},
    "Squeeze": {"axes"}, "Unsqueeze": {"axes"}, "Concat": {"axis"},
    "Add": {"broadcast", "axis"}, "Sub": {"broadcast", "axis"}, "Mul": {"broadcast", "axis"},
    "Div": {"broadcast", "axis"}, "Sum": set(),
    "Dropout": {"ratio", "is_test", "seed"}, "Pad": {"mode", "pads", "value", "paddings"},
    "Clip": {"min", "max"}, "Identity": set(), "Transpose": {"perm"},
    "Constant": {"value", "value_float", "value_floats", "value_int", "value_ints"},
    "ConstantOfShape": {"value"},
    # constant folding only (every input a constant)
    "Shape": {"start", "end"}, "Size": set(), "Gather": {"axis"},
    "Cast": {"to", "saturate", "round_mode"}, "CastLike": {"saturate", "round_mode"},
    "Slice": {"starts", "ends", "axes"}, "Range": set(), "Expand": set(), "Neg": set(),
    "Abs": set(), "Sqrt": set(), "Exp": set(), "Log": set(), "Reciprocal": set(),
    "Floor": set(), "Ceil": set(), "Pow": set(), "Min": set(), "Max": set(), "Equal": set(),
    "Where": set(), "Not": set(), "Tile": set(), "ReduceProd": {"axes", "keepdims"},
}
SUPPORTED_OPS = tuple(sorted(_ATTRS))

# input positions that hold weights, statistics or shape arguments (not data): graph
# inputs used only there are parameters that the ONNX backend binds as constants
_PARAM_SLOTS: dict[str, set] = {
    "Conv": {1, 2}, "ConvTranspose": {1, 2}, "BatchNormalization": {1, 2, 3, 4},
    "Gemm": {1, 2}, "MatMul": {1}, "Reshape": {1}, "Pad": {1, 2, 3}, "Clip": {1, 2},
    "Dropout": {1, 2}, "ConstantOfShape": {0}, "Unsqueeze": {1}, "Squeeze": {1},
    "Slice": {1, 2, 3, 4}, "Expand": {1}, "Tile": {1}, "PRelu": {1},
    "InstanceNormalization": {1, 2}, "Resize": {1, 2, 3}, "Upsample": {1}, "Range": {0, 1, 2},
}

_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16,
                6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64,
                12: np.uint32, 13: np.uint64}
_FLOAT_TYPES = (1, 10, 11, 16)  # float, float16, double, bfloat16


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("importing ONNX models needs the onnx package: "
                          "pip install 'cnncomp[onnx]'") from None
    return onnx


def _load(model: Any):
    onnx = _onnx()
    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or "onnx_model"
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model)), "onnx_model"
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise FileNotFoundError(f"from_onnx: no such file {path!r}")
        m = onnx.load(path)
        return m, m.graph.name or os.path.splitext(os.path.basename(path))[0]
    raise TypeError(f"from_onnx takes a path, bytes or an onnx.ModelProto, got "
                    f"{type(model).__name__}")


def _opset(m) -> int:
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    raise OnnxImportError(m.graph.name, [Problem("(model)", "opset_import",
                                                 "the model imports no default ONNX opset")])


def _attrs(node) -> dict[str, Any]:
    from onnx import helper
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        out[a.name] = v
    return out


def _tensor(t) -> np.ndarray:
    from onnx import numpy_helper
    a = np.asarray(numpy_helper.to_array(t))
    return a.astype(np.float32) if a.dtype in (np.float64, np.float16) else a


def _prod(xs) -> int:
    return int(math.prod(int(x) for x in xs))


def _layout(shape: tuple) -> str:
    return {4: "NCHW", 2: "NC"}.get(len(shape), "")


def param_inputs(model: Any) -> list[str]:
    """Graph inputs (not initializers) that every node reads only as a weight, statistic
    or shape argument: the ONNX backend binds them as constants before importing."""
    m, _ = _load(model)
    g = m.graph
    inits = {t.name for t in g.initializer}
    names = [i.name for i in g.input if i.name not in inits]
    data_use: set[str] = set(g.output[k].name for k in range(len(g.output)))
    param_use: set[str] = set()
    for n in g.node:
        slots = _PARAM_SLOTS.get(n.op_type, set())
        for k, i in enumerate(n.input):
            (param_use if k in slots else data_use).add(i)
    return [i for i in names if i in param_use and i not in data_use]


# --------------------------------------------------------------------------- importer

class _Importer:
    def __init__(self, m, name: str, batch_axis: bool,
                 input_shapes: Mapping[str, Sequence[int]], constants: Mapping[str, Any]):
        self.m, self.g, self.name = m, m.graph, name
        self.opset = _opset(m)
        self.natural = batch_axis
        self.input_shapes = {k: tuple(int(d) for d in v) for k, v in input_shapes.items()}
        self.user_constants = dict(constants)
        self.env: dict[str, Any] = {}
        self.nodes: list[Node] = []
        self.values: dict[str, Value] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.taken: set[str] = set()
        self.node_names: set[str] = set()
        self.inputs: dict[str, str] = {}
        self.input_dtypes: dict[str, Any] = {}
        self.problems: list[Problem] = []
        self.batch = 1          # ONNX axis-0 size of the activations (natural mode)
        self.const_names: dict[int, str] = {}  # id(array) -> initializer name
        self.affine_nodes: set[str] = set()          # batch_norm nodes made from Mul/Add/...
        self.cur: Any = None                   # the ONNX node being converted
        self.cur_name = ""

    # ------------------------------------------------------------------ names
    def fresh(self, base: str) -> str:
        base = base or "v"
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}__{k}"
        self.taken.add(name)
        return name

    def fresh_node(self, base: str) -> str:
        name, k = base, 1
        while name in self.node_names or name in self.inputs.values():
            k += 1
            name = f"{base}__{k}"
        self.node_names.add(name)
        return name

    # ------------------------------------------------------------------ shapes
    def ir_shape(self, a: _Act) -> tuple:
        return self.values[a.name].shape

    def oshape(self, a: _Act) -> tuple:
        """The ONNX shape of an activation (the batch axis as ``self.batch``)."""
        s = self.ir_shape(a)
        return (self.batch,) + tuple(s[1:]) if self.natural else tuple(s[1:])

    def to_ir(self, oshape: Sequence[int], what: str) -> tuple:
        oshape = tuple(int(d) for d in oshape)
        if self.natural:
            if not oshape or oshape[0] != self.batch:
                raise _batch_fail(f"{what} gives shape {oshape}, whose axis 0 is not the "
                                  f"batch ({self.batch})")
            return (None,) + oshape[1:]
        return (None,) + oshape

    def axis(self, axis: int, rank: int, what: str = "axis") -> int:
        """The IR axis of ONNX ``axis`` (negative counts from the end) of a rank-``rank``
        activation; axis 0 is refused in batched mode."""
        a = int(axis)
        if not -rank <= a < rank:
            raise _Fail(f"{what} {axis} is out of range for a rank-{rank} tensor")
        a %= rank
        if self.natural:
            if a == 0:
                raise _batch_fail(f"{what} {axis} is the batch axis")
            return a
        return a + 1

    # ------------------------------------------------------------------ emitting
    def param(self, arr: Any, node: str, suffix: str) -> str:
        src = self.const_names.get(id(arr))
        a = np.ascontiguousarray(np.asarray(arr, dtype=np.float32))
        if src is not None and (src not in self.taken or
                                (src in self.consts and self.consts[src] is a)):
            if src not in self.taken:
                self.taken.add(src)
                self.consts[src] = a
                self.values[src] = Value(src, tuple(a.shape), kind=PARAM, layout="")
            if self.consts[src].shape == a.shape and self.consts[src] is a:
                return src
        name = self.fresh(f"{node}.{suffix}")
        self.consts[name] = a
        self.values[name] = Value(name, tuple(a.shape), kind=PARAM, layout="")
        return name

    def emit(self, op: Op, inputs: Sequence[str], attrs: Any,
             params: Optional[Mapping[str, Any]] = None, out: Optional[str] = None,
             tag: str = "", ops: Optional[tuple] = None) -> str:
        """Append one IR node; returns its output value's name."""
        base = self.cur_name + (f"__{tag}" if tag else "")
        name = self.fresh_node(base)
        xs = [self.values[i].shape for i in inputs]
        try:
            shape = O.output_shapes(op, attrs, xs)[0]
            want = O.OP_DEFS[op].params(attrs, xs)
        except ShapeError as e:
            raise _Fail(str(e)) from None
        pnames = []
        for suffix, pshape in want.items():
            arr = (params or {})[suffix]
            if tuple(np.shape(arr)) != tuple(pshape):
                raise _Fail(f"{suffix} has shape {tuple(np.shape(arr))}, expected "
                            f"{tuple(pshape)}")
            pnames.append(self.param(arr, name, suffix))
        oname = self.fresh(out if out is not None and out not in self.taken else
                           (out or base))
        self.values[oname] = Value(oname, tuple(shape), layout=_layout(shape))
        src = f"onnx {self.cur.op_type} node {self.cur_name!r}" if self.cur is not None else ""
        self.nodes.append(Node(name, op, tuple(inputs) + tuple(pnames), (oname,), attrs,
                               Meta(ops=ops or (op.value,), source=src, layers=(name,))))
        return oname

    def reshape(self, x: str, shape: Sequence, tag: str = "reshape",
                out: Optional[str] = None) -> str:
        shape = tuple(shape)
        if self.values[x].shape == shape:
            return x
        return self.emit(Op.RESHAPE, [x], O.ReshapeAttrs(tuple(int(d) for d in shape[1:])),
                         tag=tag, out=out)

    def nchw(self, x: _Act, what: str) -> str:
        """The IR value of ``x`` with ONNX's axis 0 as the IR batch (for Conv, pools, BN,
        Gemm). One-sample mode accepts an ONNX batch of 1 there."""
        if self.natural:
            return x.name
        s = self.oshape(x)
        if not s or s[0] != 1:
            raise _Fail(f"{what} needs ONNX axis 0 as its batch axis; in one-sample mode "
                        f"(batch_axis=False) that axis must be 1, got shape {s}", batch=True)
        return self.reshape(x.name, (None,) + s[1:], tag="as_batch")

    def from_nchw(self, y: str, out: Optional[str] = None) -> _Act:
        if self.natural:
            return _Act(y)
        s = self.values[y].shape
        return _Act(self.reshape(y, (None, 1) + tuple(s[1:]), tag="one_sample", out=out))

    # ------------------------------------------------------------------ inputs
    def want_act(self, t: Any, what: str) -> _Act:
        if isinstance(t, _Act):
            return t
        if isinstance(t, _Mask):
            raise _Fail(f"{what} is Dropout's mask, which cnncomp does not compute")
        raise _Fail(f"{what} is a constant; cnncomp runs this op only on activations")

    def want_const(self, t: Any, what: str) -> np.ndarray:
        if isinstance(t, np.ndarray):
            return t
        if t is None:
            raise _Fail(f"{what} is missing")
        raise _Fail(f"{what} is computed at run time; cnncomp needs it constant (an "
                    "initializer, or a graph input bound as a constant)")

    # ------------------------------------------------------------------ driver
    def run(self) -> OnnxGraph:
        g = self.g
        inits = {}
        for t in g.initializer:
            a = _tensor(t)
            inits[t.name] = a
        for k, v in self.user_constants.items():
            a = np.asarray(v)
            a = a.astype(np.float32) if a.dtype in (np.float64, np.float16) else a
            inits[k] = a
        for k, a in inits.items():
            self.env[k] = a
            self.const_names[id(a)] = k
        data = [i for i in g.input if i.name not in inits]
        self._register_inputs(data)
        for o in g.output:
            self.taken.add(o.name)
        for i, node in enumerate(g.node):
            self.cur = node
            self.cur_name = node.name or f"{node.op_type}_{i}"
            self._convert(node)
        self.cur = None
        outputs = self._outputs()
        if self.problems:
            raise OnnxImportError(self.name, self.problems)
        self._merge_affine()
        self._fold_pads()
        graph = Graph(self.name, self.nodes, self.values, list(self.inputs.values()),
                      [o.value for o in outputs if o.kind == "value"], self.consts)
        graph = graph.replace()  # drop parameters and values no node reads
        graph.verify()
        return OnnxGraph(graph, self.natural, dict(self.inputs), dict(self.input_dtypes),
                         outputs, self.opset)

    def _register_inputs(self, data) -> None:
        batches = set()
        for vi in data:
            t = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                self.problems.append(Problem(vi.name, "input", "only tensor inputs are "
                                             "supported"))
                continue
            if t.elem_type not in _FLOAT_TYPES:
                dt = _ONNX_DTYPES.get(t.elem_type, f"type {t.elem_type}")
                dt = getattr(dt, "__name__", dt)
                self.problems.append(Problem(
                    vi.name, "input", f"data input of dtype {dt}; cnncomp computes float32 "
                    "activations (cast the input to float in the model, or bind it as a "
                    "constant with constants={...})"))
                self.env[vi.name] = _POISON
                continue
            shape = self.input_shapes.get(vi.name)
            if shape is None:
                dims = []
                for k, d in enumerate(t.shape.dim):
                    if d.HasField("dim_value") and d.dim_value > 0:
                        dims.append(int(d.dim_value))
                    elif k == 0 and self.natural:
                        dims.append(None)
                    else:
                        self.problems.append(Problem(
                            vi.name, "input", f"dimension {k} ({d.dim_param or '?'}) is "
                            "unknown; pass input_shapes={name: shape}"))
                        dims.append(1)
                shape = tuple(dims)
            if self.natural:
                if len(shape) == 0:
                    raise _batch_fail(f"input {vi.name!r} is a scalar")
                if shape[0] is not None:
                    batches.add(shape[0])
                ir = (None,) + tuple(shape[1:])
            else:
                ir = (None,) + tuple(1 if d is None else d for d in shape)
            self.taken.add(vi.name)
            self.values[vi.name] = Value(vi.name, ir, kind=INPUT, layout=_layout(ir))
            self.inputs[vi.name] = vi.name
            self.input_dtypes[vi.name] = _ONNX_DTYPES.get(t.elem_type, np.float32)
            self.env[vi.name] = _Act(vi.name)
        if len(batches) > 1:
            raise _batch_fail(f"the data inputs disagree on axis 0 ({sorted(batches)})")
        self.batch = batches.pop() if batches else 1

    def _convert(self, node) -> None:
        op = node.op_type
        outs = list(node.output)
        if node.domain not in ("", "ai.onnx"):
            self._problem(f"operator domain {node.domain!r} is not supported (only the "
                          "default ONNX domain)")
            return self._poison(outs)
        ins = [self.env.get(i, _POISON) if i else None for i in node.input]
        known = op in _ATTRS
        if not known:
            self._problem(f"operator {op} is not supported (the CNN operator set: "
                          "frontend.onnx_import.SUPPORTED_OPS)")
            return self._poison(outs)
        at = _attrs(node)
        bad = sorted(set(at) - _ATTRS[op] - _COMMON)
        if bad:
            self._problem(f"unsupported attribute(s) {', '.join(bad)}")
            return self._poison(outs)
        if any(i is _POISON for i in ins):
            return self._poison(outs)
        try:
            if all(i is None or isinstance(i, np.ndarray) for i in ins) and op in _FOLD:
                res = _FOLD[op](self, ins, at, node)
            elif op in _ACT_HANDLERS:
                res = _ACT_HANDLERS[op](self, ins, at, node)
            else:
                raise _Fail(f"{op} is supported only on constants (it is folded at import); "
                            "here an input is computed at run time")
        except _Fail as e:
            self._problem(str(e), batch=e.batch)
            return self._poison(outs)
        res = list(res) if isinstance(res, (list, tuple)) else [res]
        # numpy scalars (a Gather of one shape entry) are constants like any array
        res = [np.asarray(r) if isinstance(r, (np.generic, int, float)) else r for r in res]
        for k, o in enumerate(outs):
            if not o:
                continue
            if k >= len(res) or res[k] is None:
                self.env[o] = _Unavailable(f"output {k} of {op}")
            else:
                self.env[o] = res[k]

    def _problem(self, message: str, batch: bool = False) -> None:
        self.problems.append(Problem(self.cur_name, self.cur.op_type if self.cur else "",
                                     message, batch))

    def _poison(self, outs) -> None:
        for o in outs:
            if o:
                self.env[o] = _POISON

    def _outputs(self) -> list[OutputSpec]:
        specs, used = [], set()
        for vi in self.g.output:
            t = self.env.get(vi.name, _POISON)
            dt = _ONNX_DTYPES.get(vi.type.tensor_type.elem_type, np.float32)
            if t is _POISON:
                if not self.problems:
                    self.problems.append(Problem(vi.name, "output", "no node computes it"))
                continue
            if isinstance(t, _Unavailable):
                self.problems.append(Problem(vi.name, "output", f"{t.what} is not computed "
                                             "by cnncomp"))
                continue
            if isinstance(t, np.ndarray):
                specs.append(OutputSpec(vi.name, "constant", array=t, dtype=dt))
                continue
            if isinstance(t, _Mask):
                specs.append(OutputSpec(vi.name, "ones", value=t.ref.name, dtype=np.bool_))
                continue
            name = t.name
            if name in self.inputs.values() or name in used:
                self.cur_name = vi.name
                name = self.emit(Op.DROPOUT, [name], O.DropoutAttrs(0.0), out=vi.name,
                                 tag="identity", ops=("identity",))
            used.add(name)
            specs.append(OutputSpec(vi.name, "value", value=name, dtype=dt))
        for s in specs:  # a mask of an output's value needs that value computed
            if s.kind == "ones" and s.value not in used:
                used.add(s.value)
        return specs

    # ------------------------------------------------------------------ peepholes
    def _users(self) -> dict[str, int]:
        count: dict[str, int] = {}
        for n in self.nodes:
            for i in set(n.inputs):
                count[i] = count.get(i, 0) + 1
        return count

    def _merge_affine(self) -> None:
        """An affine batch_norm (from Mul/Add by a per-channel constant) right after
        another batch_norm merges into it: BN(x)*s + t is one BN."""
        while True:
            users = self._users()
            producer = {n.outputs[0]: n for n in self.nodes}
            outputs = set(self._graph_outputs())
            for a in self.nodes:
                if a.name not in self.affine_nodes:
                    continue
                p = producer.get(a.inputs[0])
                if (p is None or p.op is not Op.BATCH_NORM or users.get(p.outputs[0]) != 1
                        or p.outputs[0] in outputs):
                    continue
                s, t = self.consts[a.inputs[1]], self.consts[a.inputs[2]]
                gamma, beta = self.consts[p.inputs[1]], self.consts[p.inputs[2]]
                self.cur_name = p.name
                g2 = self.param((gamma.astype(np.float64) * s).astype(np.float32), p.name,
                                "weight")
                b2 = self.param((beta.astype(np.float64) * s + t).astype(np.float32), p.name,
                                "bias")
                merged = p.replace(inputs=(p.inputs[0], g2, b2) + p.inputs[3:],
                                   outputs=a.outputs,
                                   meta=Meta(ops=p.ops + a.ops, source=p.meta.source,
                                             layers=p.meta.layers + a.meta.layers))
                if p.name in self.affine_nodes:
                    self.affine_nodes.add(merged.name)
                self.affine_nodes.discard(a.name)
                self.nodes = [merged if n is p else n for n in self.nodes if n is not a]
                break
            else:
                return

    def _fold_pads(self) -> None:
        """A zero (or, for max pooling, -inf) constant Pad of H and W right before a
        Conv, AveragePool(count_include_pad) or MaxPool becomes that op's padding."""
        users = self._users()
        consumers: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                consumers.setdefault(i, []).append(n)
        outputs = set(self._graph_outputs())
        drop, replace = set(), {}
        for p in self.nodes:
            if p.op is not Op.PAD or p.attrs.mode != "constant" or len(p.attrs.pads) != 6:
                continue
            out = p.outputs[0]
            if users.get(out) != 1 or out in outputs:
                continue
            u = consumers[out][0]
            b, e = p.attrs.pads[:3], p.attrs.pads[3:]
            if b[0] or e[0] or min(b + e) < 0 or u.inputs[0] != out:
                continue
            v = p.attrs.value
            ok = (u.op is Op.CONV2D and v == 0.0
                  or u.op is Op.AVG_POOL2D and v == 0.0 and u.attrs.count_include_pad
                  or u.op is Op.MAX_POOL2D and v == -math.inf)
            if not ok:
                continue
            t, lft, bt, r = u.attrs.padding
            pads = (t + b[1], lft + b[2], bt + e[1], r + e[2])
            attrs = type(u.attrs)(**{**u.attrs.__dict__, "padding": pads})
            replace[u.name] = u.replace(inputs=(p.inputs[0],) + u.inputs[1:], attrs=attrs,
                                        meta=Meta(ops=("pad",) + u.ops, source=u.meta.source,
                                                  layers=p.meta.layers + u.meta.layers))
            drop.add(p.name)
        self.nodes = [replace.get(n.name, n) for n in self.nodes if n.name not in drop]

    def _graph_outputs(self) -> list[str]:
        out = []
        for vi in self.g.output:
            t = self.env.get(vi.name)
            if isinstance(t, _Act):
                out.append(t.name)
            elif isinstance(t, _Mask):
                out.append(t.ref.name)
        return out

    # ------------------------------------------------------------------ shared pieces
    def as_rank4(self, x: str) -> tuple[str, tuple]:
        """x as (N, C, rest, 1) when its rank is not 2 or 4 (for per-channel IR ops)."""
        s = self.values[x].shape
        if len(s) in (2, 4):
            return x, s
        if len(s) == 1:
            return self.reshape(x, (None, 1)), s
        return self.reshape(x, (None, s[1], _prod(s[2:]), 1)), s

    def affine(self, x: _Act, scale: np.ndarray, shift: np.ndarray, ops: tuple,
               out: Optional[str]) -> _Act:
        """x * scale + shift per IR channel (axis 1), as an inference batch_norm."""
        xi, orig = self.as_rank4(x.name)
        c = self.values[xi].shape[1]
        scale = np.broadcast_to(np.asarray(scale, np.float32), (c,)).copy()
        shift = np.broadcast_to(np.asarray(shift, np.float32), (c,)).copy()
        params = {"weight": scale, "bias": shift, "running_mean": np.zeros(c, np.float32),
                  "running_var": np.full(c, AFFINE_VAR, np.float32)}
        y = self.emit(Op.BATCH_NORM, [xi], O.BatchNormAttrs(eps=AFFINE_EPS), params,
                      out=out if xi == x.name else None, ops=ops)
        self.affine_nodes.add(self.nodes[-1].name)
        return _Act(self.reshape(y, orig, tag="restore", out=out))

    def softmax_along(self, x: str, axis: int, log: bool, out: Optional[str]) -> str:
        """(log-)softmax over IR ``axis`` >= 1 with the IR's axis-1 op."""
        op = Op.LOG_SOFTMAX if log else Op.SOFTMAX
        s = self.values[x].shape
        if len(s) in (2, 4) and axis == 1:
            return self.emit(op, [x], O.SoftmaxAttrs(1), out=out)
        if all(d == 1 for d in s[1:axis]):
            x4 = self.reshape(x, (None, s[axis], _prod(s[axis + 1:]), 1))
            y = self.emit(op, [x4], O.SoftmaxAttrs(1))
            return self.reshape(y, s, tag="restore", out=out)
        perm = list(range(len(s)))
        perm[1], perm[axis] = perm[axis], perm[1]
        t = self.emit(Op.TRANSPOSE, [x], O.TransposeAttrs(tuple(perm)), tag="to_axis1")
        y = self.softmax_along(t, 1, log, None)
        return self.emit(Op.TRANSPOSE, [y], O.TransposeAttrs(tuple(perm)), tag="back",
                         out=out)

    def spatial(self, x: _Act, at: dict, what: str, kernel: Optional[Sequence[int]] = None
                ) -> tuple[str, int, dict]:
        """The IR input (N, C, H, W) of a 1-D or 2-D window op and its geometry:
        kernel, strides, pads (top, left, bottom, right), dilations, all 2-D."""
        xi = self.nchw(x, what)
        s = self.values[xi].shape
        nsp = len(s) - 2
        if nsp not in (1, 2):
            raise _Fail(f"{what} over {nsp} spatial dimension(s) (input {self.oshape(x)}) "
                        "is not supported; cnncomp runs 1-D and 2-D windows")
        k = list(kernel if kernel is not None else at.get("kernel_shape", ()))
        if len(k) != nsp:
            raise _Fail(f"kernel_shape {k} does not match the {nsp} spatial dimension(s) "
                        f"of input {self.oshape(x)}")
        strides = list(at.get("strides", [1] * nsp))
        dil = list(at.get("dilations", [1] * nsp))
        pads = list(at.get("pads", [0] * 2 * nsp))
        auto = at.get("auto_pad", "NOTSET") or "NOTSET"
        sizes = list(s[2:])
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0] * 2 * nsp
            for i in range(nsp):
                out = -(-sizes[i] // strides[i])
                total = max((out - 1) * strides[i] + (k[i] - 1) * dil[i] + 1 - sizes[i], 0)
                small, big = total // 2, total - total // 2
                pads[i], pads[i + nsp] = (small, big) if auto == "SAME_UPPER" else (big, small)
        elif auto == "VALID":
            pads = [0] * 2 * nsp
        elif auto != "NOTSET":
            raise _Fail(f"unknown auto_pad {auto!r}")
        if len(strides) != nsp or len(dil) != nsp or len(pads) != 2 * nsp:
            raise _Fail(f"strides {strides}, dilations {dil} and pads {pads} do not match "
                        f"the {nsp} spatial dimension(s)")
        if nsp == 1:
            xi = self.reshape(xi, (None, s[1], 1, s[2]), tag="as_2d")
            geo = dict(kernel=(1, k[0]), stride=(1, strides[0]), dilation=(1, dil[0]),
                       padding=(0, pads[0], 0, pads[1]))
        else:
            geo = dict(kernel=tuple(k), stride=tuple(strides), dilation=tuple(dil),
                       padding=(pads[0], pads[1], pads[2], pads[3]))
        return xi, nsp, geo

    def unspatial(self, y: str, nsp: int, out: Optional[str]) -> _Act:
        if nsp == 1:
            s = self.values[y].shape
            y = self.reshape(y, (None, s[1], s[3]), tag="as_1d",
                             out=out if self.natural else None)
        return self.from_nchw(y, out=out)

    def binary(self, fn: str, a: Any, b: Any, out: Optional[str], at: dict) -> Any:
        """a fn b for activations and constants, with ONNX broadcasting."""
        if self.opset < 7 and at.get("broadcast", 0) == 1 and "axis" in at:
            if isinstance(b, np.ndarray):
                rank = len(self.oshape(a)) if isinstance(a, _Act) else a.ndim
                ax = int(at["axis"]) % rank
                b = b.reshape((1,) * ax + b.shape + (1,) * (rank - ax - b.ndim))
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            return _FOLD_BIN[fn](a, b)
        if isinstance(a, _Act) and isinstance(b, _Act):
            return self.binary_acts(fn, a, b, out)
        act, c, const_first = (a, b, False) if isinstance(a, _Act) else (b, a, True)
        act = self.want_act(act, "operand")
        c = np.asarray(c, np.float64)
        xs = self.oshape(act)
        try:
            full = np.broadcast_shapes(xs, c.shape)
        except ValueError:
            raise _Fail(f"shapes {xs} and {c.shape} do not broadcast") from None
        if tuple(full) != tuple(xs):
            raise _Fail(f"the constant of shape {c.shape} broadcasts the activation "
                        f"{xs} to {tuple(full)}; cnncomp needs the activation's shape kept")
        cal = c.reshape((1,) * (len(xs) - c.ndim) + c.shape)
        ir_c = cal if self.natural else cal.reshape((1,) + cal.shape)
        if self.natural and cal.shape and cal.shape[0] != 1:
            raise _Fail(f"a constant of shape {c.shape} varies along axis 0 (the batch)",
                        batch=True)
        irs = self.ir_shape(act)
        per_channel = all(d == 1 for k, d in enumerate(ir_c.shape) if k != 1)
        if len(irs) == 1:
            per_channel = ir_c.size == 1
        if not per_channel:
            raise _Fail(f"{fn} of an activation {xs} and a constant of shape {c.shape} "
                        "that is neither a scalar nor per-channel (axis 1) is not supported")
        v = ir_c.reshape(-1) if ir_c.size > 1 else ir_c.reshape(())
        if fn == "add":
            scale, shift = 1.0, v
        elif fn == "mul":
            scale, shift = v, 0.0
        elif fn == "sub":
            scale, shift = (-1.0, v) if const_first else (1.0, -v)
        else:  # div
            if const_first:
                raise _Fail("a constant divided by an activation is not supported")
            with np.errstate(divide="ignore"):
                scale, shift = 1.0 / v, 0.0
        return self.affine(act, scale, shift, (fn,), out)

    def binary_acts(self, fn: str, a: _Act, b: _Act, out: Optional[str]) -> _Act:
        sa, sb = self.oshape(a), self.oshape(b)
        try:
            full = tuple(np.broadcast_shapes(sa, sb))
        except ValueError:
            raise _Fail(f"shapes {sa} and {sb} do not broadcast") from None
        if self.natural and (len(sa) != len(sb)):
            raise _batch_fail(f"operands of rank {len(sa)} and {len(sb)} broadcast along "
                              "axis 0")
        ai, bi = a.name, b.name
        if not self.natural:
            r = len(full)
            ai = self.reshape(ai, (None,) + (1,) * (r - len(sa)) + tuple(sa), tag="align")
            bi = self.reshape(bi, (None,) + (1,) * (r - len(sb)) + tuple(sb), tag="align_b")
        if fn == "add" and sa == sb:
            return _Act(self.emit(Op.ADD, [ai, bi], O.AddAttrs(), out=out))
        return _Act(self.emit(Op.BINARY, [ai, bi], O.BinaryAttrs(fn), out=out, ops=(fn,)))


class _Unavailable:
    def __init__(self, what: str):
        self.what = what


# --------------------------------------------------------------------------- handlers
# Each takes (importer, inputs, attrs, node) and returns the node's outputs: _Act for
# activations, np.ndarray for constants. A handler raises _Fail for what it cannot do.

def _out(node, k: int = 0) -> Optional[str]:
    return node.output[k] if len(node.output) > k and node.output[k] else None


def _h_conv(im: _Importer, ins, at, node):
    x = im.want_act(ins[0], "input X")
    w = im.want_const(ins[1] if len(ins) > 1 else None, "weight W")
    b = ins[2] if len(ins) > 2 else None
    if b is not None:
        b = im.want_const(b, "bias B")
    if w.ndim not in (3, 4):
        raise _Fail(f"weight of rank {w.ndim} ({w.shape}): cnncomp runs 1-D and 2-D "
                    "convolutions")
    k = list(at.get("kernel_shape", w.shape[2:]))
    if tuple(k) != tuple(w.shape[2:]):
        raise _Fail(f"kernel_shape {k} does not match the weight {w.shape}")
    xi, nsp, geo = im.spatial(x, at, "Conv", kernel=k)
    group = int(at.get("group", 1))
    cin = im.values[xi].shape[1]
    if w.shape[1] * group != cin:
        raise _Fail(f"weight {w.shape} with group={group} expects {w.shape[1] * group} input "
                    f"channels, the input has {cin}")
    w4 = w.reshape(w.shape[0], w.shape[1], 1, w.shape[2]) if nsp == 1 else w
    if w4 is not w and id(w) in im.const_names:
        pass  # a reshaped weight is a new parameter
    attrs = O.Conv2dAttrs(int(w.shape[0]), geo["kernel"], geo["stride"], geo["padding"],
                          geo["dilation"], group, b is not None)
    params = {"weight": w4}
    if b is not None:
        params["bias"] = b.reshape(-1)
    y = im.emit(Op.CONV2D, [xi], attrs, params, out=_out(node) if nsp == 2 else None)
    return im.unspatial(y, nsp, _out(node))


def _h_pool(kind: str):
    def h(im: _Importer, ins, at, node):
        x = im.want_act(ins[0], "input X")
        if kind == "MaxPool" and len(node.output) > 1 and node.output[1]:
            raise _Fail("the Indices output (argmax) is not supported")
        if "kernel_shape" not in at:
            raise _Fail("kernel_shape is required")
        xi, nsp, geo = im.spatial(x, at, kind)
        ceil = bool(at.get("ceil_mode", 0))
        if kind == "MaxPool":
            attrs = O.MaxPoolAttrs(geo["kernel"], geo["stride"], geo["padding"],
                                   geo["dilation"], ceil)
            y = im.emit(Op.MAX_POOL2D, [xi], attrs, out=_out(node) if nsp == 2 else None)
        elif kind == "AveragePool":
            if geo["dilation"] != (1, 1):
                raise _Fail(f"dilations {at.get('dilations')} are not supported for "
                            "AveragePool")
            attrs = O.AvgPoolAttrs(geo["kernel"], geo["stride"], geo["padding"], ceil,
                                   bool(at.get("count_include_pad", 0)))
            y = im.emit(Op.AVG_POOL2D, [xi], attrs, out=_out(node) if nsp == 2 else None)
        else:
            p = int(at.get("p", 2))
            if geo["dilation"] != (1, 1):
                raise _Fail(f"dilations {at.get('dilations')} are not supported for LpPool")
            if p < 1:
                raise _Fail(f"p={p} must be a positive integer")
            if p % 2:  # cnncomp's LP pooling sums x**p: pool |x| = max(x, -x) for odd p
                neg = im.affine(_Act(xi), -1.0, 0.0, ("neg",), None)
                xi = im.emit(Op.BINARY, [xi, neg.name], O.BinaryAttrs("max"), tag="abs",
                             ops=("abs",))
            if any(geo["padding"]):
                t, lft, bt, r = geo["padding"]
                xi = im.emit(Op.PAD, [xi], O.PadAttrs((0, t, lft, 0, bt, r)), tag="pad")
            attrs = O.LPPoolAttrs(float(p), geo["kernel"], geo["stride"], ceil)
            if ceil:
                exact = O.output_shapes(Op.LP_POOL2D, O.LPPoolAttrs(float(p), geo["kernel"],
                                                                    geo["stride"], False),
                                        [im.values[xi].shape])[0]
                if exact != O.output_shapes(Op.LP_POOL2D, attrs, [im.values[xi].shape])[0]:
                    raise _Fail("ceil_mode with partial windows is not supported for LpPool")
            y = im.emit(Op.LP_POOL2D, [xi], attrs, out=_out(node) if nsp == 2 else None)
        return im.unspatial(y, nsp, _out(node))
    return h


def _h_global_pool(kind: str):
    def h(im: _Importer, ins, at, node):
        x = im.want_act(ins[0], "input X")
        s = im.oshape(x)
        if len(s) < 3:
            raise _Fail(f"{kind} needs an (N, C, spatial...) input, got {s}")
        irs = im.ir_shape(x)
        nsp = len(s) - 2
        lead = irs[:len(irs) - nsp]
        spatial = irs[len(irs) - nsp:]
        xi = im.reshape(x.name, (None, _prod(lead[1:]), *((spatial if nsp == 2 else
                                                           (_prod(spatial), 1)))))
        if kind == "GlobalAveragePool":
            y = im.emit(Op.GLOBAL_AVG_POOL2D, [xi], O.NoAttrs())
        else:
            hw = im.values[xi].shape[2:]
            y = im.emit(Op.MAX_POOL2D, [xi], O.MaxPoolAttrs(tuple(hw), (1, 1)))
        return _Act(im.reshape(y, tuple(lead) + (1,) * nsp, tag="keepdims", out=_out(node)))
    return h


def _h_bn(im: _Importer, ins, at, node):
    x = im.want_act(ins[0], "input X")
    if int(at.get("training_mode", 0)):
        raise _Fail("training_mode=1 (batch statistics) is not supported; export the model "
                    "in eval mode")
    if len(ins) < 5:
        raise _Fail("needs X, scale, B, mean and var")
    scale, bias, mean, var = (im.want_const(ins[k], n) for k, n in
                              [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")])
    xi = im.nchw(x, "BatchNormalization")
    s = im.values[xi].shape
    if len(s) < 2:
        raise _Fail(f"input {im.oshape(x)} has no channel axis")
    c = s[1]
    if any(a.size != c for a in (scale, bias, mean, var)):
        raise _Fail(f"scale/B/mean/var of shapes {[a.shape for a in (scale, bias, mean, var)]}"
                    f" are not per-channel ({c}) (spatial=0 is not supported)")
    eps = float(at.get("epsilon", 1e-5))
    x4, orig = im.as_rank4(xi)
    params = {"weight": scale.reshape(-1), "bias": bias.reshape(-1),
              "running_mean": mean.reshape(-1), "running_var": var.reshape(-1)}
    y = im.emit(Op.BATCH_NORM, [x4], O.BatchNormAttrs(eps=eps, momentum=float(
        at.get("momentum", 0.9)) if False else 0.1), params,
        out=_out(node) if x4 == xi and im.natural else None)
    y = im.reshape(y, orig, tag="restore", out=_out(node) if im.natural else None)
    return [im.from_nchw(y, out=_out(node))]


def _h_unary(op: Op, attrs_fn=None):
    def h(im: _Importer, ins, at, node):
        x = im.want_act(ins[0], "input X")
        a = attrs_fn(at) if attrs_fn else O.NoAttrs()
        return _Act(im.emit(op, [x.name], a, out=_out(node)))
    return h


def _h_softmax(log: bool):
    def h(im: _Importer, ins, at, node):
        x = im.want_act(ins[0], "input")
        s = im.oshape(x)
        r = len(s)
        if im.opset >= 13:
            ax = im.axis(at.get("axis", -1), r)
            return _Act(im.softmax_along(x.name, ax, log, _out(node)))
        a = int(at.get("axis", 1))
        a = a % r if -r <= a < r else a
        if im.natural and a == 0:
            raise _batch_fail("axis 0 (opset < 13 flattens from the axis on, batch included)")
        irs = im.ir_shape(x)
        ia = a if im.natural else a + 1
        m, k = _prod(irs[1:ia]), _prod(irs[ia:])
        x3 = im.reshape(x.name, (None, m, k), tag="as_2d")
        y = im.softmax_along(x3, 2, log, None)
        return _Act(im.reshape(y, irs, tag="restore", out=_out(node)))
    return h


def _h_lrn(im: _Importer, ins, at, node):
    x = im.want_act(ins[0], "input X")
    size = int(at.get("size", 0))
    if size < 1 or size % 2 == 0:
        raise _Fail(f"size={size}: cnncomp's LRN window is centred, so size must be odd "
                    "(ONNX and PyTorch place an even window differently)")
    xi = im.nchw(x, "LRN")
    x4, orig = im.as_rank4(xi)
    if len(im.values[x4].shape) != 4:
        raise _Fail(f"LRN needs an (N, C, ...) input, got {im.oshape(x)}")
    y = im.emit(Op.LOCAL_RESPONSE_NORM, [x4], O.LRNAttrs(
        size, float(at.get("alpha", 1e-4)), float(at.get("beta", 0.75)),
        float(at.get("bias", 1.0))), out=_out(node) if x4 == xi and im.natural else None)
    y = im.reshape(y, orig, tag="restore")
    return im.from_nchw(y, out=_out(node))


def _linear(im: _Importer, a: _Act, w: np.ndarray, bias: Optional[np.ndarray], what: str,
            out: Optional[str], trans_a: bool = False) -> _Act:
    """a @ w.T + bias for a 2-D activation a (rows = the batch)."""
    s = im.oshape(a)
    if len(s) != 2:
        raise _Fail(f"{what} of a rank-{len(s)} activation {s} is not supported (cnncomp's "
                    "linear takes (N, features))")
    if trans_a:
        if im.natural:
            raise _batch_fail(f"{what} with transA=1 transposes the batch axis")
        xi = im.emit(Op.TRANSPOSE, [a.name], O.TransposeAttrs((0, 2, 1)), tag="transA")
        ai = _Act(xi)
    else:
        ai = a
    xi = im.nchw(ai, what)
    if im.values[xi].shape[1] != w.shape[1]:
        raise _Fail(f"inner dimensions differ: activation {s} and weight (out, in) "
                    f"{w.shape}")
    params = {"weight": w}
    if bias is not None:
        params["bias"] = bias
    y = im.emit(Op.LINEAR, [xi], O.LinearAttrs(int(w.shape[0]), bias is not None), params,
                out=out if im.natural else None)
    return im.from_nchw(y, out=out)


def _h_gemm(im: _Importer, ins, at, node):
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    ta, tb = int(at.get("transA", 0)), int(at.get("transB", 0))
    if not isinstance(a, _Act):
        raise _Fail("A is a constant and B computed at run time: only activation @ constant "
                    "weight is supported")
    bw = im.want_const(b, "B (the weight)")
    if bw.ndim != 2:
        raise _Fail(f"B must be 2-D, got {bw.shape}")
    w = bw if tb else bw.T
    if alpha != 1.0:
        w = w.astype(np.float64) * alpha
    m = w.shape[0]
    bias = None
    extra = None
    if c is not None:
        if isinstance(c, np.ndarray):
            cc = np.asarray(c, np.float64) * beta
            rows = im.oshape(a)[1 if ta else 0]
            try:
                full = np.broadcast_to(cc, (rows, m))
            except ValueError:
                raise _Fail(f"C of shape {c.shape} does not broadcast to ({rows}, {m})") \
                    from None
            if not (full == full[:1]).all():
                if im.natural:
                    raise _batch_fail(f"C of shape {c.shape} differs between rows")
                raise _Fail(f"C of shape {c.shape} differs between rows (the batch)")
            bias = full[0].astype(np.float32)
        else:
            extra = c
    y = _linear(im, a, np.asarray(w, np.float32), bias, "Gemm",
                _out(node) if extra is None else None, trans_a=bool(ta))
    if extra is not None:
        if beta != 1.0:
            raise _Fail("a computed C with beta != 1 is not supported")
        return im.binary("add", y, extra, _out(node), {})
    return y


def _h_matmul(im: _Importer, ins, at, node):
    a, b = ins
    if not isinstance(a, _Act) or not isinstance(b, np.ndarray):
        raise _Fail("only activation @ constant matrix is supported (weights on the right)")
    if b.ndim != 2:
        raise _Fail(f"the constant operand must be 2-D, got {b.shape}")
    return _linear(im, a, np.ascontiguousarray(b.T), None, "MatMul", _out(node))


def _reshape_act(im: _Importer, x: _Act, target: Sequence[int], what: str,
                 out: Optional[str], op: Op = Op.RESHAPE) -> _Act:
    ir = im.to_ir(target, what)
    if ir == im.ir_shape(x):
        return x
    if op is Op.FLATTEN:
        return _Act(im.emit(Op.FLATTEN, [x.name], O.NoAttrs(), out=out))
    return _Act(im.reshape(x.name, ir, tag="", out=out))


def _onnx_reshape(shape: Sequence[int], target: Sequence[int], allowzero: bool) -> list[int]:
    t = [int(d) for d in target]
    if not allowzero:
        t = [shape[i] if d == 0 else d for i, d in enumerate(t)]
    if t.count(-1) > 1:
        raise _Fail(f"shape {list(target)} has more than one -1")
    total = _prod(shape)
    if -1 in t:
        known = _prod(d for d in t if d != -1)
        if known == 0 or total % known:
            raise _Fail(f"cannot reshape {tuple(shape)} to {list(target)}")
        t[t.index(-1)] = total // known
    if _prod(t) != total:
        raise _Fail(f"cannot reshape {tuple(shape)} ({total} elements) to {list(target)}")
    return t


def _h_reshape(im: _Importer, ins, at, node):
    x = im.want_act(ins[0], "data")
    target = at["shape"] if im.opset < 5 else im.want_const(ins[1] if len(ins) > 1 else None,
                                                             "shape")
    t = _onnx_reshape(im.oshape(x), list(np.asarray(target).reshape(-1)),
                      bool(at.get("allowzero", 0)))
    return _reshape_act(im, x, t, f"Reshape to {list(np.asarray(target).reshape(-1))}",
                        _out(node))


def _h_flatten(im: _Importer, ins, at, node):
    x = im.want_act(ins[0], "input")
    s = im.oshape(x)
    a = int(at.get("axis", 1))
    if not -len(s) <= a <= len(s):
        raise _Fail(f"axis {a} is out of range for rank {len(s)}")
    a = a + len(s) if a < 0 else a
    t = [_prod(s[:a]), _prod(s[a:])]
    op = Op.FLATTEN if im.natural and a == 1 and len(s) > 2 else Op.RESHAPE
    return _reshape_act(im, x, t, f"Flatten(axis={a})", _out(node), op)


def _axes_arg(im: _Importer, ins, at, k: int = 1) -> Optional[list[int]]:
    if im.opset >= 13:
        if len(ins) > k and ins[k] is not None:
            return [int(v) for v in im.want_const(ins[k], "axes").reshape(-1)]
        return None
    return list(at["axes"]) if "axes" in at else None


def _h_unsqueeze(im: _Importer, ins, at, node):
    x = im.want_act(ins[0], "data")
    axes = _axes_arg(im, ins, at)
    if axes is None:
        raise _Fail("axes are required")
    return _reshape_act(im, x, _unsqueeze_shape(im.oshape(x), axes), "Unsqueeze", _out(node))


def _unsqueeze_shape(s: Sequence[int], axes: Sequence[int]) -> list[int]:
    r = len(s) + len(axes)
    axes = sorted(a % r for a in axes)
    out, it = [], iter(s)
    for i in range(r):
        out.append(1 if i in axes else next(it))
    return out


def _squeeze_shape(s: Sequence[int], axes: Optional[Sequence[int]]) -> list[int]:
    if axes is None:
        return [d for d in s if d != 1]
    axes = {a % len(s) for a in axes}
    if any(s[a] != 1 for a in axes):
        raise _Fail(f"cannot squeeze axes {sorted(axes)} of shape {tuple(s)}")
    return [d for i, d in enumerate(s) if i not in axes]


def _h_squeeze(im: _Importer, ins, at, node):
    x = im.want_act(ins[0], "data")
    t = _squeeze_shape(im.oshape(x), _axes_arg(im, ins, at))
    return _reshape_act(im, x, t, "Squeeze", _out(node))


def _h_concat(im: _Importer, ins, at, node):
    parts = [t for t in ins if t is not None]
    if any(isinstance(t, np.ndarray) for t in parts):
        raise _Fail("concatenating activations with constants is not supported")
    acts = [im.want_act(t, f"input {k}") for k, t in enumerate(parts)]
    if "axis" not in at and im.opset >= 4:
        raise _Fail("axis is required")
    r = len(im.oshape(acts[0]))
    ax = im.axis(at.get("axis", 1), r)
    if len(acts) == 1:
        return acts[0]
    return _Act(im.emit(Op.CONCAT, [a.name for a in acts], O.ConcatAttrs(ax), out=_out(node)))


def _h_binary(fn: str):
    def h(im: _Importer, ins, at, node):
        return im.binary(fn, ins[0], ins[1], _out(node), at)
    return h


def _h_sum(im: _Importer, ins, at, node):
    parts = [t for t in ins if t is not None]
    if len(parts) == 1:
        return parts[0]
    acts = [t for t in parts if isinstance(t, _Act)]
    consts = [t for t in parts if isinstance(t, np.ndarray)]
    if len(acts) >= 2 and not consts and len({im.oshape(a) for a in acts}) == 1:
        return _Act(im.emit(Op.ADD, [a.name for a in acts], O.AddAttrs(), out=_out(node)))
    acc = parts[0]
    for k, t in enumerate(parts[1:], 1):
        acc = im.binary("add", acc, t, _out(node) if k == len(parts) - 1 else None, {})
    return acc


def _h_variadic(fn: str):
    """Max / Min of several operands (activations and constants), pairwise."""
    def h(im: _Importer, ins, at, node):
        parts = [t for t in ins if t is not None]
        acc = parts[0]
        for k, t in enumerate(parts[1:], 1):
            last = k == len(parts) - 1
            if isinstance(acc, _Act) and isinstance(t, _Act):
                acc = im.binary_acts(fn, acc, t, _out(node) if last else None)
            elif isinstance(acc, np.ndarray) and isinstance(t, np.ndarray):
                acc = _FOLD_BIN[fn](acc, t)
            else:
                act, c = (acc, t) if isinstance(acc, _Act) else (t, acc)
                c = np.asarray(c, np.float32)
                if c.size == 1 and fn == "max" and float(c.reshape(-1)[0]) == 0.0:
                    acc = _Act(im.emit(Op.RELU, [act.name], O.NoAttrs(),
                                       out=_out(node) if last else None, ops=("max",)))
                elif c.size == 1:
                    v = float(c.reshape(-1)[0])
                    lo, hi = (v, math.inf) if fn == "max" else (-math.inf, v)
                    acc = _Act(im.emit(Op.CLIP, [act.name], O.ClipAttrs(lo, hi),
                                       out=_out(node) if last else None, ops=(fn,)))
                else:
                    raise _Fail(f"{fn} of an activation and a non-scalar constant is not "
                                "supported")
        return acc
    return h


def _h_dropout(im: _Importer, ins, at, node):
    x = ins[0]
    training = False
    if im.opset >= 12 and len(ins) > 2 and ins[2] is not None:
        training = bool(np.asarray(im.want_const(ins[2], "training_mode")).reshape(-1)[0])
    ratio = at.get("ratio", 0.5)
    if im.opset >= 12:
        ratio = (float(np.asarray(im.want_const(ins[1], "ratio")).reshape(-1)[0])
                 if len(ins) > 1 and ins[1] is not None else 0.5)
    if training and ratio != 0.0:
        raise _Fail("training_mode=True drops random elements; cnncomp imports inference "
                    "graphs (set training_mode False)")
    outs = [x]
    if len(node.output) > 1 and node.output[1]:
        if isinstance(x, np.ndarray):
            outs.append(np.ones(x.shape, np.bool_))
        else:
            outs.append(_Mask(im.want_act(x, "input")))
    return outs


def _h_castlike(im: _Importer, ins, at, node):
    """CastLike to a float activation's type: activations are float32 already, and a
    constant becomes float32."""
    x = ins[0]
    if isinstance(x, np.ndarray):
        return np.asarray(x, np.float32)
    return x


def _h_identity(im: _Importer, ins, at, node):
    return ins[0]


def _h_pad(im: _Importer, ins, at, node):
    x = im.want_act(ins[0], "data")
    s = im.oshape(x)
    r = len(s)
    if im.opset < 11:
        pads = list(at.get("pads", at.get("paddings", [])))
        value = float(at.get("value", 0.0))
        axes = list(range(r))
    else:
        pads = [int(v) for v in im.want_const(ins[1] if len(ins) > 1 else None,
                                              "pads").reshape(-1)]
        value = 0.0
        if len(ins) > 2 and ins[2] is not None:
            cv = np.asarray(im.want_const(ins[2], "constant_value")).reshape(-1)
            value = float(cv[0]) if cv.size else 0.0
        axes = (list(range(r)) if len(ins) <= 3 or ins[3] is None else
                [int(a) % r for a in im.want_const(ins[3], "axes").reshape(-1)])
    mode = at.get("mode", "constant")
    if len(pads) != 2 * len(axes):
        raise _Fail(f"{len(pads)} pads for {len(axes)} axes")
    begin, end = [0] * r, [0] * r
    for k, a in enumerate(axes):
        begin[a], end[a] = int(pads[k]), int(pads[k + len(axes)])
    if not any(begin) and not any(end):
        return x
    if im.natural:
        if begin[0] or end[0]:
            raise _batch_fail(f"pads {pads} pad axis 0")
        irp = tuple(begin[1:] + end[1:])
    else:
        irp = tuple(begin + end)
    if mode not in O.PAD_MODES:
        raise _Fail(f"mode {mode!r} is not supported; known: {', '.join(O.PAD_MODES)}")
    return _Act(im.emit(Op.PAD, [x.name], O.PadAttrs(irp, mode, value), out=_out(node)))


def _h_clip(im: _Importer, ins, at, node):
    x = im.want_act(ins[0], "input")
    if im.opset < 11:
        lo, hi = float(at.get("min", -math.inf)), float(at.get("max", math.inf))
    else:
        lo = (float(np.asarray(im.want_const(ins[1], "min")).reshape(-1)[0])
              if len(ins) > 1 and ins[1] is not None else -math.inf)
        hi = (float(np.asarray(im.want_const(ins[2], "max")).reshape(-1)[0])
              if len(ins) > 2 and ins[2] is not None else math.inf)
    lo = -math.inf if lo <= -3.4e38 else lo
    hi = math.inf if hi >= 3.4e38 else hi
    if lo == 0.0 and hi == math.inf:
        return _Act(im.emit(Op.RELU, [x.name], O.NoAttrs(), out=_out(node), ops=("clip",)))
    if lo == -math.inf and hi == math.inf:
        return x
    return _Act(im.emit(Op.CLIP, [x.name], O.ClipAttrs(lo, hi), out=_out(node)))


def _h_transpose(im: _Importer, ins, at, node):
    x = im.want_act(ins[0], "data")
    r = len(im.oshape(x))
    perm = [int(p) for p in at.get("perm", list(range(r))[::-1])]
    if sorted(perm) != list(range(r)):
        raise _Fail(f"perm {perm} is not a permutation of {r} axes")
    if perm == list(range(r)):
        return x
    if im.natural:
        if perm[0] != 0:
            raise _batch_fail(f"perm {perm} moves axis 0")
        irp = tuple(perm)
    else:
        irp = (0,) + tuple(p + 1 for p in perm)
    return _Act(im.emit(Op.TRANSPOSE, [x.name], O.TransposeAttrs(irp), out=_out(node)))


def _h_shape(im: _Importer, ins, at, node):
    x = ins[0]
    s = np.array(im.oshape(x) if isinstance(x, _Act) else np.shape(x), np.int64)
    start, end = int(at.get("start", 0)), at.get("end")
    return s[start:None if end is None else int(end)]


_ACT_HANDLERS = {
    "Conv": _h_conv, "BatchNormalization": _h_bn,
    "Relu": _h_unary(Op.RELU), "Sigmoid": _h_unary(Op.SIGMOID), "Tanh": _h_unary(Op.TANH),
    "LeakyRelu": _h_unary(Op.LEAKY_RELU,
                          lambda at: O.LeakyReluAttrs(float(at.get("alpha", 0.01)))),
    "Softmax": _h_softmax(False), "LogSoftmax": _h_softmax(True),
    "MaxPool": _h_pool("MaxPool"), "AveragePool": _h_pool("AveragePool"),
    "LpPool": _h_pool("LpPool"),
    "GlobalAveragePool": _h_global_pool("GlobalAveragePool"),
    "GlobalMaxPool": _h_global_pool("GlobalMaxPool"),
    "LRN": _h_lrn, "Gemm": _h_gemm, "MatMul": _h_matmul, "Flatten": _h_flatten,
    "Reshape": _h_reshape, "Squeeze": _h_squeeze, "Unsqueeze": _h_unsqueeze,
    "Concat": _h_concat, "Add": _h_binary("add"), "Sub": _h_binary("sub"),
    "Mul": _h_binary("mul"), "Div": _h_binary("div"), "Sum": _h_sum,
    "Dropout": _h_dropout, "Pad": _h_pad, "Clip": _h_clip, "Identity": _h_identity,
    "Transpose": _h_transpose, "Shape": _h_shape, "CastLike": _h_castlike,
    "Max": _h_variadic("max"),
    "Min": _h_variadic("min"),
}


# --------------------------------------------------------------------------- folding
# numpy versions of ops whose every input is a constant (shape arithmetic, weights
# computed by the exporter). Float results are float32, as the IR computes.

def _f32(a):
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype.kind == "f" and a.dtype != np.float32 else a


_FOLD_BIN = {"max": lambda a, b: np.maximum(a, b), "min": lambda a, b: np.minimum(a, b),
             "add": lambda a, b: _f32(np.add(a, b)), "sub": lambda a, b: _f32(np.subtract(a, b)),
             "mul": lambda a, b: _f32(np.multiply(a, b)),
             "div": lambda a, b: (_f32(np.true_divide(a, b)) if np.asarray(a).dtype.kind == "f"
                                  or np.asarray(b).dtype.kind == "f"
                                  else np.asarray(np.trunc(np.true_divide(a, b))).astype(
                                      np.result_type(a, b)))}


def _fold_constant(im, ins, at, node):
    if "value" in at:
        return _tensor(at["value"])
    if "value_float" in at:
        return np.array(at["value_float"], np.float32)
    if "value_floats" in at:
        return np.array(at["value_floats"], np.float32)
    if "value_int" in at:
        return np.array(at["value_int"], np.int64)
    if "value_ints" in at:
        return np.array(at["value_ints"], np.int64)
    raise _Fail("no supported value attribute (sparse and string constants are not "
                "supported)")


def _fold_cos(im, ins, at, node):
    shape = [int(d) for d in np.asarray(ins[0]).reshape(-1)]
    v = _tensor(at["value"]) if "value" in at else np.zeros(1, np.float32)
    return np.full(shape, v.reshape(-1)[0], dtype=v.dtype)


def _fold_cast(im, ins, at, node):
    to = at["to"]
    if isinstance(to, str):
        to = {"FLOAT": 1, "INT64": 7, "INT32": 6, "DOUBLE": 11, "BOOL": 9, "FLOAT16": 10,
              "INT8": 3, "UINT8": 2}.get(to.upper(), 0)
    dt = _ONNX_DTYPES.get(int(to))
    if dt is None:
        raise _Fail(f"Cast to type {to} is not supported")
    return np.asarray(ins[0]).astype(dt)


def _fold_slice(im, ins, at, node):
    x = np.asarray(ins[0])
    if im.opset < 10:
        starts, ends = list(at["starts"]), list(at["ends"])
        axes = list(at.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts = [int(v) for v in ins[1].reshape(-1)]
        ends = [int(v) for v in ins[2].reshape(-1)]
        axes = ([int(v) for v in ins[3].reshape(-1)] if len(ins) > 3 and ins[3] is not None
                else list(range(len(starts))))
        steps = ([int(v) for v in ins[4].reshape(-1)] if len(ins) > 4 and ins[4] is not None
                 else [1] * len(starts))
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        sl[a % x.ndim] = slice(s, e, st)
    return x[tuple(sl)]


def _fold_gemm(im, ins, at, node):
    a, b = np.asarray(ins[0], np.float64), np.asarray(ins[1], np.float64)
    a = a.T if at.get("transA", 0) else a
    b = b.T if at.get("transB", 0) else b
    y = float(at.get("alpha", 1.0)) * (a @ b)
    if len(ins) > 2 and ins[2] is not None:
        y = y + float(at.get("beta", 1.0)) * np.asarray(ins[2], np.float64)
    return y.astype(np.float32)


def _fold_unary(fn):
    return lambda im, ins, at, node: _f32(fn(np.asarray(ins[0])))


def _fold_softmax(log: bool):
    def f(im, ins, at, node):
        x = np.asarray(ins[0], np.float64)
        ax = int(at.get("axis", -1 if im.opset >= 13 else 1))
        if im.opset < 13:
            shp = x.shape
            x = x.reshape(_prod(shp[:ax % x.ndim]), -1)
            ax = 1
        m = x.max(axis=ax, keepdims=True)
        lse = m + np.log(np.exp(x - m).sum(axis=ax, keepdims=True))
        y = x - lse if log else np.exp(x - lse)
        return y.reshape(np.shape(ins[0])).astype(np.float32)
    return f


def _fold_via(handler_fold):
    return handler_fold


def _fold_reshape(im, ins, at, node):
    x = np.asarray(ins[0])
    target = at["shape"] if im.opset < 5 else ins[1]
    return x.reshape(_onnx_reshape(x.shape, list(np.asarray(target).reshape(-1)),
                                   bool(at.get("allowzero", 0))))


def _fold_squeeze(im, ins, at, node):
    x = np.asarray(ins[0])
    return x.reshape(_squeeze_shape(x.shape, _axes_arg(im, ins, at)))


def _fold_unsqueeze(im, ins, at, node):
    x = np.asarray(ins[0])
    return x.reshape(_unsqueeze_shape(x.shape, _axes_arg(im, ins, at)))


def _fold_flatten(im, ins, at, node):
    x = np.asarray(ins[0])
    a = int(at.get("axis", 1)) % (x.ndim + 1)
    return x.reshape(_prod(x.shape[:a]), _prod(x.shape[a:]))


def _fold_clip(im, ins, at, node):
    x = np.asarray(ins[0])
    if im.opset < 11:
        lo, hi = at.get("min", -np.inf), at.get("max", np.inf)
    else:
        lo = ins[1] if len(ins) > 1 and ins[1] is not None else -np.inf
        hi = ins[2] if len(ins) > 2 and ins[2] is not None else np.inf
    return np.minimum(np.maximum(x, lo), hi).astype(x.dtype)


def _fold_bn(im, ins, at, node):
    x, s, b, m, v = (np.asarray(t, np.float64) for t in ins[:5])
    sh = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - m.reshape(sh)) / np.sqrt(v.reshape(sh) + float(at.get("epsilon", 1e-5)))
    return (y * s.reshape(sh) + b.reshape(sh)).astype(np.float32)


def _fold_pad(im, ins, at, node):
    x = np.asarray(ins[0])
    if im.opset < 11:
        pads = list(at.get("pads", at.get("paddings", [])))
        value = at.get("value", 0.0)
    else:
        pads = [int(v) for v in ins[1].reshape(-1)]
        value = (np.asarray(ins[2]).reshape(-1)[0] if len(ins) > 2 and ins[2] is not None
                 else 0)
    r = x.ndim
    if any(p < 0 for p in pads) or len(pads) != 2 * r:
        raise _Fail("folding a Pad with negative pads or axes is not supported")
    mode = at.get("mode", "constant")
    width = [(pads[i], pads[i + r]) for i in range(r)]
    if mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=value)
    return np.pad(x, width, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


def _fold_transpose(im, ins, at, node):
    x = np.asarray(ins[0])
    return np.transpose(x, at.get("perm", None))


def _fold_concat(im, ins, at, node):
    parts = [np.asarray(t) for t in ins if t is not None]
    parts = [p for p in parts if p.size or p.ndim > 1] or parts
    return np.concatenate(parts, axis=int(at.get("axis", 1)))


def _fold_gather(im, ins, at, node):
    return np.take(np.asarray(ins[0]), np.asarray(ins[1]).astype(np.int64),
                   axis=int(at.get("axis", 0)))


def _fold_lrn(im, ins, at, node):
    x = np.asarray(ins[0], np.float64)
    size = int(at["size"])
    c = x.shape[1]
    sq = np.zeros_like(x)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    for j in range(c):
        sq[:, j] = (x[:, max(0, j - lo):min(c, j + hi + 1)] ** 2).sum(axis=1)
    y = x / (float(at.get("bias", 1.0)) + float(at.get("alpha", 1e-4)) / size * sq) \
        ** float(at.get("beta", 0.75))
    return y.astype(np.float32)


_FOLD = {
    "Constant": _fold_constant, "ConstantOfShape": _fold_cos, "Identity": _h_identity,
    "Cast": _fold_cast, "Shape": _h_shape,
    "CastLike": lambda im, ins, at, n: np.asarray(ins[0]).astype(np.asarray(ins[1]).dtype), "Size": lambda im, ins, at, n: np.array(
        np.asarray(ins[0]).size, np.int64),
    "Gather": _fold_gather, "Slice": _fold_slice, "Concat": _fold_concat,
    "Reshape": _fold_reshape, "Flatten": _fold_flatten, "Squeeze": _fold_squeeze,
    "Unsqueeze": _fold_unsqueeze, "Transpose": _fold_transpose,
    "Add": lambda im, ins, at, n: im.binary("add", ins[0], ins[1], None, at),
    "Sub": lambda im, ins, at, n: im.binary("sub", ins[0], ins[1], None, at),
    "Mul": lambda im, ins, at, n: im.binary("mul", ins[0], ins[1], None, at),
    "Div": lambda im, ins, at, n: im.binary("div", ins[0], ins[1], None, at),
    "Sum": lambda im, ins, at, n: _f32(sum(np.asarray(t) for t in ins if t is not None)),
    "Min": lambda im, ins, at, n: np.minimum.reduce([np.asarray(t) for t in ins]),
    "Max": lambda im, ins, at, n: np.maximum.reduce([np.asarray(t) for t in ins]),
    "Pow": lambda im, ins, at, n: _f32(np.power(ins[0], ins[1])).astype(np.asarray(ins[0]).dtype),
    "Neg": _fold_unary(np.negative), "Abs": _fold_unary(np.abs), "Sqrt": _fold_unary(np.sqrt),
    "Exp": _fold_unary(np.exp), "Log": _fold_unary(np.log),
    "Reciprocal": _fold_unary(np.reciprocal), "Floor": _fold_unary(np.floor),
    "Ceil": _fold_unary(np.ceil), "Not": _fold_unary(np.logical_not),
    "Relu": _fold_unary(lambda x: np.maximum(x, 0)),
    "Sigmoid": _fold_unary(lambda x: 1 / (1 + np.exp(-x))), "Tanh": _fold_unary(np.tanh),
    "LeakyRelu": lambda im, ins, at, n: _f32(np.where(ins[0] > 0, ins[0],
                                                       ins[0] * at.get("alpha", 0.01))),
    "Softmax": _fold_softmax(False), "LogSoftmax": _fold_softmax(True),
    "Equal": lambda im, ins, at, n: np.equal(ins[0], ins[1]),
    "Where": lambda im, ins, at, n: np.where(ins[0], ins[1], ins[2]),
    "Range": lambda im, ins, at, n: np.arange(np.asarray(ins[0]).item(),
                                              np.asarray(ins[1]).item(),
                                              np.asarray(ins[2]).item()).astype(
                                                  np.asarray(ins[0]).dtype),
    "Expand": lambda im, ins, at, n: np.asarray(ins[0]) * np.ones(
        [int(d) for d in ins[1]], np.asarray(ins[0]).dtype),
    "Tile": lambda im, ins, at, n: np.tile(ins[0], [int(d) for d in ins[1]]),
    "ReduceProd": lambda im, ins, at, n: np.prod(
        ins[0], axis=None if "axes" not in at else tuple(at["axes"]),
        keepdims=bool(at.get("keepdims", 1))),
    "Clip": _fold_clip, "BatchNormalization": _fold_bn, "Pad": _fold_pad,
    "Gemm": _fold_gemm,
    "MatMul": lambda im, ins, at, n: _f32(np.matmul(ins[0], ins[1])),
    "Dropout": _h_dropout, "LRN": _fold_lrn,
}


# --------------------------------------------------------------------------- public API

def import_onnx(model: Any, *, batch_axis: Union[bool, str] = "auto",
                input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
                constants: Optional[Mapping[str, Any]] = None,
                name: Optional[str] = None) -> OnnxGraph:
    """Import ``model`` and say how its names and shapes map onto the IR graph.

    ``batch_axis``: True (ONNX axis 0 is the batch), False (the model is one sample;
    the IR adds a batch axis of its own) or "auto" (True unless an op works along axis
    0). ``input_shapes``: {input: shape} for inputs whose shape the file leaves open.
    ``constants``: {input: array} graph inputs to treat as initializers (weights that a
    test or a caller feeds at run time).
    """
    if batch_axis not in (True, False, "auto"):
        raise ValueError(f"batch_axis must be True, False or 'auto', got {batch_axis!r}")
    m, default_name = _load(model)
    name = name or default_name
    shapes = dict(input_shapes or {})
    consts = dict(constants or {})

    def attempt(natural: bool) -> OnnxGraph:
        im = _Importer(m, name, natural, shapes, consts)
        try:
            return im.run()
        except _Fail as e:  # the inputs already rule this mode out
            raise OnnxImportError(name, [Problem("(inputs)", "input", str(e), e.batch)]) \
                from None

    if batch_axis != "auto":
        return attempt(bool(batch_axis))
    try:
        return attempt(True)
    except OnnxImportError as first:
        if not any(p.batch for p in first.problems):
            raise
        try:
            res = attempt(False)
        except OnnxImportError:
            raise first from None
        res.notes.append("imported as one sample (batch_axis=False): " +
                         "; ".join(str(p) for p in first.problems if p.batch))
        return res


def from_onnx(model: Any, *, batch_axis: Union[bool, str] = "auto",
              input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
              constants: Optional[Mapping[str, Any]] = None,
              name: Optional[str] = None):
    """An ONNX model (path, bytes or ModelProto) as a ``fe.Model`` over the graph IR.

    Compile it like any network: ``cnncomp.compile(fe.from_onnx("resnet50.onnx"))``.
    Parameters keep the initializers' names; ``net.parameters()`` returns them. See
    ``import_onnx`` for the keyword arguments. Raises ``OnnxImportError`` listing every
    unsupported node at once.
    """
    from .model import Model
    res = import_onnx(model, batch_axis=batch_axis, input_shapes=input_shapes,
                      constants=constants, name=name)
    odd = [o for o in res.outputs if o.kind != "value"]
    if odd:
        raise OnnxImportError(res.graph.name, [Problem(
            o.name, "output", "this graph output is " + (
                "a constant (nothing computes it from the inputs)" if o.kind == "constant"
                else "Dropout's mask") + "; cnncomp.onnx_backend returns such outputs, "
            "from_onnx builds networks whose outputs are computed") for o in odd])
    if not res.graph.inputs:
        raise OnnxImportError(res.graph.name, [Problem("(model)", "input", "the model has "
                                                       "no data input")])
    net = Model.from_graph(res.graph)
    net.onnx = res
    return net
