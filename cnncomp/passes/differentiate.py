"""differentiate: turn an inference graph into one training-step graph.

The training graph holds, in order: the forward pass in training mode (BatchNorm on
batch statistics, Dropout with a saved mask), the loss, the backward pass built from each
op's gradient rule (``OpDef.grad``, next to its shape rule in ``cnncomp.ops``) in reverse
graph order, and one optimizer-update node per trainable parameter, placed right after
that parameter's gradient is complete so the gradient's buffer dies early. Being a plain
graph, it then goes through the same fusion, layout and memory-planning passes as
inference. Graph outputs: the mean loss and the logits; inputs: the network's input and
``labels`` (int64, shape (N,)).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..errors import GraphError
from ..ir import INPUT, PARAM, Graph, Meta, Node, Value
from ..ops import (OP_DEFS, AddAttrs, DropoutTrainAttrs, NoAttrs, Op, output_shapes)
from . import PassContext, graph_pass

HYPER = "optimizer.hyper"  # float64 [learning rate, step count], written by the Trainer
LOSSES = ("cross_entropy",)


def is_trainable(name: str) -> bool:
    """Optimizers update weights and biases, never running statistics (the contract)."""
    return name.endswith(".weight") or name.endswith(".bias")


class GradBuilder:
    """Appends nodes to a growing graph, inferring each output's shape as it goes."""

    def __init__(self, g: Graph):
        self.nodes: list[Node] = []
        self.values: dict[str, Value] = dict(g.values)
        self.constants: dict[str, np.ndarray] = dict(g.constants)
        self._names = {n.name for n in g.nodes} | set(g.values)
        self.origin: Optional[Node] = None  # the forward node whose rule is running

    def shape(self, value: str) -> tuple:
        return self.values[value].shape

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def add_param(self, name: str, data: np.ndarray) -> str:
        self.values[name] = Value(name, tuple(data.shape), str(data.dtype), "", PARAM)
        self.constants[name] = data
        self._names.add(name)
        return name

    def emit(self, op: Op, inputs: list[str], attrs: Any, name: Optional[str] = None
             ) -> tuple[str, ...]:
        """Append one node; returns its output value names."""
        d = OP_DEFS[op]
        acts = inputs if d.arity is None else inputs[:d.arity]
        shapes = output_shapes(op, attrs, [self.values[i].shape for i in acts])
        src = self.origin
        if name is None:
            name = f"{src.name}/{op.value}" if src is not None else op.value
        name = self.fresh(name)
        outs = (name,) if len(shapes) == 1 else tuple(
            self.fresh(f"{name}:{k}") for k in range(len(shapes)))
        for o, s in zip(outs, shapes):
            self.values[o] = Value(o, s, "float32", "NCHW" if len(s) == 4 else "NC")
        meta = Meta(ops=(op.value,), source=src.meta.source if src else "",
                    layers=src.meta.layers if src else ())
        self.nodes.append(Node(name, op, tuple(inputs), outs if shapes else (), attrs, meta))
        return outs if shapes else ()

    def add_node(self, node: Node, shapes: list[tuple]) -> None:
        """Append a forward node (possibly re-typed to its training op)."""
        for o, s in zip(node.outputs, shapes):
            if o not in self.values:
                self.values[o] = Value(o, s, "float32", "NCHW" if len(s) == 4 else "NC")
        self._names.update(node.outputs)
        self.nodes.append(node)

    def accumulate(self, parts: list[str], value: str) -> str:
        """One gradient from several contributions (a value read by several nodes)."""
        if len(parts) == 1:
            return parts[0]
        return self.emit(Op.ADD, parts, AddAttrs(), name=f"{value}/grad_sum")[0]


def _training_forward(b: GradBuilder, g: Graph) -> None:
    """Copy the forward nodes, switching BatchNorm and Dropout to their training ops."""
    for k, n in enumerate(g.nodes):
        if n.op is Op.BATCH_NORM:
            if n.attrs.activation != "none":
                raise GraphError(f"layer {n.name!r}: train from the source graph, not a fused one")
            outs = (n.outputs[0], b.fresh(f"{n.name}:mean"), b.fresh(f"{n.name}:invstd"))
            node = n.replace(op=Op.BATCH_NORM_TRAIN, outputs=outs)
        elif n.op is Op.DROPOUT:
            attrs = DropoutTrainAttrs(n.attrs.p, seed=1_000_003 * (k + 1))
            node = n.replace(op=Op.DROPOUT_TRAIN, inputs=n.inputs + (HYPER,), attrs=attrs,
                             outputs=(n.outputs[0], b.fresh(f"{n.name}:mask")))
        else:
            node = n
        d = OP_DEFS[node.op]
        acts = node.inputs if d.arity is None else node.inputs[:d.arity]
        b.add_node(node, output_shapes(node.op, node.attrs, [b.shape(i) for i in acts]))


