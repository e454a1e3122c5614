"""select_layout: choose each value's physical layout and insert the fewest conversions.

Layouts: "NCHW" (PyTorch's), "NHWC" (channels last) and "NCHW16c" (channels in blocks
of 16, the vector width of AVX-512: an (N, C, H, W) tensor is stored as
(N, ceil(C/16), H, W, 16), padded channels zero). The IR keeps every value's logical NCHW
shape; only ``Value.layout`` changes, and lowering derives the physical buffer shape from
it. A dense conv of fewer than 16 input channels (an RGB stem) runs blocked reading its
input in NCHW (``input_layout``): blocked, it would multiply 16 channels, most of them
padding, so the region starts at its output and its input needs no conversion.

An op can run blocked when the runtime registers a kernel for it in that layout, or when
it is a zero-preserving elementwise op (its kernel works on the flat buffer and keeps the
padded channels zero). Nodes that can run blocked form connected regions; a region is
kept only if the modelled conv speed-up outweighs the conversions at its boundary (ONNX
Runtime and TVM's x86 schedule convert once at the edges for the same reason); each
conv's cost per layout is measured once per machine (cnncomp.cost). Graph
inputs and outputs stay NCHW: what the user passes and gets is always NCHW.
"""
from __future__ import annotations

import math
from runtime.registry import registered

from ..ir import PARAM, Graph, Meta, Node, Value
from .. import cost
from ..ops import LayoutTransformAttrs, Op, attrs_to_dict, op_def
from . import PassContext, graph_pass

BLOCKED = "NCHW16c"
NHWC = "NHWC"
BLOCK = 16
# zero-preserving activations: f(0) == 0, so the padded channels stay zero
_ZERO_SAFE_ACTS = ("none", "relu", "leaky_relu", "tanh")
_FLAT_OPS = {Op.RELU, Op.LEAKY_RELU, Op.TANH, Op.DROPOUT, Op.ADD}

# Convolutions are costed by timing their kernels on this machine (cnncomp.cost). With
# CNNCOMP_LAYOUT_COST=model this analytic model stands in, calibrated on the 2-core Zen 4
# development machine: NCHW convs (im2col + BLAS; with 16+ channels both ways the NCHW
# kernel now converts and runs the blocked one) ran 42-54 GFLOP/s and the NCHW16c
# kernel 130-180 GFLOP/s on ResNet-18's layers at batch 32 (it misranks layouts on an
# AVX2 Zen 3, hence the measurement). The blocked kernel also computes the padding
# channels, which the model charges for. A layout transform moves ~4 GB/s (both modes).
GFLOPS = {"NCHW": 45.0, BLOCKED: 150.0, NHWC: 45.0}
TRANSFORM_GBPS = 4.0


