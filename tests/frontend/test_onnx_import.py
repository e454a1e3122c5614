"""from_onnx / export_onnx: ONNX Runtime is the oracle.

Round trips of the zoo networks, the classic model-zoo architectures that ship inside
the onnx wheel (onnx/backend/test/data/light: their weights are ConstantOfShape nodes,
replaced here by seeded random initializers), a PyTorch export, and error reporting.
"""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import cnncomp  # noqa: E402
import frontend as fe  # noqa: E402
from frontend import zoo  # noqa: E402
from tests.helpers import rel_err  # noqa: E402

TOL = 1e-4
LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def ort_run(model, feeds):
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)[0]


@pytest.mark.parametrize("name", ["lenet5", "resnet18", "mobilenet", "inception", "alexnet",
                                  "digits_cnn"])
def test_export_matches_onnxruntime_and_round_trips(tmp_path, name):
    net = zoo.get(name)
    if name not in ("lenet5", "alexnet"):
        net = zoo.randomize_bn_stats(net, seed=0)
    path = str(tmp_path / f"{name}.onnx")
    cnncomp.export_onnx(net, path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    g = net.to_graph()
    x = np.random.default_rng(0).standard_normal(
        g.values[g.inputs[0]].concrete_shape(2)).astype(np.float32)
    ref = ort_run(path, {g.inputs[0]: x})
    assert rel_err(cnncomp.compile(net)(x), ref) < TOL
    back = fe.from_onnx(path)
    assert set(back.parameters()) == set(net.parameters())  # layer names survive
    assert rel_err(cnncomp.compile(back)(x), ref) < TOL


def test_export_refuses_an_optimized_graph(tmp_path):
    model = cnncomp.compile(zoo.lenet5(), layout="NCHW")  # auto may add layout transforms
    with pytest.raises(cnncomp.CnnCompError, match="fused epilogue"):
        cnncomp.export_onnx(model.graph, str(tmp_path / "x.onnx"))
    assert not (tmp_path / "x.onnx").exists()


def randomize(model, seed=0):
    """ConstantOfShape weight nodes -> seeded random initializers (He-scaled)."""
    from onnx import numpy_helper
    r = np.random.default_rng(seed)
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    keep = []
    for n in model.graph.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in consts:
            shape = tuple(int(v) for v in consts[n.input[0]])
            b = (r.uniform(0.5, 1.5, shape) if len(shape) == 1 else
                 r.standard_normal(shape) * np.sqrt(2.0 / max(1, np.prod(shape[1:]))))
            model.graph.initializer.append(numpy_helper.from_array(b.astype(np.float32),
                                                                   n.output[0]))
        else:
            keep.append(n)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    last = model.graph.node[-1]
    if last.op_type == "Softmax":  # compare logits: random weights saturate a softmax
        model.graph.output[0].name = last.input[0]
        del model.graph.node[-1]
    return model


MODEL_ZOO = ["bvlc_alexnet", "vgg19", "resnet50", "inception_v1", "inception_v2",
             "squeezenet", "densenet121", "shufflenet", "zfnet512"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_ZOO)
def test_model_zoo_architectures_match_onnxruntime(name):
    m = randomize(onnx.load(os.path.join(LIGHT, f"light_{name}.onnx")))
    net = fe.from_onnx(m)
    g = net.to_graph()
    x = np.random.default_rng(1).standard_normal(
        g.values[g.inputs[0]].concrete_shape(1)).astype(np.float32)
    ref = ort_run(m, {g.inputs[0]: x})
    model = cnncomp.compile(net)
    assert any(len(k.ops) > 1 for k in model.kernels)  # fused
    assert rel_err(model(x).reshape(ref.shape), ref) < TOL


def test_shufflenet_channel_shuffle_runs_as_reshape_transpose():
    m = randomize(onnx.load(os.path.join(LIGHT, "light_shufflenet.onnx")))
    ops = [n.op.value for n in fe.from_onnx(m).graph.nodes]
    assert ops.count("transpose") == 16  # one per channel shuffle, batch axis kept first


def test_every_unsupported_node_is_reported_at_once():
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, 8])
    nodes = [helper.make_node("Relu", ["x"], ["a"], "ok"),
             helper.make_node("HardSwish", ["a"], ["b"], "hs"),
             helper.make_node("Elu", ["x"], ["c"], "elu"),
             helper.make_node("Add", ["b", "c"], ["y"], "add")]
    m = helper.make_model(helper.make_graph(nodes, "bad", [x], [y]))
    with pytest.raises(fe.OnnxImportError) as e:
        fe.from_onnx(m)
    text = str(e.value)
    assert "2 problem(s)" in text and "'hs' (HardSwish)" in text and "'elu' (Elu)" in text


def test_pytorch_export_imports(tmp_path):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn = torch.nn.BatchNorm2d(8)
            self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8 * 4 * 4, 5)

        def forward(self, x):
            h = torch.relu(self.bn(self.c1(x)))
            h = torch.relu(h + self.c2(h))
            h = torch.nn.functional.max_pool2d(h, 2)
            return self.fc(torch.flatten(h, 1))

    torch.manual_seed(0)
    net = Net().eval()
    net.bn.running_mean.uniform_(-0.5, 0.5)
    net.bn.running_var.uniform_(0.5, 1.5)
    path = str(tmp_path / "t.onnx")
    x = torch.randn(2, 3, 8, 8)
    torch.onnx.export(net, (x,), path, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}}, dynamo=False)
    model = cnncomp.compile(fe.from_onnx(path))
    with torch.no_grad():
        ref = net(x).numpy()
    assert rel_err(model(x.numpy()), ref) < TOL


TORCH_ZOO = ["alexnet", "vgg16_bn", "resnet50", "googlenet", "squeezenet", "densenet121",
             "shufflenet", "mobilenet_v2"]


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCH_ZOO)
def test_pytorch_model_zoo_exports_match_onnxruntime(tmp_path, name):
    """The classic architectures written in PyTorch (tests/frontend/torch_zoo.py, trained-
    looking BN statistics), exported by torch.onnx, import, fuse and match ONNX Runtime."""
    torch = pytest.importorskip("torch")
    from tests.frontend import torch_zoo
    net, size = torch_zoo.build(name)
    x = np.random.default_rng(2).standard_normal((2, 3, size, size)).astype(np.float32)
    path = str(tmp_path / f"{name}.onnx")
    torch.onnx.export(net, (torch.from_numpy(x),), path, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}}, dynamo=False)
    ref = ort_run(path, {"x": x})
    model = cnncomp.compile(fe.from_onnx(path))
    assert any(len(k.ops) > 1 for k in model.kernels)  # fused
    assert rel_err(model(x), ref) < TOL
    assert rel_err(model(x[:1]), ref[:1]) < TOL  # batch 1 too