def build_training_graph(g: Graph, loss: str = "cross_entropy",
                         optimizer: Any = None) -> Graph:
    """Forward (training mode) + loss + backward + optimizer updates, as one graph."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; available: {', '.join(LOSSES)}")
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise GraphError(f"training needs a network with one input and one output (the "
                         f"logits); {g.name!r} has inputs {list(g.inputs)} and outputs "
                         f"{list(g.outputs)}")
    logits = g.outputs[0]
    if len(g.values[logits].shape) != 2:
        raise GraphError(f"cross_entropy takes logits of shape (N, classes), but the output "
                         f"{logits!r} of {g.name!r} has shape {g.values[logits].shape}; end "
                         "the network with Linear (after Flatten or GlobalAvgPool2d)")
    b = GradBuilder(g)
    b.add_param(HYPER, np.array([getattr(optimizer, "lr", 0.0), 0.0], np.float64))
    labels = b.fresh("labels")
    b.values[labels] = Value(labels, (None,), "int64", "", INPUT)

    _training_forward(b, g)
    forward = list(b.nodes)
    loss_v, prob = b.emit(Op.SOFTMAX_CROSS_ENTROPY, [logits, labels], NoAttrs(), name="loss")

    # which values carry a gradient: trainable parameters and what depends on them
    requires = {p for p in g.constants if is_trainable(p)}
    for n in forward:
        if any(i in requires for i in n.inputs):
            requires.update(n.outputs[:1])
    if logits not in requires:
        raise GraphError(f"network {g.name!r} has no trainable parameter the loss depends on")

    grads: dict[str, list[str]] = {logits: list(b.emit(
        Op.SOFTMAX_CROSS_ENTROPY_GRAD, [prob, labels], NoAttrs(), name="loss/grad"))}
    pending = {p: sum(p in n.inputs for n in forward) for p in requires if p in g.constants}
    updates = _update_emitter(b, optimizer)
    for n in reversed(forward):
        parts = grads.pop(n.outputs[0], None)
        if parts is None:
            continue
        rule = OP_DEFS[n.op].grad
        if rule is None:
            raise GraphError(f"layer {n.name!r} ({n.op}) has no gradient rule, so the network "
                             "cannot be trained through it")
        b.origin = n
        gy = b.accumulate(parts, n.outputs[0])
        needs = [i in requires for i in n.inputs]
        for i, gi in zip(n.inputs, rule(b, n, gy, needs)):
            if gi is not None and i in requires:
                grads.setdefault(i, []).append(gi)
        b.origin = None
        for p in dict.fromkeys(n.inputs):
            if p in pending:
                pending[p] -= 1
                if pending[p] == 0 and p in grads:
                    b.origin = n
                    updates(p, b.accumulate(grads.pop(p), p))
                    b.origin = None
    outputs = (loss_v, logits)
    return Graph(f"{g.name}.train", b.nodes, b.values, (g.inputs[0], labels), outputs,
                 b.constants, copy_constants=False)


def _update_emitter(b: GradBuilder, optimizer: Any):
    """A function emitting one parameter's update node (and creating its state)."""
    if optimizer is None:
        return lambda p, gp: None

    def emit(p: str, gp: str) -> None:
        state = [b.add_param(f"{p}.{s}", np.zeros(b.shape(p), np.float32))
                 for s in optimizer.state_names()]
        b.emit(optimizer.op, [p, gp, *state, HYPER], optimizer.attrs(), name=f"{p}/update")
    return emit


@graph_pass("differentiate", opt_level=0, provides=("training_graph",))
def differentiate(g: Graph, ctx: PassContext) -> Graph:
    """Build the training graph (forward, loss, backward, optimizer) when training."""
    if not ctx.training:
        return g
    return build_training_graph(g, ctx.loss, ctx.optimizer)