def _padded(c: int) -> int:
    return -(-c // BLOCK) * BLOCK


def _blocked_kernels(target: str, layout: str = BLOCKED) -> set[str]:
    return {k.op for k in registered(target) if k.layout == layout and k.mode == "forward"}


def can_block(g: Graph, n: Node, kernels: set[str], layout: str = BLOCKED) -> bool:
    """Can node ``n`` read and write ``layout`` (NCHW16c or NHWC)?"""
    if any(len(g.values[i].shape) != 4 for i in n.inputs if g.values[i].kind != PARAM):
        return False
    if layout == NHWC:  # no padding channels: every kernel registered for NHWC will do
        if n.op is Op.CONCAT:
            return n.attrs.axis == 1 and "concat" in kernels
        if n.op is Op.GLOBAL_AVG_POOL2D:
            return "global_avg_pool2d" in kernels
        return n.op.value in kernels and len(g.values[n.outputs[0]].shape) == 4
    if getattr(n.attrs, "activation", "none") not in _ZERO_SAFE_ACTS:
        return False
    if n.op in _FLAT_OPS:
        return True
    if n.op is Op.CONCAT:  # whole blocks only: every input a multiple of 16 channels
        return (n.attrs.axis == 1 and "concat" in kernels
                and all(g.values[i].shape[1] % BLOCK == 0 for i in n.inputs))
    if n.op is Op.CONV2D:
        c = g.values[n.inputs[0]].shape[1]
        ok_groups = n.attrs.groups == 1 or n.attrs.groups == c == n.attrs.out_channels
        return ok_groups and "conv2d" in kernels
    return n.op.value in kernels


def input_layout(layout: str, channels: int, groups: int) -> str:
    """The layout a conv running in ``layout`` reads its data input in. A dense conv of
    fewer than 16 input channels (an RGB stem) reads NCHW and writes NCHW16c: blocked, 13
    of 16 input channels would be zero padding the kernel multiplies (1.6-5x the NCHW
    conv plus converting its output), and reading the planes directly beat the NCHW conv
    plus that conversion 1.4-2.2x on the zoo's stems."""
    return "NCHW" if layout == BLOCKED and groups == 1 and channels < BLOCK else layout


def _data_layout(g: Graph, n: Node, i: str, layout: str) -> str:
    """The layout node ``n`` (running in ``layout``) reads its input ``i`` in."""
    if n.op is Op.CONV2D and i == n.inputs[0]:
        return input_layout(layout, g.values[i].shape[1], n.attrs.groups)
    return layout


def _regions(g: Graph, eligible: set[str]) -> list[set[str]]:
    """Connected components of eligible nodes, linked through the values between them."""
    parent = {n: n for n in eligible}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a
    for n in g.nodes:
        if n.name not in eligible:
            continue
        for i in n.inputs:
            p = g.producer(i)
            if p is not None and p.name in eligible:
                parent[find(p.name)] = find(n.name)
    groups: dict[str, set[str]] = {}
    for n in eligible:
        groups.setdefault(find(n), set()).add(n)
    return list(groups.values())


def _value_bytes(v: Value, layout: str = BLOCKED) -> int:
    """Bytes per sample of a value in NCHW plus its copy in ``layout`` (padded channels)."""
    dims = list(v.concrete_shape(1))
    blocked = dims[:1] + [_padded(dims[1])] + dims[2:] \
        if len(dims) == 4 and layout == BLOCKED else dims
    return 2 * math.prod(dims) + 2 * math.prod(blocked)


def _conv_spec(g: Graph, n: Node, layout: str) -> tuple:
    """conv node ``n`` in ``layout`` as cnncomp.cost takes it (shapes per image)."""
    return (layout, g.values[n.inputs[0]].concrete_shape(1), g.values[n.inputs[1]].shape,
            g.values[n.outputs[0]].concrete_shape(1), attrs_to_dict(n.attrs))


def conv_cost(g: Graph, n: Node, layout: str, target: str = "cpu") -> float:
    """Seconds per image of conv node ``n`` in ``layout``: measured on this machine
    (``cnncomp.cost``), or from the analytic model when measuring is off."""
    if cost.enabled():
        t = cost.conv_seconds(*_conv_spec(g, n, layout), target)
        if t is not None:
            return t
    x = g.values[n.inputs[0]].concrete_shape(1)
    out = g.values[n.outputs[0]].concrete_shape(1)
    flops = op_def(n.op).flops(n.attrs, [x], out)
    c, o = x[1], out[1]
    if (layout == "NCHW" and n.attrs.groups == 1 and min(c, o) >= BLOCK
            and getattr(n.attrs, "activation", "none") != "sigmoid"):
        # the NCHW kernel runs such a conv blocked between two conversions
        # (runtime/cpu/conv.py): the blocked cost plus converting its input and output
        moved = sum(_value_bytes(g.values[v]) for v in (n.inputs[0], n.outputs[0]))
        return conv_cost(g, n, BLOCKED, target) + moved / (TRANSFORM_GBPS * 1e9)
    waste = _padded(o) / o if layout == BLOCKED else 1.0
    if n.attrs.groups == 1 and input_layout(layout, c, 1) == BLOCKED:
        waste *= _padded(c) / c
    return flops / 1e9 * waste / GFLOPS[layout]


def region_gain(g: Graph, region: set[str], layout: str = BLOCKED, target: str = "cpu"
                ) -> float:
    """Modelled seconds saved per sample by running ``region`` in ``layout`` (minus
    conversions)."""
    gain = 0.0
    boundary: set[str] = set()
    for n in g.nodes:
        if n.name in region:
            if n.op is Op.CONV2D:
                gain += conv_cost(g, n, "NCHW", target) - conv_cost(g, n, layout, target)
            for i in n.inputs:
                p = g.producer(i)
                inside = p is not None and p.name in region
                if g.values[i].kind != PARAM and inside != (_data_layout(g, n, i, layout)
                                                            == layout):
                    boundary.add(i)  # read in a layout its producer does not write
        else:
            for i in n.inputs:
                p = g.producer(i)
                if p is not None and p.name in region:
                    boundary.add(i)
    for o in g.outputs:
        p = g.producer(o)
        if p is not None and p.name in region:
            boundary.add(o)
    cost = sum(_value_bytes(g.values[v], layout) for v in boundary) / (TRANSFORM_GBPS * 1e9)
    return gain - cost


def _transform(name: str, out: str, src_value: str, src: str, dst: str,
               layers: tuple[str, ...] = ()) -> Node:
    """A conversion node ``name`` writing value ``out`` from ``src_value``."""
    return Node(name, Op.LAYOUT_TRANSFORM, (src_value,), (out,),
                LayoutTransformAttrs(src, dst), Meta(ops=("layout_transform",), layers=layers))


def assign_layouts(g: Graph, blocked: set[str], layout: str = BLOCKED) -> Graph:
    """Rewrite ``g`` so nodes in ``blocked`` run ``layout``, inserting conversions at edges."""
    values = dict(g.values)
    nodes: list[Node] = []
    converted: dict[tuple[str, str], str] = {}  # (value, layout) -> converted value name
    layout_of = {i: values[i].layout for i in g.inputs}
    node_names = {n.name for n in g.nodes}

    def convert(v: str, want: str, user: str) -> str:
        if layout_of.get(v, values[v].layout) == want or values[v].kind == PARAM:
            return v
        key = (v, want)
        if key not in converted:
            name = f"{v}__{want}"
            while name in values or name in node_names or f"{v}__to_{want}" in node_names:
                name += "_"
            values[name] = Value(name, values[v].shape, values[v].dtype, want)
            nodes.append(_transform(f"{v}__to_{want}", name, v, layout_of[v], want, (user,)))
            layout_of[name] = want
            converted[key] = name
        return converted[key]

    for n in g.nodes:
        want = layout if n.name in blocked else "NCHW"
        ins = tuple(convert(i, _data_layout(g, n, i, want), n.name)
                    if len(values[i].shape) == 4 else i for i in n.inputs)
        outs, to_nchw = [], []
        for o in n.outputs:
            v = values[o]
            lay = want if len(v.shape) == 4 else v.layout
            if lay != v.layout and o in g.outputs:
                # the user sees NCHW: write blocked to an inner value, convert into `o`
                inner = f"{o}__{lay}"
                values[inner] = Value(inner, v.shape, v.dtype, lay)
                to_nchw.append((o, inner))
                o = inner
            else:
                values[o] = Value(o, v.shape, v.dtype, lay, v.kind)
            layout_of[o] = lay
            outs.append(o)
        nodes.append(n.replace(inputs=ins, outputs=tuple(outs)))
        for o, inner in to_nchw:
            nodes.append(_transform(f"{o}__to_NCHW", o, inner, layout, "NCHW", (n.name,)))
            layout_of[o] = "NCHW"
    return g.replace(nodes=nodes, values=values)


def _plan(g: Graph, target: str, layout: str, forced: bool) -> tuple[set[str], float]:
    """Nodes to run in ``layout`` and the modelled gain (s/sample) of doing so."""
    kernels = _blocked_kernels(target, layout)
    if "conv2d" not in kernels or "layout_transform" not in kernels:
        return set(), 0.0
    eligible = {n.name for n in g.nodes if can_block(g, n, kernels, layout)}
    regions = [r for r in _regions(g, eligible)
               if any(g.node(n).op is Op.CONV2D for n in r)]
    if forced:
        return set().union(*regions) if regions else set(), 0.0
    gains = [region_gain(g, r, layout, target) for r in regions]
    keep = [(r, gain) for r, gain in zip(regions, gains) if gain > 0]
    return set().union(*(r for r, _ in keep)) if keep else set(), sum(gn for _, gn in keep)


@graph_pass("select_layout", opt_level=2, provides=("layouts",))
def select_layout(g: Graph, ctx: PassContext) -> Graph:
    """Run convolution regions in NCHW16c or NHWC when the cost model says it pays (CPU
    only: the CUDA kernels are NCHW, so target 'cuda' keeps every value NCHW; training
    keeps NCHW, where its backward kernels are)."""
    if ctx.layout == "NCHW" or ctx.training or ctx.target != "cpu":
        return g
    if ctx.layout in ("NCHWc", NHWC):
        layout = BLOCKED if ctx.layout == "NCHWc" else NHWC
        nodes, _ = _plan(g, ctx.target, layout, forced=True)
    else:  # auto: the layout whose regions the cost model rates best
        if cost.enabled():  # time every conv in every layout it can take, under one bar:
            # conv by conv, so that one conv's layouts are timed moments apart (this VM's
            # speed drifts by 1.5x over minutes), NCHW first (the helper process's share)
            kernels = {lay: _blocked_kernels(ctx.target, lay) for lay in (BLOCKED, NHWC)}
            cost.measure([_conv_spec(g, n, lay) for n in g.nodes if n.op is Op.CONV2D
                          for lay in ("NCHW", BLOCKED, NHWC)
                          if lay == "NCHW" or can_block(g, n, kernels[lay], lay)],
                         ctx.target)
        options = [(layout, *_plan(g, ctx.target, layout, forced=False))
                   for layout in (BLOCKED, NHWC)]
        layout, nodes, gain = max(options, key=lambda o: o[2])
        if gain <= 0:
            return g
    return assign_layouts(g, nodes, layout) if nodes else g


def physical_shape(shape: tuple, layout: str) -> tuple:
    """The buffer shape of a logical NCHW shape stored in ``layout``."""
    if layout == BLOCKED:
        n, c, h, w = shape
        return (n, -(-c // BLOCK), h, w, BLOCK)
    if layout == NHWC:
        n, c, h, w = shape
        return (n, h, w, c)
    return tuple(shape)

