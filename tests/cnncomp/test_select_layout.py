"""select_layout: blocked regions, the fewest conversions, NCHW at the graph's edges."""
from __future__ import annotations

import numpy as np
import pytest

import cnncomp
import frontend as fe
from cnncomp.ops import Op
from cnncomp.passes import PassContext
from cnncomp.passes.fold_batch_norm import fold_batch_norm
from cnncomp.passes.fuse_epilogues import fuse_epilogues
from cnncomp.passes.select_layout import BLOCKED, assign_layouts, physical_shape, select_layout
from tests.helpers import rel_err

CTX = PassContext()


def chain(c=16, hw=8, sigmoid=False, cin=3):
    x = fe.Input((cin, hw, hw), name="x")
    h = fe.ReLU(name="r1")(fe.Conv2d(c, 3, padding=1, name="c1")(x))
    h = fe.Conv2d(c, 3, padding=1, name="c2")(h)
    h = fe.Sigmoid(name="s")(h) if sigmoid else fe.ReLU(name="r2")(fe.Add(name="a")(h, h))
    h = fe.Conv2d(c, 1, name="c3")(h)
    return fe.Model(x, fe.Linear(4, name="fc")(fe.GlobalAvgPool2d(name="gap")(h)), name="chain")


def _transforms(g):
    return [n for n in g.nodes if n.op is Op.LAYOUT_TRANSFORM]


def test_assign_layouts_converts_once_at_each_edge():
    g = chain(cin=16).graph
    blocked = {"c1", "r1", "c2", "a", "r2", "c3"}
    out = assign_layouts(g, blocked)
    out.verify()
    ts = _transforms(out)
    assert [(t.attrs.src, t.attrs.dst) for t in ts] == [("NCHW", BLOCKED), (BLOCKED, "NCHW")]
    assert out.values["c2"].layout == BLOCKED and out.values["x"].layout == "NCHW"
    assert out.node("gap").inputs[0].startswith("c3__")  # GAP reads the converted value


def test_graph_outputs_stay_nchw():
    x = fe.Input((3, 6, 6), name="x")
    net = fe.Model(x, fe.Conv2d(16, 3, name="c")(x))
    out = assign_layouts(net.graph, {"c"})
    out.verify()
    assert out.outputs == ("c",) and out.values["c"].layout == "NCHW"
    assert out.producer("c").op is Op.LAYOUT_TRANSFORM


def test_physical_shape_pads_channels():
    assert physical_shape((2, 17, 5, 5), BLOCKED) == (2, 2, 5, 5, 16)
    assert physical_shape((2, 17, 5, 5), "NCHW") == (2, 17, 5, 5)


def _has_blocked_conv():
    from runtime.registry import registered
    return any(k.op == "conv2d" and k.layout == BLOCKED for k in registered("cpu"))


needs_blocked = pytest.mark.skipif(not _has_blocked_conv(), reason="no NCHW16c conv kernel")


@needs_blocked
def test_sigmoid_breaks_the_blocked_region():
    g = fuse_epilogues(fold_batch_norm(chain(sigmoid=True).graph, CTX), CTX)
    out = select_layout(g, PassContext(layout="NCHWc"))
    assert all(out.values[n.outputs[0]].layout != BLOCKED for n in out.nodes
               if "sigmoid" in n.ops)


@needs_blocked
@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NCHWc", "auto"])
@pytest.mark.parametrize("batch", [1, 3])
def test_every_layout_gives_the_same_outputs(layout, batch):
    net = chain(c=20)
    ref = cnncomp.compile(net, layout="NCHW", fuse=False)
    m = cnncomp.compile(net, layout=layout, verify=True)
    x = np.random.default_rng(batch).standard_normal((batch, 3, 8, 8)).astype(np.float32)
    assert rel_err(m(x), ref(x)) < 1e-5
    transforms = sum(k.op == "layout_transform" for k in m.kernels)
    if layout == "NCHWc":  # the 3-channel stem reads NCHW and the GAP writes (N, C)
        assert transforms == 0 and {k.name: k.layout for k in m.kernels}["gap"] == "NCHW16c"
    if layout == "NHWC":  # the whole conv region, GAP included: one conversion, in
        assert transforms == 1 and {k.name: k.layout for k in m.kernels}["gap"] == "NHWC"


