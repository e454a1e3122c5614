"""Each pass's rewrite on its own, the pass manager, and fused == unfused."""
from __future__ import annotations

import os

import numpy as np
import pytest

import cnncomp
import frontend as fe
from cnncomp.errors import GraphError
from cnncomp.ir import Graph
from cnncomp.passes import (PASSES, PassContext, PassManager, VerifyInstrument,
                            default_pipeline, graph_pass)
from cnncomp.passes.eliminate_dead_code import eliminate_dead_code
from cnncomp.passes.fold_batch_norm import fold_batch_norm
from cnncomp.passes.fuse_epilogues import fuse_epilogues
from tests.helpers import rel_err

CTX = PassContext()


def _random_bn(net, seed=0):
    rng = np.random.default_rng(seed)
    p = net.parameters()
    for k in p:
        if k.endswith("running_mean") or k.endswith(".bias"):
            p[k] = rng.normal(0, 0.2, p[k].shape).astype(np.float32)
        elif k.endswith("running_var"):
            p[k] = rng.uniform(0.5, 1.5, p[k].shape).astype(np.float32)
        elif k.endswith(".weight") and p[k].ndim == 1:
            p[k] = rng.normal(1, 0.2, p[k].shape).astype(np.float32)
    net.load_parameters(p)
    return net


def basic_block(c=8, hw=6, proj=False):
    x = fe.Input((c, hw, hw), name="x")
    h = fe.ReLU(name="r1")(fe.BatchNorm2d(name="bn1")(
        fe.Conv2d(c, 3, padding=1, bias=False, name="c1")(x)))
    h = fe.BatchNorm2d(name="bn2")(fe.Conv2d(c, 3, padding=1, bias=False, name="c2")(h))
    sc = x
    if proj:
        sc = fe.BatchNorm2d(name="bnp")(fe.Conv2d(c, 1, bias=False, name="cp")(x))
    return _random_bn(fe.Model(x, fe.ReLU(name="r2")(fe.Add(name="add")(sc, h)), name="block"))


def test_fold_batch_norm_matches_analytic_fold():
    net = basic_block()
    g = fold_batch_norm(net.graph, CTX)
    assert [n.op.value for n in g.nodes] == ["conv2d", "relu", "conv2d", "add", "relu"]
    c1 = g.node("c1")
    assert c1.ops == ("conv2d", "batch_norm") and c1.outputs == ("bn1",)
    p = net.parameters()
    s = p["bn1.weight"].astype(np.float64) / np.sqrt(p["bn1.running_var"].astype(np.float64)
                                                     + 1e-5)
    w = p["c1.weight"] * s[:, None, None, None]
    b = p["bn1.bias"] - p["bn1.running_mean"] * s
    np.testing.assert_allclose(g.constants[c1.inputs[1]], w, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g.constants[c1.inputs[2]], b, rtol=1e-6, atol=1e-7)
    # the input graph is untouched
    assert [n.op.value for n in net.graph.nodes].count("batch_norm") == 2


def test_fold_skips_conv_with_two_users_and_graph_outputs():
    x = fe.Input((3, 5, 5), name="x")
    c = fe.Conv2d(4, 3, name="c")(x)
    y = fe.Add(name="a")(fe.BatchNorm2d(name="bn")(c), c)  # conv output used twice
    g = fold_batch_norm(fe.Model(x, y).graph, CTX)
    assert [n.op.value for n in g.nodes] == ["conv2d", "batch_norm", "add"]
    x = fe.Input((3, 5, 5), name="x")
    c = fe.Conv2d(4, 3, name="c")(x)
    g = fold_batch_norm(fe.Model(x, [c, fe.BatchNorm2d(name="bn")(c)]).graph, CTX)
    assert "c" in g.outputs and "batch_norm" in [n.op.value for n in g.nodes]


