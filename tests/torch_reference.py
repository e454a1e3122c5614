"""An independent oracle: evaluate any cnncomp graph node by node with PyTorch (float64).

It follows the op attributes of cnncomp/ops.py literally, including the fused epilogue
fields (activation, residual) that the passes set, so it can check optimized graphs too.
"""
from __future__ import annotations

from typing import Mapping, Union

import numpy as np
import torch
import torch.nn.functional as F

from cnncomp.ir import PARAM, Graph, Node
from cnncomp.ops import Op


def _act(y: torch.Tensor, a) -> torch.Tensor:
    act = getattr(a, "activation", "none")
    if act == "relu":
        return F.relu(y)
    if act == "leaky_relu":
        return F.leaky_relu(y, a.alpha)
    if act == "sigmoid":
        return torch.sigmoid(y)
    if act == "tanh":
        return torch.tanh(y)
    assert act == "none", act
    return y


def _pad(x: torch.Tensor, pads, value: float = 0.0) -> torch.Tensor:
    t, l, b, r = pads
    return F.pad(x, (l, r, t, b), value=value) if any(pads) else x


def _node(n: Node, args: list[torch.Tensor], params: list[torch.Tensor]) -> torch.Tensor:
    a = n.attrs
    op = n.op
    if op is Op.CONV2D:
        bias = params[1] if a.bias else None
        y = F.conv2d(_pad(args[0], a.padding), params[0], bias, a.stride, 0, a.dilation,
                     a.groups)
        if a.residual:
            y = y + args[-1]
        return _act(y, a)
    if op is Op.LINEAR:
        y = F.linear(args[0], params[0], params[1] if a.bias else None)
        if a.residual:
            y = y + args[-1]
        return _act(y, a)
    if op is Op.BATCH_NORM:
        w, b, m, v = params
        return _act(F.batch_norm(args[0], m, v, w, b, training=False, eps=a.eps), a)
    if op is Op.ADD:
        y = args[0]
        for t in args[1:]:
            y = y + t
        return _act(y, a)
    if op is Op.RELU:
        return F.relu(args[0])
    if op is Op.LEAKY_RELU:
        return F.leaky_relu(args[0], a.negative_slope)
    if op is Op.SIGMOID:
        return torch.sigmoid(args[0])
    if op is Op.TANH:
        return torch.tanh(args[0])
    if op is Op.MAX_POOL2D:
        x = _pad(args[0], a.padding, -float("inf"))
        return F.max_pool2d(x, a.kernel_size, a.stride, 0, a.dilation, a.ceil_mode)
    if op is Op.AVG_POOL2D:
        t, l, b, r = a.padding
        if t == b and l == r:
            return F.avg_pool2d(args[0], a.kernel_size, a.stride, (t, l), a.ceil_mode,
                                a.count_include_pad)
        if not a.count_include_pad:
            raise NotImplementedError("asymmetric avg-pool padding without count_include_pad")
        return F.avg_pool2d(_pad(args[0], a.padding), a.kernel_size, a.stride, 0, a.ceil_mode)
    if op is Op.LP_POOL2D:
        return F.lp_pool2d(args[0], a.norm_type, a.kernel_size, a.stride, a.ceil_mode)
    if op is Op.GLOBAL_AVG_POOL2D:
        return args[0].mean(dim=(2, 3))
    if op is Op.LOCAL_RESPONSE_NORM:
        return F.local_response_norm(args[0], a.size, a.alpha, a.beta, a.k)
    if op is Op.FLATTEN:
        return torch.flatten(args[0], 1)
    if op is Op.DROPOUT:
        return args[0]
    if op is Op.SOFTMAX:
        return F.softmax(args[0], dim=1)
    if op is Op.CONCAT:
        return torch.cat(args, dim=a.axis)
    if op is Op.LAYOUT_TRANSFORM:
        return args[0]  # values are logically NCHW whatever their physical layout
    raise NotImplementedError(f"torch_reference: op {op} is not supported")


def torch_forward(graph: Graph, inputs: Union[np.ndarray, Mapping[str, np.ndarray]],
                  dtype: torch.dtype = torch.float64
                  ) -> Union[np.ndarray, dict[str, np.ndarray]]:
    """Run ``graph`` on ``inputs`` with torch; one output -> array, several -> dict."""
    if isinstance(inputs, np.ndarray):
        assert len(graph.inputs) == 1
        inputs = {graph.inputs[0]: inputs}
    env = {k: torch.tensor(np.asarray(v), dtype=dtype) for k, v in inputs.items()}
    consts = {k: torch.tensor(np.asarray(v), dtype=dtype) for k, v in graph.constants.items()}
    with torch.no_grad():
        for n in graph.nodes:
            args = [env[i] for i in n.inputs if graph.values[i].kind != PARAM]
            params = [consts[i] for i in n.inputs if graph.values[i].kind == PARAM]
            env[n.outputs[0]] = _node(n, args, params)
    outs = {o: env[o].numpy() for o in graph.outputs}
    return outs[graph.outputs[0]] if len(outs) == 1 else outs


class TorchNet(torch.nn.Module):
    """A differentiable torch twin of an (unfused) cnncomp graph, for training oracles.

    Weights and biases are ``nn.Parameter``s, running statistics are buffers that
    training-mode ``F.batch_norm`` updates with the layer's momentum, exactly as
    ``nn.BatchNorm2d`` does. Parameter names are the graph's ("c1.weight").
    """

    def __init__(self, graph: Graph, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.graph = graph
        self.tensors: dict[str, torch.Tensor] = {}
        self.trainable = torch.nn.ParameterDict()
        for k, v in graph.constants.items():
            t = torch.tensor(np.asarray(v), dtype=dtype)
            if k.endswith(".weight") or k.endswith(".bias"):
                self.trainable[k.replace(".", "__")] = torch.nn.Parameter(t)
                self.tensors[k] = self.trainable[k.replace(".", "__")]
            else:
                self.tensors[k] = t
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.graph
        env = {g.inputs[0]: x}
        for n in g.nodes:
            args = [env[i] for i in n.inputs if g.values[i].kind != PARAM]
            params = [self.tensors[i] for i in n.inputs if g.values[i].kind == PARAM]
            if n.op is Op.BATCH_NORM and self.training:
                w, b, m, v = params
                env[n.outputs[0]] = _act(F.batch_norm(args[0], m, v, w, b, training=True,
                                                      momentum=n.attrs.momentum,
                                                      eps=n.attrs.eps), n.attrs)
            else:
                env[n.outputs[0]] = _node(n, args, params)
        return env[g.outputs[0]]

    def state(self) -> dict[str, np.ndarray]:
        return {k: t.detach().numpy().copy() for k, t in self.tensors.items()}
