"""The DSL: shapes at definition time, names, parameters, and definition-time errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import frontend as fe
from cnncomp.errors import ParameterError, ShapeError
from tests.helpers import lenet


def test_sequential_shapes_and_names():
    net = lenet()
    g = net.graph
    assert [n.name for n in g.nodes] == [
        "c1", "relu_1", "max_pool2d_1", "c2", "relu_2", "max_pool2d_2", "flatten_1",
        "linear_1", "relu_3", "linear_2", "relu_4", "linear_3"]
    assert g.values["c2"].shape == (None, 16, 10, 10)
    assert g.values["flatten_1"].shape == (None, 400)
    assert net.output_shape == (10,)
    assert net.input_shape == (1, 28, 28)


def test_parameter_names_and_shapes_match_pytorch():
    net = lenet()
    p = net.parameters()
    assert p["c1.weight"].shape == (6, 1, 5, 5) and p["c1.bias"].shape == (6,)
    assert p["linear_1.weight"].shape == (120, 400)
    assert all(a.dtype == np.float32 for a in p.values())
    tconv = torch.nn.Conv2d(1, 6, 5)
    assert tuple(tconv.weight.shape) == p["c1.weight"].shape


@pytest.mark.parametrize("layer,in_shape,fan_in", [
    (lambda: fe.Conv2d(8, 3, groups=2), (4, 9, 9), 2 * 9),
    (lambda: fe.Linear(7), (30,), 30),
])
def test_default_init_is_pytorch_uniform(layer, in_shape, fan_in):
    x = fe.Input(in_shape)
    net = fe.Model(x, layer()(x), seed=3)
    bound = 1 / np.sqrt(fan_in)
    for name, a in net.parameters().items():
        assert np.abs(a).max() <= bound + 1e-7, name
        assert np.abs(a).max() > 0.5 * bound, name  # actually spread over the range


def test_seed_is_deterministic_and_changes_weights():
    a = lenet().parameters()
    b = lenet().parameters()
    c = fe.Sequential(fe.Conv2d(6, 5, padding=2, name="c1"), input_shape=(1, 28, 28),
                      seed=1).parameters()
    np.testing.assert_array_equal(a["c1.weight"], b["c1.weight"])
    assert not np.array_equal(a["c1.weight"], c["c1.weight"])


def test_batchnorm_params_default():
    x = fe.Input((3, 4, 4))
    net = fe.Model(x, fe.BatchNorm2d(name="bn")(x))
    p = net.parameters()
    assert sorted(p) == ["bn.bias", "bn.running_mean", "bn.running_var", "bn.weight"]
    np.testing.assert_array_equal(p["bn.running_var"], np.ones(3, np.float32))


def test_parameters_are_copies_and_load_checks():
    net = lenet()
    p = net.parameters()
    p["c1.weight"][:] = 0
    assert np.abs(net.parameters()["c1.weight"]).sum() > 0  # not changed underneath
    net.load_parameters(p)
    assert np.abs(net.parameters()["c1.weight"]).sum() == 0
    bad = dict(p)
    del bad["c1.bias"]
    bad["zzz.weight"] = np.zeros(3, np.float32)
    bad["c2.weight"] = np.zeros((1, 2), np.float32)
    with pytest.raises(ParameterError) as e:
        net.load_parameters(bad)
    msg = str(e.value)
    assert "c1.bias" in msg and "zzz.weight" in msg and "c2.weight" in msg and "(16, 6, 5, 5)" in msg


def test_functional_residual_block():
    x = fe.Input((8, 6, 6), name="x")
    h = fe.ReLU()(fe.BatchNorm2d()(fe.Conv2d(8, 3, padding=1, bias=False)(x)))
    h = fe.BatchNorm2d()(fe.Conv2d(8, 3, padding=1, bias=False)(h))
    out = fe.ReLU()(fe.Add()(x, h))
    block = fe.Model(x, out, name="basic_block")
    ops = [n.op.value for n in block.graph.nodes]
    assert ops == ["conv2d", "batch_norm", "relu", "conv2d", "batch_norm", "add", "relu"]
    assert block.graph.node("add_1").inputs == ("x", "batch_norm_2")
    assert "conv2d_1.bias" not in block.parameters()


def test_concat_shapes():
    x = fe.Input((4, 5, 5))
    a = fe.Conv2d(3, 1)(x)
    b = fe.Conv2d(5, 3, padding=1)(x)
    c = fe.MaxPool2d(3, stride=1, padding=1)(x)
    y = fe.Concat()(a, b, c)
    assert y.shape == (None, 12, 5, 5)
    assert fe.Concat(axis=-1)(fe.Conv2d(2, 1)(x), fe.Conv2d(2, 1)(x)).shape == (None, 2, 5, 10)


@pytest.mark.parametrize("k,s,p,d,h", [(3, 1, "same", 1, 7), (4, 1, "same", 1, 8),
                                       (3, 1, "same", 2, 9), (5, 2, 1, 1, 11), (2, 3, 0, 1, 7),
                                       (3, 1, "valid", 1, 5), ((1, 3), (2, 1), (0, 1), 1, 6)])
def test_conv_output_shape_matches_pytorch(k, s, p, d, h):
    x = fe.Input((2, h, h + 1))
    y = fe.Conv2d(3, k, stride=s, padding=p, dilation=d)(x)
    t = torch.nn.Conv2d(2, 3, k, stride=s, padding=p, dilation=d)(torch.zeros(1, 2, h, h + 1))
    assert y.shape[1:] == tuple(t.shape[1:])


@pytest.mark.parametrize("cls,kw", [
    (fe.MaxPool2d, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (fe.MaxPool2d, dict(kernel_size=2, ceil_mode=True)),
    (fe.AvgPool2d, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (fe.AvgPool2d, dict(kernel_size=(2, 3), stride=(3, 1))),
    (fe.LPPool2d, dict(norm_type=2, kernel_size=3, stride=2, ceil_mode=True)),
])
@pytest.mark.parametrize("hw", [(5, 5), (7, 6), (8, 9)])
def test_pool_output_shape_matches_pytorch(cls, kw, hw):
    y = cls(**kw)(fe.Input((2, *hw)))
    tmap = {fe.MaxPool2d: torch.nn.MaxPool2d, fe.AvgPool2d: torch.nn.AvgPool2d,
            fe.LPPool2d: torch.nn.LPPool2d}
    t = tmap[cls](**kw)(torch.ones(1, 2, *hw))
    assert y.shape[1:] == tuple(t.shape[1:])


# --------------------------------------------------------------------------- errors

def test_kernel_larger_than_input_names_layer_and_shapes():
    with pytest.raises(ShapeError) as e:
        fe.Sequential(fe.Conv2d(4, 3, name="c1"), fe.MaxPool2d(2), fe.Conv2d(4, 5, name="big"),
                      input_shape=(1, 6, 6))
    msg = str(e.value)
    assert "'big'" in msg and "(N, 4, 2, 2)" in msg and "larger than the padded input" in msg


def test_linear_after_4d_suggests_flatten():
    with pytest.raises(ShapeError) as e:
        fe.Sequential(fe.Conv2d(4, 3), fe.Linear(10, name="fc"), input_shape=(1, 8, 8))
    assert "'fc'" in str(e.value) and "Flatten" in str(e.value) and "GlobalAvgPool2d" in str(e.value)


def test_add_shape_mismatch():
    x = fe.Input((4, 8, 8))
    a = fe.Conv2d(4, 3, padding=1)(x)
    b = fe.Conv2d(8, 3, padding=1)(x)
    with pytest.raises(ShapeError) as e:
        fe.Add(name="res")(a, b)
    assert "'res'" in str(e.value) and "(N, 4, 8, 8)" in str(e.value) and "(N, 8, 8, 8)" in str(e.value)


def test_concat_mismatch_and_batch_axis():
    x = fe.Input((4, 8, 8))
    with pytest.raises(ShapeError, match="equal in every other axis"):
        fe.Concat()(fe.Conv2d(2, 1)(x), fe.Conv2d(2, 3)(x))
    with pytest.raises(ShapeError, match="batch axis"):
        fe.Concat(axis=0)(fe.Conv2d(2, 1)(x), fe.Conv2d(2, 1)(x))


def test_groups_must_divide_channels():
    with pytest.raises(ShapeError, match="groups=3"):
        fe.Conv2d(6, 3, groups=3)(fe.Input((4, 8, 8)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="same"):
        fe.Conv2d(4, 3, stride=2, padding="same")
    with pytest.raises(TypeError, match="kernel_size"):
        fe.Conv2d(4, (1, 2, 3))
    with pytest.raises(ShapeError, match="half the kernel"):
        fe.MaxPool2d(2, padding=2)(fe.Input((1, 8, 8)))
    with pytest.raises(ShapeError):
        fe.Input((1, 2))
    with pytest.raises(ShapeError, match="BatchNorm2d"):
        fe.BatchNorm2d()(fe.Input((5,)))


def test_layer_reuse_and_non_tensor_inputs():
    relu = fe.ReLU(name="r")
    x = fe.Input((1, 4, 4))
    relu(x)
    with pytest.raises(ValueError, match="already applied"):
        relu(x)
    with pytest.raises(TypeError, match="cnncomp.compile"):
        fe.ReLU()(np.zeros((1, 1, 4, 4)))


def test_duplicate_names_and_disconnected_inputs():
    x = fe.Input((1, 4, 4), name="x")
    with pytest.raises(ValueError, match="used twice"):
        fe.Model(x, fe.ReLU(name="a")(fe.ReLU(name="a")(x)))
    y = fe.Input((1, 4, 4), name="y")
    with pytest.raises(ValueError, match="not among the model's inputs"):
        fe.Model(x, fe.Add()(x, y))
    with pytest.raises(ValueError, match="not used"):
        fe.Model([x, y], fe.ReLU()(x))


def test_auto_names_are_per_network():
    a = fe.Sequential(fe.ReLU(), input_shape=(3,))
    b = fe.Sequential(fe.ReLU(), fe.ReLU(name="relu_2"), fe.ReLU(), input_shape=(3,))
    assert a.layer_names() == ["relu_1"]
    assert b.layer_names() == ["relu_1", "relu_2", "relu_3"]


def test_save_load_network_roundtrip(tmp_path):
    net = lenet()
    path = tmp_path / "lenet.cnnc"
    net.save(str(path))
    back = fe.load(str(path))
    assert back.layer_names() == net.layer_names()
    for k, v in net.parameters().items():
        np.testing.assert_array_equal(back.parameters()[k], v)
    assert str(back.graph) == str(net.graph)
