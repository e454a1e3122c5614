"""Every built-in network, fused and unfused, against the same network in PyTorch."""
from __future__ import annotations

import numpy as np
import pytest

import cnncomp
from cnncomp.ops import Op
from frontend import zoo
from tests.helpers import rel_err
from tests.torch_reference import torch_forward

FAST = ["lenet5", "alexnet", "vgg11", "resnet18", "mobilenet", "inception"]
SLOW = ["vgg16", "resnet18_224"]


def _check(net, batch, fuse):
    x = np.random.default_rng(batch).standard_normal((batch, *net.input_shape)).astype(np.float32)
    ref = torch_forward(net.graph, x)
    model = cnncomp.compile(net, fuse=fuse, verify=True)
    assert rel_err(model(x), ref) < 1e-4


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("fuse", [True, False])
def test_builtin_networks_match_torch(name, fuse):
    net = zoo.randomize_bn_stats(zoo.get(name), seed=1)
    _check(net, 1, fuse)
    _check(net, 3, fuse)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_big_networks_match_torch(name):
    _check(zoo.randomize_bn_stats(zoo.get(name), seed=2), 1, True)


@pytest.mark.parametrize("block", [zoo.basic_block, zoo.inception_block])
@pytest.mark.parametrize("batch", [1, 2])
def test_blocks_match_torch(block, batch):
    net = zoo.randomize_bn_stats(block(), seed=3)
    _check(net, batch, True)
    _check(net, batch, False)


def test_resnet18_fuses_to_one_kernel_per_conv():
    m = cnncomp.compile(zoo.resnet18_cifar(), layout="NCHW")
    convs = [k for k in m.kernels if k.op == "conv2d"]
    assert len(convs) == 20 and len(m.kernels) == 22  # + global pool + classifier
    assert sum(k.ops == ("conv2d", "batch_norm", "add", "relu") for k in convs) == 8
    assert all("batch_norm" in k.ops for k in convs)


@pytest.mark.parametrize("layout", ["auto", "NCHWc", "NHWC"])
def test_resnet18_layout_converts_once_at_each_edge(layout):
    """Every conv in one layout (auto: whichever the timings chose), converted once at
    each edge of the region."""
    m = cnncomp.compile(zoo.resnet18_cifar(), layout=layout)
    kinds = [(k.name, k.op, k.layout) for k in m.kernels]
    convs = {name: lay for name, op, lay in kinds if op == "conv2d"}
    stem = convs.pop("stem_conv")
    (chosen,) = set(convs.values())
    assert layout == "auto" or chosen == {"NCHWc": "NCHW16c"}.get(layout, layout)
    # the 3-channel stem too: in NCHW16c it reads the NCHW input as planes
    assert stem == chosen
    transforms = [n for n in m.graph.nodes if n.op is Op.LAYOUT_TRANSFORM]
    # NHWC: in at the input; NCHW16c: none (the stem reads the NCHW input as planes, and
    # in both layouts the global average pool writes the (N, C) the Linear reads)
    assert len(transforms) == {"NCHW": 0, "NHWC": 1, "NCHW16c": 0}[chosen]
    if chosen == "NHWC":
        assert m.graph.nodes[0] is transforms[0] and kinds[0][1] == "layout_transform"
    if chosen == "NCHW16c":
        assert m.graph.nodes[0].name == "stem_conv" and m.graph.nodes[0].inputs[0] == "x"
        assert {name: lay for name, _, lay in kinds}["gap"] == "NCHW16c"


def test_unknown_builtin():
    with pytest.raises(KeyError, match="resnet18"):
        zoo.get("resnet1000")
