"""fold_batch_norm: fold an inference BatchNorm into the Conv2d/Linear that feeds it.

    y = gamma * (W*x + b - mean) / sqrt(var + eps) + beta
      = (W * s) * x + ((b - mean) * s + beta),      s = gamma / sqrt(var + eps)

The BN disappears; its op name stays in the conv's ``meta.ops`` so kernels still say
("conv2d", "batch_norm"). Only a producer whose output feeds the BN alone (and is not a
graph output) is folded: otherwise the un-normalized value is still needed.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..ir import PARAM, Graph, Meta, Node, Value
from ..ops import Op
from . import PassContext, graph_pass


def _merge_meta(a: Node, b: Node) -> Meta:
    return Meta(ops=a.ops + b.ops, source=a.meta.source or b.meta.source,
                layers=(a.meta.layers or (a.name,)) + (b.meta.layers or (b.name,)))


def _foldable(g: Graph, bn: Node) -> Node | None:
    p = g.producer(bn.inputs[0])
    if p is None or p.op not in (Op.CONV2D, Op.LINEAR):
        return None
    if p.outputs[0] in g.outputs or len(g.users(p.outputs[0])) != 1:
        return None
    if p.attrs.activation != "none" or p.attrs.residual:
        return None
    return p


@graph_pass("fold_batch_norm", opt_level=1, fusion=True, inference_only=True)
def fold_batch_norm(g: Graph, ctx: PassContext) -> Graph:
    """Fold inference BatchNorm into the preceding Conv2d/Linear's weights and bias."""
    replaced: dict[str, Node] = {}   # producer name -> folded node
    dropped: set[str] = set()        # bn node names
    values = dict(g.values)
    constants = dict(g.constants)
    for bn in g.nodes:
        if bn.op is not Op.BATCH_NORM or bn.attrs.activation != "none":
            continue
        p = _foldable(g, bn)
        if p is None:
            continue
        gamma, beta, mean, var = (np.asarray(g.constants[i], np.float64) for i in bn.inputs[1:5])
        scale = gamma / np.sqrt(var + bn.attrs.eps)
        w = np.asarray(g.constants[p.inputs[1]], np.float64)
        b = (np.asarray(g.constants[p.inputs[2]], np.float64) if p.attrs.bias
             else np.zeros(w.shape[0]))
        w_f = (w * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
        b_f = ((b - mean) * scale + beta).astype(np.float32)
        wn, bn_name = f"{p.name}.folded_weight", f"{p.name}.folded_bias"
        constants[wn], constants[bn_name] = w_f, b_f
        values[wn] = Value(wn, w_f.shape, kind=PARAM, layout="")
        values[bn_name] = Value(bn_name, b_f.shape, kind=PARAM, layout="")
        replaced[p.name] = p.replace(
            inputs=(p.inputs[0], wn, bn_name), outputs=bn.outputs,
            attrs=dataclasses.replace(p.attrs, bias=True), meta=_merge_meta(p, bn))
        dropped.add(bn.name)
    if not replaced:
        return g
    nodes = [replaced.get(n.name, n) for n in g.nodes if n.name not in dropped]
    return g.replace(nodes=nodes, values=values, constants=constants)
