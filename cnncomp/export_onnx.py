"""``export_onnx(net, path)``: write a DSL network as a standard ONNX model.

Each source-graph op maps to the ONNX operator with the same semantics (both follow
PyTorch): Conv, BatchNormalization, Relu, LeakyRelu, Sigmoid, Tanh, MaxPool, AveragePool,
LpPool, GlobalAveragePool (+ Flatten, since cnncomp's output is (N, C)), LRN, Flatten,
Gemm (transB=1, as torch.nn.Linear), Dropout (inference: Identity), Softmax (axis 1),
Add / Sum, Concat. Parameters become initializers; the batch dimension is symbolic
("N"). The result passes ``onnx.checker`` with full checks (shape inference included).
The graph exported is the *source* graph, not an optimized one: fusion and layouts are
cnncomp's business, not the file's.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import CnnCompError
from .ir import PARAM, Graph
from .ops import Op

OPSET = 17  # widely supported (ONNX Runtime, TensorRT, onnx2torch); Softmax per-axis since 13


def _onnx():
    try:
        import onnx
        from onnx import helper
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'cnncomp[onnx]'") \
            from None
    return onnx, helper


def _pair_pads(a: Any) -> dict:
    return {"pads": list(a.padding)}  # (top, left, bottom, right) is ONNX's begin..., end...


def _node_protos(n, g: Graph, helper) -> list:
    a, op = n.attrs, n.op
    ins, out = list(n.inputs), n.outputs[0]
    mk = helper.make_node
    if getattr(a, "activation", "none") != "none" or getattr(a, "residual", False):
        raise CnnCompError(f"export_onnx: node {n.name!r} carries a fused epilogue; export the "
                           "source network (net or model.source_graph), not an optimized graph")
    if op is Op.CONV2D:
        return [mk("Conv", ins, [out], n.name, kernel_shape=list(a.kernel_size),
                   strides=list(a.stride), dilations=list(a.dilation), group=a.groups,
                   **_pair_pads(a))]
    if op is Op.BATCH_NORM:
        return [mk("BatchNormalization", ins, [out], n.name, epsilon=a.eps,
                   momentum=1.0 - a.momentum)]
    if op is Op.RELU:
        return [mk("Relu", ins, [out], n.name)]
    if op is Op.LEAKY_RELU:
        return [mk("LeakyRelu", ins, [out], n.name, alpha=a.negative_slope)]
    if op is Op.SIGMOID:
        return [mk("Sigmoid", ins, [out], n.name)]
    if op is Op.TANH:
        return [mk("Tanh", ins, [out], n.name)]
    if op is Op.MAX_POOL2D:
        return [mk("MaxPool", ins, [out], n.name, kernel_shape=list(a.kernel_size),
                   strides=list(a.stride), dilations=list(a.dilation),
                   ceil_mode=int(a.ceil_mode), **_pair_pads(a))]
    if op is Op.AVG_POOL2D:
        return [mk("AveragePool", ins, [out], n.name, kernel_shape=list(a.kernel_size),
                   strides=list(a.stride), ceil_mode=int(a.ceil_mode),
                   count_include_pad=int(a.count_include_pad), **_pair_pads(a))]
    if op is Op.LP_POOL2D:
        if a.ceil_mode:
            raise CnnCompError(f"export_onnx: node {n.name!r}: ONNX LpPool has no ceil_mode "
                               "before opset 18; use ceil_mode=False")
        if a.norm_type != int(a.norm_type):
            raise CnnCompError(f"export_onnx: node {n.name!r}: ONNX LpPool takes an integer "
                               f"p, got norm_type={a.norm_type}")
        return [mk("LpPool", ins, [out], n.name, kernel_shape=list(a.kernel_size),
                   strides=list(a.stride), p=int(a.norm_type))]
    if op is Op.GLOBAL_AVG_POOL2D:
        mid = f"{out}__nchw11"
        return [mk("GlobalAveragePool", ins, [mid], f"{n.name}/pool"),
                mk("Flatten", [mid], [out], f"{n.name}/flatten", axis=1)]
    if op is Op.LOCAL_RESPONSE_NORM:
        return [mk("LRN", ins, [out], n.name, size=a.size, alpha=a.alpha, beta=a.beta,
                   bias=a.k)]
    if op is Op.FLATTEN:
        return [mk("Flatten", ins, [out], n.name, axis=1)]
    if op is Op.LINEAR:
        return [mk("Gemm", ins, [out], n.name, transB=1)]
    if op is Op.DROPOUT:
        return [mk("Identity", ins, [out], n.name)]  # inference semantics
    if op is Op.SOFTMAX:
        return [mk("Softmax", ins, [out], n.name, axis=1)]
    if op is Op.ADD:
        return [mk("Add" if len(ins) == 2 else "Sum", ins, [out], n.name)]
    if op is Op.CONCAT:
        return [mk("Concat", ins, [out], n.name, axis=a.axis)]
    raise CnnCompError(f"export_onnx: node {n.name!r} ({op}) has no ONNX equivalent here")


def to_onnx(net: Any, opset: int = OPSET):
    """The network as an ``onnx.ModelProto`` (checked)."""
    onnx, helper = _onnx()
    from onnx import TensorProto, numpy_helper
    g: Graph = net if isinstance(net, Graph) else net.to_graph()
    nodes = [p for n in g.nodes for p in _node_protos(n, g, helper)]

    def vinfo(name: str):
        shape = ["N" if d is None else int(d) for d in g.values[name].shape]
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
    inits = [numpy_helper.from_array(np.asarray(g.constants[k], np.float32), k)
             for k, v in g.values.items() if v.kind == PARAM]
    graph = helper.make_graph(nodes, g.name, [vinfo(i) for i in g.inputs],
                              [vinfo(o) for o in g.outputs], inits)
    model = helper.make_model(graph, producer_name="cnncomp",
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8)  # readable by older runtimes too
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(net: Any, path: str, opset: int = OPSET) -> None:
    """Write ``net`` (a DSL network or a source Graph) to ``path`` as ONNX."""
    onnx, _ = _onnx()
    model = to_onnx(net, opset)
    import os
    import tempfile
    directory = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".onnx", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, path)  # atomic: a failed export never destroys an existing file
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
