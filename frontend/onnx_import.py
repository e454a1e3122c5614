"""``from_onnx(path_or_model)``: an ONNX CNN as a cnncomp network.

Each ONNX node maps onto the op with the same semantics; initializers become parameters
named like the DSL's (``{layer}.weight``, ``.bias``, ``.running_mean``, ``.running_var``;
the layer is the ONNX node's name, or ``{op}_{n}``). Shapes are inferred as the graph is
built, with the batch dimension symbolic. Every node that cannot be imported is
collected and reported at once, each with its name, op and reason.

Handled: Conv, BatchNormalization, Relu, LeakyRelu, Sigmoid, Tanh, Softmax (axis 1),
MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool (as whole-input pooling), LpPool,
LRN, Gemm, MatMul by a constant, Flatten, Reshape to (N, -1), Concat on channels, Add,
Sum, Dropout, Identity, Clip(0, inf) as Relu, Constant; nodes whose inputs are all
constants (ConstantOfShape, Cast, (Un)Squeeze, Concat, Gather, Reshape, Transpose,
Add/Sub/Mul/Div) are folded with NumPy. Inputs that are also initializers (old
model-zoo files) are treated as weights.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from cnncomp import ops
from cnncomp.errors import CnnCompError
from cnncomp.ir import INPUT, PARAM, Graph, Meta, Node, Value
from cnncomp.ops import Op

from .model import Model


_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}
_FOLDABLE = {"ConstantOfShape", "Cast", "Unsqueeze", "Squeeze", "Concat", "Gather", "Reshape",
             "Transpose", *_BINARY}


class OnnxImportError(CnnCompError):
    """Nodes of an ONNX model that cnncomp cannot import (all listed at once)."""


def _attrs(node) -> dict[str, Any]:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pads(a: dict, rank: int = 2) -> tuple[int, int, int, int]:
    p = list(a.get("pads", [0] * 2 * rank))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise ValueError(f"auto_pad={a['auto_pad']!r} is not supported; export with explicit pads")
    return (int(p[0]), int(p[1]), int(p[2]), int(p[3]))


class _Importer:
    def __init__(self, model):
        from onnx import numpy_helper
        self.g = model.graph
        self.consts: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in self.g.initializer}
        self.values: dict[str, Value] = {}
        self.params: dict[str, np.ndarray] = {}
        self.nodes: list[Node] = []
        self.rename: dict[str, str] = {}  # ONNX tensor -> cnncomp value it is equal to
        self.problems: list[str] = []
        self.counts: dict[str, int] = {}
        self.names: set[str] = set()

    # -------------------------------------------------------------- helpers
    def layer_name(self, node) -> str:
        base = node.name or f"{node.op_type.lower()}_{self.counts.setdefault(node.op_type, 0) + 1}"
        self.counts[node.op_type] = self.counts.get(node.op_type, 0) + 1
        name, k = base.replace(".", "_"), 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def act(self, onnx_name: str) -> str:
        v = self.rename.get(onnx_name, onnx_name)
        if v not in self.values or self.values[v].kind == PARAM:
            raise ValueError(f"input {onnx_name!r} is not an activation computed earlier")
        return v

    def const(self, onnx_name: str) -> np.ndarray:
        if onnx_name not in self.consts:
            raise ValueError(f"input {onnx_name!r} must be a constant (initializer), it is "
                             "computed at run time")
        return self.consts[onnx_name]

    def param(self, layer: str, suffix: str, data: np.ndarray) -> str:
        name = f"{layer}.{suffix}"
        arr = np.ascontiguousarray(data, np.float32)
        self.params[name] = arr
        self.values[name] = Value(name, tuple(arr.shape), "float32", "", PARAM)
        return name

    def emit(self, op: Op, layer: str, inputs: list[str], attrs: Any, out: str,
             onnx_op: str) -> None:
        d = ops.op_def(op)
        acts = inputs if d.arity is None else inputs[:d.arity]
        shape = ops.output_shapes(op, attrs, [self.values[i].shape for i in acts])[0]
        self.values[out] = Value(out, shape, "float32", "NCHW" if len(shape) == 4 else "NC")
        self.nodes.append(Node(layer, op, tuple(inputs), (out,), attrs,
                               Meta(ops=(op.value,), source=f"onnx:{onnx_op}", layers=(layer,))))

    # -------------------------------------------------------------- ops
    def fold(self, node, a: dict, ins: list[str]) -> bool:
        """Evaluate a node whose inputs are all constants (weights made by ConstantOfShape,
        shape arithmetic): its outputs become constants. False if it cannot be folded."""
        t = node.op_type
        if t not in _FOLDABLE or not all(i in self.consts for i in ins if i):
            return False
        c = [self.consts[i] if i else None for i in ins]
        if t == "ConstantOfShape":
            from onnx import numpy_helper
            fill = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
            r = np.full(tuple(int(v) for v in c[0]), fill.reshape(-1)[0], fill.dtype)
        elif t == "Cast":
            from onnx import helper
            r = c[0].astype(helper.tensor_dtype_to_np_dtype(a["to"]))
        elif t in ("Unsqueeze", "Squeeze"):
            axes = a.get("axes", c[1] if len(c) > 1 and c[1] is not None else None)
            if t == "Squeeze":
                r = np.squeeze(c[0], axis=None if axes is None else tuple(int(v) for v in axes))
            else:
                r = c[0]
                for ax in sorted(int(v) % (r.ndim + len(axes)) for v in axes):
                    r = np.expand_dims(r, ax)
        elif t == "Concat":
            r = np.concatenate(c, axis=int(a["axis"]))
        elif t == "Gather":
            r = np.take(c[0], c[1], axis=int(a.get("axis", 0)))
        elif t == "Reshape":
            shape = [int(v) for v in c[1]]
            shape = [c[0].shape[k] if v == 0 else v for k, v in enumerate(shape)]
            r = c[0].reshape(shape)
        elif t == "Transpose":
            r = np.transpose(c[0], a.get("perm"))
        else:
            r = _BINARY[t](c[0], c[1])
        self.consts[node.output[0]] = np.asarray(r)
        return True

    def convert(self, node) -> None:
        t, a = node.op_type, _attrs(node)
        ins = [i for i in node.input]
        out = node.output[0]
        if self.fold(node, a, ins):
            return
        unary = {"Relu": Op.RELU, "Sigmoid": Op.SIGMOID, "Tanh": Op.TANH}
        if t == "Constant":
            from onnx import numpy_helper
            self.consts[out] = numpy_helper.to_array(a["value"])
            return
        if t in ("Identity", "Dropout"):
            if ins[0] in self.consts:
                self.consts[out] = self.consts[ins[0]]
            else:
                self.rename[out] = self.act(ins[0])
            return
        layer = self.layer_name(node)
        if t == "Conv":
            w = self.const(ins[1])
            k = tuple(int(v) for v in a.get("kernel_shape", w.shape[2:]))
            if len(k) != 2:
                raise ValueError(f"only 2-D convolution is supported, kernel {k}")
            attrs = ops.Conv2dAttrs(int(w.shape[0]), k, tuple(a.get("strides", (1, 1))),
                                    _pads(a), tuple(a.get("dilations", (1, 1))),
                                    int(a.get("group", 1)), bias=len(ins) > 2 and bool(ins[2]))
            p = [self.param(layer, "weight", w)]
            if attrs.bias:
                p.append(self.param(layer, "bias", self.const(ins[2])))
            self.emit(Op.CONV2D, layer, [self.act(ins[0]), *p], attrs, out, t)
        elif t == "BatchNormalization":
            p = [self.param(layer, s, self.const(i)) for s, i in
                 zip(("weight", "bias", "running_mean", "running_var"), ins[1:5])]
            attrs = ops.BatchNormAttrs(float(a.get("epsilon", 1e-5)),
                                       1.0 - float(a.get("momentum", 0.9)))
            self.emit(Op.BATCH_NORM, layer, [self.act(ins[0]), *p], attrs, out, t)
        elif t in unary:
            self.emit(unary[t], layer, [self.act(ins[0])], ops.NoAttrs(), out, t)
        elif t == "LeakyRelu":
            self.emit(Op.LEAKY_RELU, layer, [self.act(ins[0])],
                      ops.LeakyReluAttrs(float(a.get("alpha", 0.01))), out, t)
        elif t == "Clip":
            lo = a.get("min", self.consts.get(ins[1]) if len(ins) > 1 and ins[1] else None)
            hi = a.get("max", self.consts.get(ins[2]) if len(ins) > 2 and ins[2] else None)
            if lo is None or float(lo) != 0.0 or (hi is not None and np.isfinite(float(hi))):
                raise ValueError(f"only Clip(min=0, max=inf) (a ReLU) is supported, got "
                                 f"min={lo}, max={hi}")
            self.emit(Op.RELU, layer, [self.act(ins[0])], ops.NoAttrs(), out, t)
        elif t == "Softmax":
            x = self.act(ins[0])
            axis = int(a.get("axis", 1 if len(self.values[x].shape) == 2 else -1))
            rank = len(self.values[x].shape)
            if axis % rank != 1 or (rank == 4 and "axis" not in a):
                raise ValueError(f"Softmax over axis {axis} of a rank-{rank} tensor; cnncomp "
                                 "supports the channel axis (1)")
            self.emit(Op.SOFTMAX, layer, [x], ops.SoftmaxAttrs(1), out, t)
        elif t in ("MaxPool", "AveragePool"):
            k = tuple(int(v) for v in a["kernel_shape"])
            s = tuple(int(v) for v in a.get("strides", (1, 1)))
            if t == "MaxPool":
                if len(node.output) > 1 and node.output[1]:
                    raise ValueError("MaxPool's Indices output is not supported")
                attrs = ops.MaxPoolAttrs(k, s, _pads(a), tuple(a.get("dilations", (1, 1))),
                                         bool(a.get("ceil_mode", 0)))
                self.emit(Op.MAX_POOL2D, layer, [self.act(ins[0])], attrs, out, t)
            else:
                attrs = ops.AvgPoolAttrs(k, s, _pads(a), bool(a.get("ceil_mode", 0)),
                                         bool(a.get("count_include_pad", 0)))
                self.emit(Op.AVG_POOL2D, layer, [self.act(ins[0])], attrs, out, t)
        elif t == "LpPool":
            if any(_pads(a)):
                raise ValueError("LpPool with padding is not supported")
            attrs = ops.LPPoolAttrs(float(a.get("p", 2)), tuple(a["kernel_shape"]),
                                    tuple(a.get("strides", (1, 1))), bool(a.get("ceil_mode", 0)))
            self.emit(Op.LP_POOL2D, layer, [self.act(ins[0])], attrs, out, t)
        elif t in ("GlobalAveragePool", "GlobalMaxPool"):
            # a pooling window as large as the input keeps ONNX's (N, C, 1, 1) output
            x = self.act(ins[0])
            hw = tuple(self.values[x].shape[2:])
            if t == "GlobalAveragePool":
                attrs = ops.AvgPoolAttrs(hw, (1, 1))
                self.emit(Op.AVG_POOL2D, layer, [x], attrs, out, t)
            else:
                self.emit(Op.MAX_POOL2D, layer, [x], ops.MaxPoolAttrs(hw, (1, 1)), out, t)
        elif t == "LRN":
            attrs = ops.LRNAttrs(int(a["size"]), float(a.get("alpha", 1e-4)),
                                 float(a.get("beta", 0.75)), float(a.get("bias", 1.0)))
            self.emit(Op.LOCAL_RESPONSE_NORM, layer, [self.act(ins[0])], attrs, out, t)
        elif t in ("Flatten", "Reshape"):
            x = self.act(ins[0])
            if t == "Reshape":
                shape = [int(v) for v in self.const(ins[1])]
                ok = len(shape) == 2 and shape[0] in (0, -1) or (
                    len(shape) == 2 and shape[1] in (-1, int(np.prod(self.values[x].shape[1:]))))
                if not ok:
                    raise ValueError(f"Reshape to {shape}: only (N, -1) flattening is supported")
            elif int(a.get("axis", 1)) != 1:
                raise ValueError(f"Flatten(axis={a['axis']}): only axis 1 is supported")
            if len(self.values[x].shape) == 2:
                self.rename[out] = x  # already (N, C)
                return
            self.emit(Op.FLATTEN, layer, [x], ops.NoAttrs(), out, t)
        elif t in ("Gemm", "MatMul"):
            x = self.act(ins[0])
            w = self.const(ins[1]).astype(np.float64)
            if t == "Gemm":
                if a.get("transA", 0):
                    raise ValueError("Gemm with transA=1 is not supported")
                w = w if a.get("transB", 0) else w.T
                w = w * float(a.get("alpha", 1.0))
                b = self.const(ins[2]) * float(a.get("beta", 1.0)) if len(ins) > 2 and ins[2] \
                    else None
            else:
                w, b = w.T, None
            if b is not None:
                b = np.broadcast_to(np.asarray(b, np.float64).reshape(-1), (w.shape[0],))
            attrs = ops.LinearAttrs(int(w.shape[0]), bias=b is not None)
            p = [self.param(layer, "weight", w)] + ([self.param(layer, "bias", b)]
                                                     if b is not None else [])
            self.emit(Op.LINEAR, layer, [x, *p], attrs, out, t)
        elif t in ("Add", "Mul") and any(i in self.consts for i in ins):
            self.affine(t, layer, ins, out)
        elif t in ("Add", "Sum"):
            xs = [self.act(i) for i in ins]
            if t == "Sum" and len(xs) == 1:
                self.rename[out] = xs[0]
                return
            self.emit(Op.ADD, layer, xs, ops.AddAttrs(), out, t)
        elif t == "Concat":
            xs = [self.act(i) for i in ins]
            axis = int(a["axis"]) % len(self.values[xs[0]].shape)
            self.emit(Op.CONCAT, layer, xs, ops.ConcatAttrs(axis), out, t)
        else:
            raise NotImplementedError(f"operator {t} is not supported")

    def affine(self, t: str, layer: str, ins: list[str], out: str) -> None:
        """x * c or x + c with a per-channel (or scalar) constant c: a batch norm with
        mean 0 and variance 1 - eps, whose scale and shift are exactly c (or 1 and c)."""
        x = self.act(ins[0] if ins[1] in self.consts else ins[1])
        c = self.consts[ins[1] if ins[1] in self.consts else ins[0]].astype(np.float64)
        shape = self.values[x].shape
        chans = shape[1]
        squeezed = c.reshape(c.shape[-3] if c.ndim >= 3 else c.size) if c.size > 1 else c
        if c.size not in (1, chans) or (c.size > 1 and (c.ndim < 3 and len(shape) == 4)):
            raise ValueError(f"{t} by a constant of shape {c.shape}: only a scalar or a "
                             f"per-channel (C, 1, 1) constant is supported for input "
                             f"{shape}")
        vec = np.broadcast_to(np.asarray(squeezed).reshape(-1), (chans,))
        eps = 1e-5
        w = vec if t == "Mul" else np.ones(chans)
        b = vec if t == "Add" else np.zeros(chans)
        p = [self.param(layer, "weight", w), self.param(layer, "bias", b),
             self.param(layer, "running_mean", np.zeros(chans)),
             self.param(layer, "running_var", np.full(chans, 1.0 - eps))]
        self.emit(Op.BATCH_NORM, layer, [x, *p], ops.BatchNormAttrs(eps), out, t)

    # -------------------------------------------------------------- driver
    def run(self, name: str) -> Graph:
        from onnx import TensorProto
        inputs = []
        for vi in self.g.input:
            if vi.name in self.consts:
                continue  # old model-zoo files list every weight as an input too
            tt = vi.type.tensor_type
            if tt.elem_type != TensorProto.FLOAT:
                self.problems.append(f"input {vi.name!r}: element type {tt.elem_type} (only "
                                     "float32 inputs are supported)")
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            shape = (None, *dims[1:])
            if any(d is None for d in shape[1:]):
                self.problems.append(f"input {vi.name!r}: only the batch dimension may be "
                                     f"symbolic, got {dims}")
            self.values[vi.name] = Value(vi.name, shape, "float32",
                                         "NCHW" if len(shape) == 4 else "NC", INPUT)
            inputs.append(vi.name)
        poisoned: set[str] = set()  # outputs of nodes that failed: readers stay quiet
        for node in self.g.node:
            if any(i in poisoned for i in node.input):
                poisoned.update(node.output)
                continue
            try:
                self.convert(node)
            except (ValueError, NotImplementedError, KeyError, CnnCompError) as e:
                self.problems.append(f"node {node.name or '(unnamed)'!r} ({node.op_type}): {e}")
                poisoned.update(node.output)
        if self.problems:
            raise OnnxImportError(f"cannot import {name!r}; {len(self.problems)} problem(s):\n  "
                                  + "\n  ".join(self.problems))
        outputs = [self.rename.get(o.name, o.name) for o in self.g.output]
        g = Graph(name, self.nodes, self.values, inputs, outputs, self.params)
        g.verify()
        return g


def from_onnx(model: Any, name: Optional[str] = None) -> Model:
    """Import an ONNX model (a path or an ``onnx.ModelProto``) as a network to compile."""
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX import needs the onnx package: pip install 'cnncomp[onnx]'") \
            from None
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        model = onnx.load(model)
    name = name or model.graph.name or "onnx_model"
    return Model.from_graph(_Importer(model).run(name))
