"""use_winograd: which convs are marked, and what the compiled model then computes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cnncomp
import frontend as fe
from cnncomp.bench import profile_kernels
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
    ops = {p["kernel"]: p["ops"] for p in profile_kernels(m, 4, repeat=1)}
    assert ops["c1"].endswith("(winograd)") and ops["down"].endswith("(direct)")


def test_training_graphs_mark_the_convs_and_their_input_gradients():
    n = net()
    trainer = cnncomp.compile(n, training=True)
    assert algorithms(trainer.graph) == algorithms(use_winograd(n.graph, PassContext()))
    grads = {node.name: node.attrs.fwd.algorithm for node in trainer.graph.nodes
             if node.op is Op.CONV2D_GRAD_INPUT}
    # c1's and c2's dL/dx are 3x3 stride-1 convs of 32 and 48 channels into 32
    assert sorted(k for k, v in grads.items() if v == "winograd") == sorted(
        k for k in grads if k.startswith(("c1", "c2")))


def test_a_training_step_with_winograd_matches_the_direct_one():
    """One SGD step on a net whose only convs are marked: the same loss and updates as
    with every conv direct, to float32 rounding (forward and dL/dx by Winograd, with the
    weights transformed again before every step)."""
    x = fe.Input((16, 10, 10), name="x")
    h = fe.ReLU(name="r1")(fe.Conv2d(32, 3, padding=1, name="c1")(x))
    h = fe.ReLU(name="r2")(fe.Conv2d(16, 3, padding=1, name="c2")(h))
    small = fe.Model(x, fe.Linear(4, name="fc")(fe.GlobalAvgPool2d(name="gap")(h)), name="s")
    r = rng(5)
    xs = r.standard_normal((8, 16, 10, 10)).astype(np.float32)
    ys = r.integers(0, 4, 8)
    p0 = small.parameters()
    results = {}
    for label, disable in [("winograd", []), ("direct", ["use_winograd"])]:
        t = cnncomp.compile(small, training=True, disable=disable,
                            optimizer=cnncomp.optim.SGD(lr=0.1))
        losses = [t.step(xs, ys) for _ in range(2)]  # the second uses updated weights
        results[label] = losses, t.parameters()
    (lw, pw), (ld, pd) = results["winograd"], results["direct"]
    np.testing.assert_allclose(lw, ld, rtol=1e-5)
    for k in p0:
        assert rel_err(pw[k] - p0[k], pd[k] - p0[k]) < 1e-4, k


def test_winograd_on_an_unsuitable_conv_is_a_clear_error():
    a = Conv2dAttrs(out_channels=16, kernel_size=(3, 3), stride=(2, 2), algorithm="winograd")
    with pytest.raises(ShapeError, match="stride 1.*algorithm='direct'"):
        _conv2d_infer(a, [(1, 16, 8, 8)])
    with pytest.raises(ShapeError, match="'fft'"):
        _conv2d_infer(Conv2dAttrs(out_channels=16, kernel_size=(3, 3), algorithm="fft"),
                      [(1, 16, 8, 8)])
