"""fold_constants: compute at compile time every node whose inputs are all constants.

Such nodes appear in imported graphs (weights reshaped, scaled or concatenated by the
exporter) and after other rewrites. A folded node's value becomes a new constant; the
node disappears. The CPU kernel of the op computes it, so folding can never disagree
with running. Nodes producing graph outputs are kept (an output is always computed).
"""
from __future__ import annotations

import numpy as np

from runtime.registry import get_kernel

from ..ir import PARAM, Graph, Value
from ..ops import OP_DEFS, attrs_to_dict
from . import PassContext, graph_pass


def _evaluate(g: Graph, node, constants: dict[str, np.ndarray]) -> np.ndarray:
    out_value = g.values[node.outputs[0]]
    out = np.empty(out_value.shape, np.float32)
    ins = [np.ascontiguousarray(constants[i], np.float32) for i in node.inputs]
    get_kernel(node.op.value, "cpu", "NCHW")(ins, [out], attrs_to_dict(node.attrs))()
    return out


@graph_pass("fold_constants", opt_level=1)
def fold_constants(g: Graph, ctx: PassContext) -> Graph:
    """Evaluate nodes whose inputs are all constants; their results become constants."""
    constants = dict(g.constants)
    values = dict(g.values)
    keep = []
    for n in g.nodes:
        d = OP_DEFS[n.op]
        foldable = (n.inputs and all(values[i].kind == PARAM for i in n.inputs)
                    and len(n.outputs) == 1 and not d.effects and d.mode == "forward"
                    and not any(o in g.outputs for o in n.outputs)
                    and all(None not in values[o].shape for o in n.outputs))
        if not foldable:
            keep.append(n)
            continue
        o = n.outputs[0]
        constants[o] = _evaluate(g, n, constants)
        v = values[o]
        values[o] = Value(o, v.shape, v.dtype, "", PARAM)
    if len(keep) == len(g.nodes):
        return g
    return g.replace(nodes=keep, values=values, constants=constants)