def test_fuse_epilogues_basic_block_kernel_count():
    for proj, ops in [(False, [("conv2d", "batch_norm", "relu"),
                               ("conv2d", "batch_norm", "add", "relu")]),
                      (True, [("conv2d", "batch_norm", "relu"),
                              ("conv2d", "batch_norm"),
                              ("conv2d", "batch_norm", "add", "relu")])]:
        g = fuse_epilogues(fold_batch_norm(basic_block(proj=proj).graph, CTX), CTX)
        assert sorted(n.ops for n in g.nodes) == sorted(ops)
        g.verify()


def test_fuse_never_across_a_value_with_two_users_or_an_output():
    x = fe.Input((3, 5, 5), name="x")
    c = fe.Conv2d(4, 3, name="c")(x)
    r = fe.ReLU(name="r")(c)
    s = fe.Sigmoid(name="s")(c)
    g = fuse_epilogues(fe.Model(x, fe.Add(name="a")(r, s)).graph, CTX)
    assert len(g.nodes) == 4
    x = fe.Input((3, 5, 5), name="x")
    c = fe.Conv2d(4, 3, name="c")(x)
    g = fuse_epilogues(fe.Model(x, [c, fe.ReLU(name="r")(c)]).graph, CTX)
    assert g.outputs == ("c", "r") and len(g.nodes) == 2


def test_add_absorbs_relu_when_no_anchor_can():
    x = fe.Input((3, 5, 5), name="x")
    y = fe.Input((3, 5, 5), name="y")
    g = fuse_epilogues(fe.Model([x, y], fe.ReLU()(fe.Add()(x, y))).graph, CTX)
    (n,) = g.nodes
    assert n.ops == ("add", "relu") and n.attrs.activation == "relu"


def test_eliminate_dead_code_drops_dropout_keeps_outputs():
    x = fe.Input((10,), name="x")
    h = fe.Dropout(name="d1")(fe.Linear(8, name="l1")(x))
    out = fe.Linear(4, name="l2")(h)
    g = eliminate_dead_code(fe.Model(x, out).graph, CTX)
    assert [n.name for n in g.nodes] == ["l1", "l2"] and g.node("l2").inputs[0] == "l1"
    x = fe.Input((10,), name="x")
    g = eliminate_dead_code(fe.Model(x, fe.Dropout(name="d")(x)).graph, CTX)
    assert [n.name for n in g.nodes] == ["d"]


def test_pipeline_switches():
    assert "fold_batch_norm" in default_pipeline()
    assert "fold_batch_norm" not in default_pipeline(fuse=False)
    assert "fuse_epilogues" not in default_pipeline(fuse=False)
    assert "plan_memory" in default_pipeline(fuse=False)
    assert "plan_memory" not in default_pipeline(disable=["plan_memory"])
    with pytest.raises(ValueError, match="known passes"):
        default_pipeline(disable=["fold_bn"])
    with pytest.raises(ValueError, match="unknown pass"):
        PassManager(["nope"])


def test_verify_instrument_catches_a_broken_pass():
    @graph_pass("_test_break_shapes")
    def breaker(g: Graph, ctx):
        n = g.nodes[0]
        vals = dict(g.values)
        v = vals[n.outputs[0]]
        vals[n.outputs[0]] = type(v)(v.name, (None, 99), v.dtype, v.layout, v.kind)
        return g.replace(values=vals)
    try:
        net = fe.Sequential(fe.Linear(3), input_shape=(4,))
        with pytest.raises(GraphError, match="_test_break_shapes"):
            PassManager(["_test_break_shapes"], CTX, [VerifyInstrument()]).run(net.graph)
    finally:
        del PASSES["_test_break_shapes"]


