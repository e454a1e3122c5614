"""Training graphs end to end: whole networks take the same optimizer steps as PyTorch.

Each network is trained for a few steps by cnncomp (float32) and by a float64 torch twin
(tests/torch_reference.TorchNet) from the same weights on the same batches; losses,
every parameter and every running statistic must agree (relative error < 1e-4).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import cnncomp
import frontend as fe
from cnncomp.errors import GraphError, InputError
from tests.helpers import rel_err, rng
from tests.torch_reference import TorchNet, torch_forward

TOL = 1e-4


def small_lenet():
    return fe.Sequential(
        fe.Conv2d(4, 3, padding=1, name="c1"), fe.ReLU(), fe.MaxPool2d(2),
        fe.Conv2d(6, 3, name="c2"), fe.Tanh(), fe.AvgPool2d(2, ceil_mode=True),
        fe.Flatten(), fe.Linear(16), fe.LeakyReLU(0.1), fe.Linear(5),
        input_shape=(1, 12, 12), name="small_lenet")


def residual_net(c1=8, c2=12, bias=False):
    """A ResNet stage; with 16+ channels (``wide_residual_net``) training runs the blocked
    conv kernels (forward, dL/dx, dL/dW), which pack the weights again every step. Only b4
    takes a bias: before a BatchNorm a bias's gradient is rounding noise, which Adam
    scales up to full steps."""
    x = fe.Input((3, 8, 8), name="x")
    h = fe.ReLU()(fe.BatchNorm2d(name="bn0")(fe.Conv2d(c1, 3, padding=1, bias=False,
                                                       name="stem")(x)))
    r = fe.ReLU()(fe.BatchNorm2d(name="bn1")(fe.Conv2d(c1, 3, padding=1, bias=False,
                                                       name="b1")(h)))
    r = fe.BatchNorm2d(name="bn2")(fe.Conv2d(c1, 3, padding=1, bias=False, name="b2")(r))
    h = fe.ReLU()(fe.Add()(h, r))
    d = fe.BatchNorm2d(name="bnd")(fe.Conv2d(c2, 1, stride=2, bias=False, name="down")(h))
    h2 = fe.ReLU()(fe.BatchNorm2d(name="bn3")(fe.Conv2d(c2, 3, stride=2, padding=1, bias=False,
                                                         name="b3")(h)))
    h = fe.ReLU()(fe.Add()(d, h2))
    h = fe.ReLU()(fe.Conv2d(c2, 3, padding=1, bias=bias, name="b4")(h))
    out = fe.Linear(5, name="fc")(fe.GlobalAvgPool2d()(h))
    return fe.Model(x, out, name="residual_net")


def wide_residual_net():
    return residual_net(16, 32, bias=True)


def branchy_net():
    """Concat of branches, grouped/depthwise/dilated convs, LRN, LP pooling, Softmax,
    Sigmoid, and a value read by several layers (gradients summed)."""
    x = fe.Input((4, 9, 9), name="x")
    a = fe.ReLU()(fe.Conv2d(4, 1, name="a")(x))
    b = fe.Sigmoid()(fe.Conv2d(6, 3, padding=(1, 2), dilation=(1, 2), groups=2, name="b")(x))
    c = fe.Conv2d(4, 1, name="c")(fe.MaxPool2d(3, stride=1, padding=1)(x))
    h = fe.Concat()(a, b, c)
    h = fe.LocalResponseNorm(3, alpha=0.1, beta=0.75, k=2.0)(h)
    h = fe.Conv2d(14, 3, stride=2, groups=14, name="dw")(h)
    h = fe.Softmax()(h)
    h = fe.LPPool2d(2, 2)(h)
    h = fe.Flatten()(h)
    f = fe.Linear(12, name="f1")(h)
    out = fe.Linear(3, name="fc")(fe.Add()(fe.ReLU()(f), fe.Tanh()(f)))
    return fe.Model(x, out, name="branchy_net")


NETS = {"lenet": (small_lenet, (1, 12, 12), 5), "residual": (residual_net, (3, 8, 8), 5),
        "wide_residual": (wide_residual_net, (3, 8, 8), 5),
        "branchy": (branchy_net, (4, 9, 9), 3)}


def torch_optimizer(params, opt):
    if isinstance(opt, cnncomp.optim.SGD):
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum,
                               weight_decay=opt.weight_decay, nesterov=opt.nesterov)
    if isinstance(opt, cnncomp.optim.Adam):
        return torch.optim.Adam(params, lr=opt.lr, betas=opt.betas, eps=opt.eps,
                                weight_decay=opt.weight_decay)
    return torch.optim.Adagrad(params, lr=opt.lr, eps=opt.eps, weight_decay=opt.weight_decay,
                               lr_decay=opt.lr_decay)


def batches(shape, classes, steps, batch, seed=0):
    r = rng(seed)
    return [(r.standard_normal((batch, *shape)).astype(np.float32),
             r.integers(0, classes, batch)) for _ in range(steps)]


def train_both(net, opt, data, fuse=True):
    trainer = cnncomp.compile(net, training=True, optimizer=opt, fuse=fuse)
    twin = TorchNet(net.to_graph())
    topt = torch_optimizer(twin.trainable.parameters(), opt)
    ours, theirs = [], []
    for x, y in data:
        ours.append(trainer.step(x, y))
        topt.zero_grad()
        loss = torch.nn.functional.cross_entropy(twin(torch.tensor(x, dtype=torch.float64)),
                                                 torch.tensor(y))
        loss.backward()
        topt.step()
        theirs.append(loss.item())
    return trainer, twin, np.array(ours), np.array(theirs)


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("opt", [
    cnncomp.optim.SGD(lr=0.1),
    cnncomp.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    cnncomp.optim.Adam(lr=0.01, weight_decay=1e-4),
    cnncomp.optim.Adagrad(lr=0.05, lr_decay=0.01),
], ids=["sgd", "sgd-nesterov-wd", "adam", "adagrad"])
def test_steps_match_torch(name, opt):
    build, shape, classes = NETS[name]
    net = build()
    data = batches(shape, classes, steps=3, batch=4)
    trainer, twin, ours, theirs = train_both(net, opt, data)
    assert rel_err(ours, theirs) < TOL
    mine, ref = trainer.parameters(), twin.state()
    assert set(mine) == set(ref) == set(net.parameters())
    for k in ref:
        assert rel_err(mine[k], ref[k]) < TOL, k


@pytest.mark.parametrize("fuse", [True, False])
def test_unfused_training_graph_matches_too(fuse):
    net = residual_net()
    data = batches((3, 8, 8), 5, steps=2, batch=3, seed=1)
    trainer, twin, ours, theirs = train_both(net, cnncomp.optim.SGD(0.1, momentum=0.9), data,
                                             fuse=fuse)
    assert rel_err(ours, theirs) < TOL
    for k, v in twin.state().items():
        assert rel_err(trainer.parameters()[k], v) < TOL, k
    kinds = {k.op for k in [s.key for s in trainer._executor(3)[0].program.steps]}
    assert "batch_norm_grad" in kinds and "sgd_update" in kinds


def test_fused_training_graph_has_fewer_kernels():
    net = residual_net()
    fused = cnncomp.compile(net, training=True)
    plain = cnncomp.compile(net, training=True, fuse=False)
    nf = len(fused._executor(4)[0].program.steps)
    nu = len(plain._executor(4)[0].program.steps)
    assert nf < nu
    ops = [s.ops for s in fused._executor(4)[0].program.steps]
    assert ("batch_norm", "relu") in ops  # source op names, as inference kernels report
    assert ("activation_grad", "batch_norm_grad") in ops  # relu's backward inside BN's


def test_training_memory_is_planned():
    trainer = cnncomp.compile(residual_net(), training=True)
    plan = trainer._executor(8)[1]
    assert plan.lower_bound_bytes <= plan.planned_bytes < plan.naive_bytes


def test_export_matches_torch_eval_mode():
    net = residual_net()
    data = batches((3, 8, 8), 5, steps=3, batch=4)
    trainer, twin, _, _ = train_both(net, cnncomp.optim.SGD(0.1, momentum=0.9), data)
    model = trainer.export()
    assert any("batch_norm" in k.ops for k in model.kernels)  # BN folded into the convs
    x = data[0][0]
    twin.eval()
    with torch.no_grad():
        ref = twin(torch.tensor(x, dtype=torch.float64)).numpy()
    assert rel_err(model(x), ref) < TOL
    # the exported model is independent of further training
    before = model(x)
    trainer.step(*data[1])
    assert np.array_equal(model(x), before)
    # and agrees with the graph-level torch oracle on the trained weights
    g = net.to_graph().replace(constants=trainer.parameters())
    assert rel_err(trainer.export()(x), torch_forward(g, x)) < TOL


def test_parameters_are_copies_and_loadable():
    net = small_lenet()
    trainer = cnncomp.compile(net, training=True)
    p = trainer.parameters()
    p["c1.weight"][...] = 0
    assert not np.all(trainer.parameters()["c1.weight"] == 0)
    trainer.load_parameters(p)
    assert np.all(trainer.parameters()["c1.weight"] == 0)
    assert not np.all(net.parameters()["c1.weight"] == 0)  # the network is untouched
    with pytest.raises(cnncomp.ParameterError, match="missing"):
        trainer.load_parameters({k: v for k, v in p.items() if k != "c1.bias"})


def dropout_net():
    return fe.Sequential(fe.Conv2d(4, 3, padding=1, name="c1"), fe.BatchNorm2d(name="bn"),
                         fe.ReLU(), fe.Dropout(0.3), fe.Flatten(), fe.Linear(6, name="fc1"),
                         fe.Dropout(0.5), fe.Linear(3, name="fc2"), input_shape=(2, 5, 5),
                         name="dropout_net")


@pytest.mark.parametrize("opt", [cnncomp.optim.Adam(lr=0.01),
                                 cnncomp.optim.SGD(lr=0.05, momentum=0.9,
                                                   schedule=cnncomp.optim.CosineLR(4))])
def test_checkpoint_resume_is_bit_identical(tmp_path, opt):
    data = batches((2, 5, 5), 3, steps=4, batch=5, seed=3)
    a = cnncomp.compile(dropout_net(), training=True, optimizer=opt)
    b = cnncomp.compile(dropout_net(), training=True, optimizer=opt)
    b.load_parameters(a.parameters())
    for i, (x, y) in enumerate(data):
        a.epoch = b.epoch = i / 2
        la = a.step(x, y)
        if i < 2:
            b.step(x, y)
        elif i == 2:
            b.save(str(tmp_path / "ckpt.cnnc"))
            b = cnncomp.load_trainer(str(tmp_path / "ckpt.cnnc"))
            b.epoch = i / 2
            assert b.step(x, y) == la
        else:
            b.epoch = i / 2
            assert b.step(x, y) == la
    for k, v in a.parameters().items():
        assert np.array_equal(v, b.parameters()[k]), k
    for k, v in a.optimizer_state().items():
        assert np.array_equal(v, b.optimizer_state()[k]), k


def test_dropout_masks_depend_on_the_step_only():
    net = dropout_net()
    data = batches((2, 5, 5), 3, steps=1, batch=5, seed=4)
    a = cnncomp.compile(net, training=True, optimizer=cnncomp.optim.SGD(1e-9))
    l1 = a.step(*data[0])
    l2 = a.step(*data[0])
    assert l1 != l2  # a new mask each step (the weights barely move)


def test_fit_reports_history_and_learns():
    r = rng(5)
    centers = r.standard_normal((3, 1, 6, 6)).astype(np.float32) * 2
    y = r.integers(0, 3, 300)
    x = (centers[y] + 0.5 * r.standard_normal((300, 1, 6, 6))).astype(np.float32)
    net = fe.Sequential(fe.Conv2d(4, 3, padding=1), fe.ReLU(), fe.Flatten(), fe.Linear(3),
                        input_shape=(1, 6, 6), name="toy")
    trainer = cnncomp.compile(net, training=True, optimizer=cnncomp.optim.SGD(0.05, momentum=0.9))
    hist = trainer.fit(x[:240], y[:240], epochs=3, batch_size=16,
                       validation_data=(x[240:], y[240:]), progress=False)
    assert hist["epoch"] == [1, 2, 3]
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["val_accuracy"][-1] > 0.9
    m = trainer.evaluate(x[240:], y[240:])
    assert m["accuracy"] == hist["val_accuracy"][-1]


def test_step_rejects_bad_batches():
    trainer = cnncomp.compile(residual_net(), training=True)
    x = np.zeros((4, 3, 8, 8), np.float32)
    with pytest.raises(InputError, match=r"labels must be in \[0, 5\)"):
        trainer.step(x, np.array([0, 1, 2, 5]))
    with pytest.raises(InputError, match="integer class indices"):
        trainer.step(x, np.array([0.5, 1, 2, 3]))
    with pytest.raises(InputError, match=r"expected shape \(4,\)"):
        trainer.step(x, np.array([0, 1, 2]))
    with pytest.raises(InputError, match="expected shape"):
        trainer.step(np.zeros((4, 3, 9, 8), np.float32), np.array([0, 1, 2, 3]))
    with pytest.raises(InputError, match="at least 2"):
        trainer.step(x[:1], np.array([0]))


def test_compile_rejects_untrainable_setups():
    with pytest.raises(ValueError, match="unknown loss"):
        cnncomp.compile(small_lenet(), training=True, loss="hinge")
    with pytest.raises(TypeError, match="optimizer must be"):
        cnncomp.compile(small_lenet(), training=True, optimizer="sgd")
    with pytest.raises(TypeError, match="need training=True"):
        cnncomp.compile(small_lenet(), optimizer=cnncomp.optim.SGD(0.1))
    conv_only = fe.Sequential(fe.Conv2d(2, 3), input_shape=(1, 5, 5), name="conv_only")
    with pytest.raises(GraphError, match=r"logits of shape \(N, classes\)"):
        cnncomp.compile(conv_only, training=True)
    with pytest.raises(ValueError, match="lr must be > 0"):
        cnncomp.optim.SGD(lr=0)
