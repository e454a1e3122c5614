"""use_winograd: which convs are marked, and what the compiled model then computes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cnncomp
import frontend as fe
from cnncomp.errors import ShapeError
from cnncomp.ops import Conv2dAttrs, Op, _conv2d_infer
from cnncomp.passes import PassContext
from cnncomp.passes.use_winograd import use_winograd
from tests.helpers import rel_err, rng


def net():
    x = fe.Input((3, 8, 8), name="x")
    h = fe.ReLU(name="r0")(fe.Conv2d(32, 3, padding=1, name="stem")(x))  # 3 input channels
    h = fe.ReLU(name="r1")(fe.Conv2d(32, 3, padding=1, name="c1")(h))
    h = fe.Conv2d(48, 3, padding=1, name="c2")(h)
    h = fe.Conv2d(48, 3, stride=2, padding=1, name="down")(h)
    h = fe.Conv2d(48, 1, name="pw")(h)
    h = fe.Conv2d(48, 3, padding=1, groups=48, name="dw")(h)
    h = fe.Conv2d(48, 3, padding=2, dilation=2, name="dil")(h)
    return fe.Model(x, fe.Linear(5, name="fc")(fe.GlobalAvgPool2d(name="gap")(h)), name="w")


def algorithms(graph):
    return {n.name: n.attrs.algorithm for n in graph.nodes if n.op is Op.CONV2D}


def test_marks_dense_3x3_stride_1_convs_with_a_channel_block_of_input():
    g = use_winograd(net().graph, PassContext())
    g.verify()
    assert algorithms(g) == {"stem": "direct", "c1": "winograd", "c2": "winograd",
                             "down": "direct", "pw": "direct", "dw": "direct",
                             "dil": "direct"}


def test_other_targets_have_no_winograd_kernel():
    g = net().graph
    assert use_winograd(g, PassContext(target="cuda")) is g


def test_compiled_model_matches_float64_torch_and_summary_names_the_algorithm():
    n = net()
    x = rng(3).standard_normal((4, 3, 8, 8)).astype(np.float32)  # 64 tiles: 8 blocks
    m = cnncomp.compile(n)
    assert set(algorithms(m.graph).values()) == {"direct", "winograd"}
    direct = cnncomp.compile(n, disable=["use_winograd"])
    assert set(algorithms(direct.graph).values()) == {"direct"}
    p = n.parameters()
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731

    def conv(h, name, **kw):
        return F.conv2d(h, t(p[f"{name}.weight"]), t(p[f"{name}.bias"]), **kw)
    h = F.relu(conv(t(x), "stem", padding=1))
    h = conv(conv(F.relu(conv(h, "c1", padding=1)), "c2", padding=1), "down", stride=2,
             padding=1)
    h = conv(conv(conv(h, "pw"), "dw", padding=1, groups=48), "dil", padding=2, dilation=2)
    ref = F.linear(h.mean((2, 3)), t(p["fc.weight"]), t(p["fc.bias"])).numpy()
    assert rel_err(m(x), ref) < 1e-5
    assert rel_err(direct(x), ref) < 1e-5
    summary = m.summary(batch=4)
    assert "algorithm" in summary.splitlines()[1]
    c1 = next(line for line in summary.splitlines() if line.split()[1:2] == ["c1"])
    assert "winograd" in c1


def test_training_graphs_keep_direct_convs():
    trainer = cnncomp.compile(net(), training=True)
    assert set(algorithms(trainer.graph).values()) == {"direct"}


def test_winograd_on_an_unsuitable_conv_is_a_clear_error():
    a = Conv2dAttrs(out_channels=16, kernel_size=(3, 3), stride=(2, 2), algorithm="winograd")
    with pytest.raises(ShapeError, match="stride 1.*algorithm='direct'"):
        _conv2d_infer(a, [(1, 16, 8, 8)])
    with pytest.raises(ShapeError, match="'fft'"):
        _conv2d_infer(Conv2dAttrs(out_channels=16, kernel_size=(3, 3), algorithm="fft"),
                      [(1, 16, 8, 8)])