@needs_blocked
def test_a_few_channel_dense_conv_reads_nchw_and_writes_blocked():
    """A stem's 3 input channels would be 3 of 16 in NCHW16c: it reads the NCHW input
    and writes NCHW16c, so the region needs no conversion on the way in (nor on the way
    out: the global average pool writes (N, C))."""
    g = fuse_epilogues(fold_batch_norm(chain().graph, CTX), CTX)
    out = select_layout(g, PassContext(layout="NCHWc"))
    layouts = {n.name: out.values[n.outputs[0]].layout for n in out.nodes}
    assert layouts["c1"] == BLOCKED and layouts["c2"] == BLOCKED
    assert out.node("c1").inputs[0] == "x"
    assert _transforms(out) == []


@needs_blocked
@pytest.mark.parametrize("batch", [1, 2])
def test_a_few_channel_conv_inside_the_region_gets_its_input_in_nchw(batch):
    """LeNet's second conv reads 6 channels: inside a blocked region its input is
    converted back to NCHW for it, and every output still agrees."""
    x = fe.Input((1, 12, 12), name="x")
    h = fe.MaxPool2d(2, name="p1")(fe.ReLU()(fe.Conv2d(6, 3, name="c1")(x)))
    h = fe.ReLU()(fe.Conv2d(16, 3, padding=1, name="c2")(h))
    net = fe.Model(x, fe.Linear(3, name="fc")(fe.Flatten()(h)), name="lenet_like")
    m = cnncomp.compile(net, layout="NCHWc", verify=True)
    ref = cnncomp.compile(net, layout="NCHW", fuse=False)
    xs = np.random.default_rng(batch).standard_normal((batch, 1, 12, 12)).astype(np.float32)
    assert rel_err(m(xs), ref(xs)) < 1e-5
    layouts = {k.name: k.layout for k in m.kernels}
    assert layouts["c1"] == layouts["p1"] == layouts["c2"] == BLOCKED
    to_nchw = m.graph.producer(m.graph.node("c2").inputs[0])
    assert to_nchw.op is Op.LAYOUT_TRANSFORM and to_nchw.inputs == ("p1",)
    assert (to_nchw.attrs.src, to_nchw.attrs.dst) == (BLOCKED, "NCHW")


def zoo_like():
    """Inception-style concat, depthwise and grouped convs, pooling, sigmoid, LRN."""
    x = fe.Input((6, 9, 9), name="x")
    a = fe.ReLU()(fe.BatchNorm2d()(fe.Conv2d(8, 1)(x)))
    b = fe.Sigmoid()(fe.Conv2d(6, 3, padding=(1, 2), dilation=(1, 2), groups=3)(x))
    c = fe.Conv2d(4, 1)(fe.MaxPool2d(3, stride=1, padding=1)(x))
    h = fe.Concat()(a, b, c)
    h = fe.Conv2d(18, 3, stride=2, groups=18, padding=1)(h)
    h = fe.AvgPool2d(2, ceil_mode=True, count_include_pad=False)(h)
    h = fe.LocalResponseNorm(3)(h)
    h = fe.Add()(fe.Conv2d(18, 1)(h), h)
    return fe.Model(x, fe.Linear(5)(fe.Flatten()(h)), name="zoo_like")


@pytest.mark.parametrize("layout", ["NHWC", "NCHWc"])
@pytest.mark.parametrize("batch", [1, 2])
def test_layouts_agree_on_a_mixed_network(layout, batch):
    net = zoo_like()
    ref = cnncomp.compile(net, layout="NCHW", fuse=False)
    m = cnncomp.compile(net, layout=layout, verify=True)
    x = np.random.default_rng(batch).standard_normal((batch, 6, 9, 9)).astype(np.float32)
    assert rel_err(m(x), ref(x)) < 1e-5
    assert layout.replace("NCHWc", BLOCKED) in {k.layout for k in m.kernels}


def test_physical_shape_nhwc():
    assert physical_shape((2, 17, 5, 6), "NHWC") == (2, 5, 6, 17)
