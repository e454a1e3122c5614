"""compile() and CompiledModel: calling, input checks, reports, saving, errors."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import cnncomp
import frontend as fe
from cnncomp.errors import FormatError, InputError, NonFiniteError
from tests.helpers import lenet, rel_err
from tests.torch_reference import torch_forward


@pytest.fixture(scope="module")
def lenet_models():
    net = lenet()
    return net, cnncomp.compile(net, verify=True), cnncomp.compile(net, fuse=False, verify=True)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_lenet_matches_torch_any_batch(lenet_models, batch):
    net, model, plain = lenet_models
    x = np.random.default_rng(batch).standard_normal((batch, 1, 28, 28)).astype(np.float32)
    ref = torch_forward(net.graph, x)
    y = model(x)
    assert y.shape == (batch, 10) and y.dtype == np.float32
    assert rel_err(y, ref) < 1e-4
    assert rel_err(plain(x), ref) < 1e-4


def test_kernels_report_fused_ops(lenet_models):
    net, _, plain = lenet_models
    model = cnncomp.compile(net, layout="NCHW")  # pin the layout: this tests fusion
    assert [k.ops for k in model.kernels] == [
        ("conv2d", "relu"), ("max_pool2d",), ("conv2d", "relu"), ("max_pool2d",),
        ("linear", "relu"), ("linear", "relu"), ("linear",)]
    assert [k.name for k in model.kernels][0] == "c1"
    # unfused: one op per kernel; Flatten of NCHW is a view, not a kernel
    assert all(len(k.ops) == 1 for k in plain.kernels)
    compute = [k for k in plain.kernels if k.op != "layout_transform"]
    assert "flatten" not in [k.op for k in compute] and len(compute) == 11


def test_output_is_a_fresh_array_and_calls_are_repeatable(lenet_models):
    _, model, _ = lenet_models
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    a = model(x)
    a[:] = 0
    b = model(x)
    c = model(x)
    assert np.abs(b).sum() > 0
    np.testing.assert_array_equal(b, c)
    assert not np.shares_memory(b, c)


def test_float64_and_noncontiguous_inputs_are_accepted(lenet_models):
    _, model, _ = lenet_models
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28))
    np.testing.assert_allclose(model(x), model(x.astype(np.float32)), rtol=1e-6, atol=1e-6)
    xt = np.ascontiguousarray(np.swapaxes(x, 2, 3)).swapaxes(2, 3)  # non-C-contiguous
    np.testing.assert_allclose(model(xt), model(x.astype(np.float32)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((2, 1, 28, 28), np.int64), "real float array"),
    (np.zeros((2, 1, 28, 28), np.complex64), "real float array"),
    (np.zeros((2, 1, 28, 28), bool), "real float array"),
    (np.zeros((2, 3, 28, 28), np.float32), r"expected shape \(N, 1, 28, 28\)"),
    (np.zeros((1, 28, 28), np.float32), "batch axis"),
    (np.zeros((0, 1, 28, 28), np.float32), "empty"),
    ("not an array", "ndarray"),
])
def test_bad_inputs_fail_before_any_kernel(lenet_models, bad, match):
    _, model, _ = lenet_models
    with pytest.raises(InputError, match=match):
        model(bad)


def test_multi_input_multi_output():
    a = fe.Input((4,), name="a")
    b = fe.Input((4,), name="b")
    s = fe.Add(name="s")(a, b)
    net = fe.Model([a, b], [s, fe.Linear(2, name="fc")(s)], name="two")
    m = cnncomp.compile(net)
    xa, xb = np.ones((3, 4), np.float32), np.full((3, 4), 2, np.float32)
    out = m(a=xa, b=xb)
    assert set(out) == {"s", "fc"}
    np.testing.assert_array_equal(out["s"], xa + xb)
    with pytest.raises(InputError, match="keyword"):
        m(xa)
    with pytest.raises(InputError, match="missing"):
        m(a=xa)
    with pytest.raises(InputError, match="batch size"):
        m(a=xa, b=xb[:2])


def test_check_finite_names_the_kernel():
    x = fe.Input((3,), name="x")
    net = fe.Model(x, fe.Linear(2, name="fc")(fe.ReLU(name="r")(x)))
    m = cnncomp.compile(net, check_finite=True, fuse=False)
    with pytest.raises(InputError, match="NaN"):
        m(np.array([[np.nan, 0, 0]], np.float32))
    p = net.parameters()
    p["fc.weight"][0, 0] = np.inf
    net.load_parameters(p)
    m = cnncomp.compile(net, check_finite=True)
    with pytest.raises(NonFiniteError, match="'fc'"):
        m(np.ones((1, 3), np.float32))
    # without the flag NaN passes through as in PyTorch
    y = cnncomp.compile(net)(np.ones((1, 3), np.float32))
    assert not np.isfinite(y).all()


def test_compile_copies_parameters():
    net = lenet()
    m = cnncomp.compile(net)
    x = np.ones((1, 1, 28, 28), np.float32)
    before = m(x)
    p = net.parameters()
    p["c1.weight"][:] = 0
    net.load_parameters(p)
    np.testing.assert_array_equal(m(x), before)


def test_memory_report_and_summary(lenet_models):
    _, model, _ = lenet_models
    model(np.zeros((4, 1, 28, 28), np.float32))
    r = model.memory_report()
    assert r["batch"] == 4
    assert r["lower_bound_bytes"] <= r["planned_bytes"] <= r["naive_bytes"]
    assert r["weights_bytes"] == 4 * sum(a.size for a in model.graph.constants.values())
    assert model.memory_report(batch=1)["planned_bytes"] < r["planned_bytes"]
    s = model.summary()
    assert "conv2d+relu" in s and "planned" in s and "MFLOP" in s


def test_disable_plan_memory_is_naive(lenet_models):
    net = lenet_models[0]
    m = cnncomp.compile(net, disable=["plan_memory"])
    m(np.zeros((2, 1, 28, 28), np.float32))
    r = m.memory_report()
    assert r["planned_bytes"] == r["naive_bytes"] and r["strategy"] == "naive"


def test_bad_compile_arguments():
    net = lenet()
    with pytest.raises(ValueError, match="known targets"):
        cnncomp.compile(net, target="tpu")
    with pytest.raises(ValueError, match="layout"):
        cnncomp.compile(net, layout="HWCN")
    with pytest.raises(TypeError, match="network"):
        cnncomp.compile("lenet")


# --------------------------------------------------------------------------- saving

def test_save_load_roundtrip(tmp_path, lenet_models):
    _, model, _ = lenet_models
    path = str(tmp_path / "lenet.cnnc")
    model.save(path)
    back = cnncomp.load(path)
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(back(x), model(x))
    assert [k.ops for k in back.kernels] == [k.ops for k in model.kernels]
    with zipfile.ZipFile(path) as z:  # documented, inspectable format
        assert sorted(z.namelist()) == ["arrays.npz", "manifest.json"]


def test_load_errors(tmp_path, lenet_models):
    _, model, _ = lenet_models
    good = str(tmp_path / "m.cnnc")
    model.save(good)
    data = open(good, "rb").read()
    trunc = tmp_path / "trunc.cnnc"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="corrupt|not a cnncomp"):
        cnncomp.load(str(trunc))
    junk = tmp_path / "junk.cnnc"
    junk.write_bytes(b"hello" * 100)
    with pytest.raises(FormatError):
        cnncomp.load(str(junk))
    with pytest.raises(FileNotFoundError):
        cnncomp.load(str(tmp_path / "missing.cnnc"))
    # a network file is not a compiled model
    net_path = str(tmp_path / "net.cnnc")
    lenet().save(net_path)
    with pytest.raises(FormatError, match="frontend.load"):
        cnncomp.load(net_path)
    # an incompatible version / missing weights / corrupt graph
    import json
    for mutate, match in [
        (lambda m: m.update(format_version=99), "version"),
        (lambda m: m["graph"]["nodes"][0].update(op="conv3d"), "corrupt"),
        (lambda m: m["graph"]["nodes"][0]["attrs"].update(stride=[0, 0]), "corrupt"),
    ]:
        with zipfile.ZipFile(good) as z:
            man = json.loads(z.read("manifest.json"))
            arrays = z.read("arrays.npz")
        mutate(man)
        bad = str(tmp_path / "bad.cnnc")
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr("manifest.json", json.dumps(man))
            z.writestr("arrays.npz", arrays)
        with pytest.raises(FormatError, match=match):
            cnncomp.load(bad)


def test_failed_save_keeps_the_old_file(tmp_path, lenet_models, monkeypatch):
    _, model, _ = lenet_models
    path = str(tmp_path / "m.cnnc")
    model.save(path)
    before = open(path, "rb").read()
    import runtime.serialization as ser

    real = ser.zipfile.ZipFile.writestr

    def boom(self, name, data, *a, **k):  # fail half-way through writing the new file
        if name == "arrays.npz":
            raise OSError("disk full")
        return real(self, name, data, *a, **k)
    monkeypatch.setattr(ser.zipfile.ZipFile, "writestr", boom)
    with pytest.raises(OSError):
        model.save(path)
    assert open(path, "rb").read() == before
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []


def test_memory_report_by_hand():
    # x (2,16) -> linear (2,8) -> relu (in place) -> linear (2,4); buffers align to 64 bytes
    net = fe.Sequential(fe.Linear(8), fe.ReLU(), fe.Linear(4), input_shape=(16,))
    m = cnncomp.compile(net, layout="NCHW", fuse=False)  # unfused: the ReLU runs in place
    r = m.memory_report(batch=2)
    assert r["naive_bytes"] == 128 + 64 + 64 + 64      # one buffer per tensor
    assert r["lower_bound_bytes"] == 128 + 64           # x and the first linear's output
    assert r["planned_bytes"] == 192                    # the last output reuses x's bytes
    assert r["weights_bytes"] == 4 * (16 * 8 + 8 + 8 * 4 + 4)
