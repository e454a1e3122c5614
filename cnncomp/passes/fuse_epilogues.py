"""fuse_epilogues: let a producer absorb the elementwise ops that follow it.

Decisions come from each op's fusion class, not from a list of op sequences:
an ANCHOR (conv2d, linear) absorbs a following residual ``add`` and an activation;
any op with an activation epilogue slot (anchors, batch_norm, add) absorbs a
following activation (an ELEMENTWISE op that maps to an epilogue code). The fused
kernel applies the epilogue in registers before its single store.

A producer is never fused with a consumer when its output has another user or is a
graph output: that value must still be materialized. The fused node takes the place
of the consumer, so every input it reads (e.g. the residual) is already computed.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from ..ir import Graph, Node
from ..ops import OP_DEFS, FusionClass, Op
from . import PassContext, graph_pass
from .fold_batch_norm import _merge_meta


def epilogue_of(node: Node) -> Optional[tuple[str, float]]:
    """(activation, alpha) if ``node`` is an elementwise activation an epilogue can apply."""
    if OP_DEFS[node.op].fusion is not FusionClass.ELEMENTWISE:
        return None
    if node.op is Op.RELU:
        return ("relu", 0.0)
    if node.op is Op.LEAKY_RELU:
        return ("leaky_relu", node.attrs.negative_slope)
    if node.op is Op.SIGMOID:
        return ("sigmoid", 0.0)
    if node.op is Op.TANH:
        return ("tanh", 0.0)
    return None


def _has_free_activation(node: Node) -> bool:
    return getattr(node.attrs, "activation", None) == "none"


def _merge(g: Graph, p: Node, u: Node) -> Optional[Node]:
    """The node computing p followed by its only user u, or None if they cannot fuse."""
    act = epilogue_of(u)
    if act is not None and _has_free_activation(p):
        attrs = dataclasses.replace(p.attrs, activation=act[0], alpha=act[1])
        # extra outputs (batch statistics saved for the backward) stay
        return p.replace(attrs=attrs, outputs=u.outputs + p.outputs[1:],
                         meta=_merge_meta(p, u))
    anchor = OP_DEFS[p.op].fusion is FusionClass.ANCHOR
    if (u.op is Op.ADD and anchor and len(u.inputs) == 2 and _has_free_activation(p)
            and not p.attrs.residual and u.inputs[0] != u.inputs[1]):
        other = u.inputs[1] if u.inputs[0] == p.outputs[0] else u.inputs[0]
        attrs = dataclasses.replace(p.attrs, residual=True, activation=u.attrs.activation,
                                    alpha=u.attrs.alpha)
        return p.replace(inputs=p.inputs + (other,), attrs=attrs, outputs=u.outputs,
                         meta=_merge_meta(p, u))
    return None


def _merge_backward(g: Graph, p: Node, u: Node) -> Optional[Node]:
    """Training graphs: a backward op with an activation slot (batch_norm_grad) absorbs the
    activation gradient that feeds it, reading that gradient's saved tensor itself."""
    if (p.op is Op.ACTIVATION_GRAD and u.op is Op.BATCH_NORM_GRAD and u.inputs[0] == p.outputs[0]
            and _has_free_activation(u) and p.outputs[0] not in u.inputs[1:]):
        attrs = dataclasses.replace(u.attrs, activation=p.attrs.activation, alpha=p.attrs.alpha)
        return u.replace(inputs=(p.inputs[0],) + u.inputs[1:] + (p.inputs[1],), attrs=attrs,
                         meta=_merge_meta(p, u))
    return None


def _fuse_one(g: Graph) -> Optional[Graph]:
    for p in g.nodes:
        if not p.outputs:
            continue
        out = p.outputs[0]
        users = g.users(out)
        if out in g.outputs or len(users) != 1:
            continue
        fused = _merge(g, p, users[0]) or _merge_backward(g, p, users[0])
        if fused is None:
            continue
        u = users[0]
        nodes = [fused if n is u else n for n in g.nodes if n is not p]
        return g.replace(nodes=nodes)
    return None


@graph_pass("fuse_epilogues", opt_level=1, fusion=True)
def fuse_epilogues(g: Graph, ctx: PassContext) -> Graph:
    """Fuse bias/BN-folded convs with residual adds and activations into one kernel."""
    while True:
        new = _fuse_one(g)
        if new is None:
            return g
        g = new
