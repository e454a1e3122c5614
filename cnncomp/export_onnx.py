"""``export_onnx(net, path)``: write a DSL network as a standard ONNX model.

    cnncomp.export_onnx(net, "net.onnx")        # checked with onnx.checker (full check)
    proto = cnncomp.export_onnx.to_onnx(net)     # the ModelProto, without a file

Each source-graph op maps to the ONNX operator with the same semantics (both follow
PyTorch): Conv, BatchNormalization, Relu, LeakyRelu, Sigmoid, Tanh, MaxPool, AveragePool,
LpPool (even p, where sum x**p is ONNX's sum |x|**p), GlobalAveragePool (+ Flatten,
since cnncomp's output is (N, C)), LRN (odd size), Flatten, Gemm (transB=1, as
torch.nn.Linear), Dropout (inference: Identity), Softmax (axis 1), Add / Sum, Concat; the
ops of imported models too (Reshape, Transpose, Pad, Add/Sub/Mul/Div/Max/Min, Clip,
LogSoftmax), so an imported model exports again. Parameters become initializers; the
batch dimension is symbolic ("N"). The result passes ``onnx.checker`` with full checks
(shape inference included) and ONNX Runtime runs it to cnncomp's outputs
(tests/frontend/test_onnx_import.py). The graph exported is the *source* graph, not an
optimized one (a CompiledModel exports its ``source_graph``): fusion and layouts are
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


def _node_protos(n, g: Graph, helper, consts: list) -> list:
    """The ONNX nodes computing IR node ``n``; constant inputs they need (shapes, pads,
    clip bounds) are appended to ``consts`` as initializers."""
    a, op = n.attrs, n.op
    ins, out = list(n.inputs), n.outputs[0]
    mk = helper.make_node

    def const(suffix: str, value: Any, dtype: Any) -> str:
        from onnx import numpy_helper
        name = f"{n.name}/{suffix}"
        consts.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name
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
        if a.norm_type != int(a.norm_type) or int(a.norm_type) % 2:
            raise CnnCompError(f"export_onnx: node {n.name!r}: ONNX LpPool sums |x|**p, "
                               f"cnncomp (like PyTorch) x**p; they agree for even p only, got "
                               f"norm_type={a.norm_type}")
        return [mk("LpPool", ins, [out], n.name, kernel_shape=list(a.kernel_size),
                   strides=list(a.stride), p=int(a.norm_type))]
    if op is Op.GLOBAL_AVG_POOL2D:
        mid = f"{out}__nchw11"
        return [mk("GlobalAveragePool", ins, [mid], f"{n.name}/pool"),
                mk("Flatten", [mid], [out], f"{n.name}/flatten", axis=1)]
    if op is Op.LOCAL_RESPONSE_NORM:
        if a.size % 2 == 0:
            raise CnnCompError(f"export_onnx: node {n.name!r}: LocalResponseNorm size {a.size} "
                               "is even; ONNX LRN places an even window one channel further "
                               "than PyTorch, so only odd sizes export exactly")
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
    # ops of imported models (frontend/onnx_import.py), so an import exports again
    if op is Op.RESHAPE:  # 0 keeps the batch dimension
        return [mk("Reshape", [ins[0], const("shape", (0, *a.shape), np.int64)], [out], n.name)]
    if op is Op.TRANSPOSE:
        return [mk("Transpose", ins, [out], n.name, perm=list(a.perm))]
    if op is Op.PAD:
        k = len(a.pads) // 2
        pads = [0, *a.pads[:k], 0, *a.pads[k:]]
        return [mk("Pad", [ins[0], const("pads", pads, np.int64),
                           const("value", a.value, np.float32)], [out], n.name, mode=a.mode)]
    if op is Op.BINARY:
        kind = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max",
                "min": "Min"}[a.fn]
        return [mk(kind, ins, [out], n.name)]
    if op is Op.CLIP:
        lo = const("min", a.min, np.float32) if a.min != -np.inf else ""
        hi = const("max", a.max, np.float32) if a.max != np.inf else ""
        return [mk("Clip", [ins[0], lo, hi], [out], n.name)]
    if op is Op.LOG_SOFTMAX:
        return [mk("LogSoftmax", ins, [out], n.name, axis=1)]
    raise CnnCompError(f"export_onnx: node {n.name!r} ({op}) has no ONNX equivalent here")


def to_onnx(net: Any, opset: int = OPSET):
    """The network as an ``onnx.ModelProto`` (checked)."""
    onnx, helper = _onnx()
    from onnx import TensorProto, numpy_helper
    if isinstance(net, Graph):
        g = net
    elif hasattr(net, "source_graph"):  # a CompiledModel: its network, not its kernels
        g = net.source_graph
    elif hasattr(net, "to_graph"):
        g = net.to_graph()
    else:
        raise TypeError(f"export_onnx takes a network (fe.Sequential / fe.Model), a "
                        f"CompiledModel or a cnncomp.Graph, got {type(net).__name__}")
    extra: list = []
    nodes = [p for n in g.nodes for p in _node_protos(n, g, helper, extra)]

    def vinfo(name: str):
        shape = ["N" if d is None else int(d) for d in g.values[name].shape]
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
    inits = [numpy_helper.from_array(np.asarray(g.constants[k], np.float32), k)
             for k, v in g.values.items() if v.kind == PARAM]
    graph = helper.make_graph(nodes, g.name, [vinfo(i) for i in g.inputs],
                              [vinfo(o) for o in g.outputs], inits + extra)
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
