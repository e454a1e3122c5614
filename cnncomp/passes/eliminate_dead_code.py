"""eliminate_dead_code: drop nodes no output depends on, and identities at inference."""
from __future__ import annotations

from ..ir import Graph
from ..ops import OP_DEFS, Op
from . import PassContext, graph_pass


def _bypass_identities(g: Graph, ctx: PassContext) -> Graph:
    """Rewire readers of an inference-time identity (Dropout) to its input.

    An identity whose output is a graph output stays (output names are user-visible);
    lowering turns it into a view, so it costs nothing.
    """
    rename: dict[str, str] = {}
    keep = []
    for n in g.nodes:
        n = n.replace(inputs=tuple(rename.get(i, i) for i in n.inputs)) \
            if any(i in rename for i in n.inputs) else n
        if n.op is Op.DROPOUT and not ctx.training and n.outputs[0] not in g.outputs:
            rename[n.outputs[0]] = n.inputs[0]
            continue
        keep.append(n)
    return g.replace(nodes=keep) if rename else g


def _drop_unused(g: Graph) -> Graph:
    """Keep nodes an output needs, and nodes that write parameters in place (optimizer
    updates, running statistics) with everything they read."""
    live = set(g.outputs)
    keep = []
    for n in reversed(g.nodes):
        if any(o in live for o in n.outputs) or OP_DEFS[n.op].effects:
            keep.append(n)
            live.update(n.inputs)
    if len(keep) == len(g.nodes):
        return g
    return g.replace(nodes=reversed(keep))


@graph_pass("eliminate_dead_code", opt_level=1)
def eliminate_dead_code(g: Graph, ctx: PassContext) -> Graph:
    """Remove nodes whose results no output needs, and Dropout at inference."""
    return _drop_unused(_bypass_identities(g, ctx))