def test_dump_dir_writes_one_file_per_changing_pass(tmp_path):
    d = tmp_path / "dump"
    cnncomp.compile(basic_block(), dump_dir=str(d), verify=True)
    files = sorted(os.listdir(d))
    assert "00_input.txt" in files and "00_input.dot" in files
    assert any(f.endswith("fold_batch_norm.txt") for f in files)
    assert any(f.endswith("fuse_epilogues.dot") for f in files)
    assert not any("eliminate_dead_code" in f for f in files)  # unchanged: not dumped
    text = open(d / [f for f in files if f.endswith("fuse_epilogues.txt")][0]).read()
    assert "conv2d+batch_norm+add+relu" in text


# --------------------------------------------------------------------------- fused == unfused

def _inception(c=6, hw=7):
    x = fe.Input((c, hw, hw), name="x")
    a = fe.ReLU()(fe.BatchNorm2d()(fe.Conv2d(4, 1, bias=False)(x)))
    b = fe.ReLU()(fe.Conv2d(5, 3, padding=1)(fe.ReLU()(fe.Conv2d(3, 1)(x))))
    cc = fe.LeakyReLU(0.2)(fe.Conv2d(2, 5, padding=2)(x))
    d = fe.ReLU()(fe.Conv2d(3, 1)(fe.MaxPool2d(3, stride=1, padding=1)(x)))
    y = fe.Concat()(a, b, cc, d)
    y = fe.Linear(5)(fe.Dropout()(fe.Flatten()(fe.AvgPool2d(2, ceil_mode=True)(y))))
    return _random_bn(fe.Model(x, fe.Softmax()(y), name="inception"))


def _mixed(c=3, hw=9):
    x = fe.Input((c, hw, hw), name="x")
    h = fe.Tanh()(fe.BatchNorm2d()(fe.Conv2d(6, 3, stride=2, padding=1, groups=3)(x)))
    h = fe.Sigmoid()(fe.Conv2d(6, 3, padding="same", dilation=2)(h))
    h2 = fe.BatchNorm2d()(h)  # BN after a non-conv: stays a kernel
    h = fe.ReLU()(fe.Add()(h, h2))
    h = fe.LocalResponseNorm(3)(h)
    h = fe.GlobalAvgPool2d()(h)
    return _random_bn(fe.Model(x, fe.Linear(4)(h), name="mixed"))


@pytest.mark.parametrize("build", [basic_block, lambda: basic_block(proj=True), _inception,
                                   _mixed])
@pytest.mark.parametrize("batch", [1, 4])
def test_fused_equals_unfused(build, batch):
    net = build()
    fused = cnncomp.compile(net, verify=True)
    plain = cnncomp.compile(net, fuse=False, verify=True)
    assert len(fused.kernels) < len(plain.kernels)
    x = np.random.default_rng(batch).standard_normal(
        (batch, *net.input_shape)).astype(np.float32)
    assert rel_err(fused(x), plain(x)) < 1e-5


def test_fold_constants_evaluates_constant_subgraphs():
    from cnncomp.ir import PARAM, Meta, Node, Value
    from cnncomp.ops import NoAttrs, Op
    from cnncomp.passes.fold_constants import fold_constants
    p = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    values = {"p": Value("p", (1, 4), kind=PARAM, layout=""),
              "r1": Value("r1", (1, 4), layout="NC"), "out": Value("out", (1, 4), layout="NC")}
    nodes = [Node("n1", Op.RELU, ("p",), ("r1",), NoAttrs(), Meta()),
             Node("n2", Op.TANH, ("r1",), ("out",), NoAttrs(), Meta())]
    g = Graph("consts", nodes, values, [], ["out"], {"p": p})
    g.verify()
    f = fold_constants(g, CTX)
    f.verify()
    assert [n.name for n in f.nodes] == ["n2"]  # the output node is kept
    np.testing.assert_array_equal(f.constants["r1"], np.maximum(p, 0))
    assert fold_constants(fe.Sequential(fe.ReLU(), input_shape=(3,)).graph, CTX) is not None
    assert "fold_constants" in default_pipeline()
    assert "fold_constants" not in default_pipeline(disable=["fold_constants"])
