"""use_winograd: mark the 3x3 stride-1 convolutions of a graph to compute by Winograd's
F(2x2, 3x3) on the CPU (``runtime/cpu/conv_winograd.py``).

Per 2x2 outputs it multiplies 16 times where the direct sum multiplies 36: measured on
the 2-core Zen 4, 0.52-0.59x the direct blocked kernel's time on ResNet-18's 3x3 layers
at batch 32. Its float32 results differ from the direct sum by ~1e-6 of the output's
magnitude (the direct kernel: ~1e-7); ``compile(..., disable=["use_winograd"])`` keeps
every conv direct.

In a training graph the conv's dL/dx (a 3x3 stride-1 conv too, by the flipped weight) is
marked with it; the weights are transformed again before every call there. dL/dW stays
direct.

The mark is a request, not a promise: the blocked (NCHW16c) conv kernel honours it at
bind time when the batch gives every thread a block of tiles (ResNet-18's 4x4 layers at
batch 1 have one: a thread would idle, 2.4x slower). The NHWC kernels and the CUDA target
have no Winograd kernel and compute the conv direct.
"""
from __future__ import annotations

import dataclasses

from ..ir import Graph
from ..ops import Op, winograd_computes
from . import PassContext, graph_pass
from .select_layout import BLOCK


def winograd_suits(attrs, in_channels: int) -> bool:
    """A dense 3x3 conv of stride 1, no dilation, with a channel block or more of input
    (a stem's few channels are read as planes by the direct kernel)."""
    return winograd_computes(attrs) and in_channels >= BLOCK


@graph_pass("use_winograd", opt_level=2)
def use_winograd(g: Graph, ctx: PassContext) -> Graph:
    """Mark 3x3 stride-1 dense convs (and their dL/dx) to run Winograd F(2x2, 3x3) (CPU)."""
    if ctx.target != "cpu":
        return g
    nodes, changed = [], False
    for n in g.nodes:
        if (n.op is Op.CONV2D and n.attrs.algorithm != "winograd"
                and winograd_suits(n.attrs, g.values[n.inputs[0]].shape[1])):
            n = n.replace(attrs=dataclasses.replace(n.attrs, algorithm="winograd"))
            changed = True
        elif (n.op is Op.CONV2D_GRAD_INPUT and n.attrs.fwd.algorithm != "winograd"
              and winograd_suits(n.attrs.fwd, n.attrs.fwd.out_channels)
              and n.attrs.shape[0] >= BLOCK):
            # dL/dx of a 3x3 stride-1 conv with padding <= 2 is a 3x3 stride-1 conv of
            # dL/dy (out_channels in, the forward input's channels out) by the weight
            # transposed and flipped: the same kernel, its weight transformed per step
            fwd = dataclasses.replace(n.attrs.fwd, algorithm="winograd")
            n = n.replace(attrs=dataclasses.replace(n.attrs, fwd=fwd))
            changed = True
        nodes.append(n)
    return g.replace(nodes=nodes) if changed else g
