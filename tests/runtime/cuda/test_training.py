"""Training on target="cuda" (simulator): every CUDA training kernel against the CPU
kernel of the same (op, mode) on tiny shapes, and whole training steps of a LeNet-5 and a
residual block with target="cuda" against the same steps with target="cpu" (parameters,
running statistics and optimizer state, relative error < 1e-4)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import rel_err, rng
from tests.runtime.cuda.util import require_cuda_or_skip, to_device

require_cuda_or_skip()

TOL = 1e-4


def both(op, ins, out_shapes, attrs, mode="backward", dtypes=None):
    """Run the CPU and the CUDA kernel of ``op`` on copies of ``ins`` (inputs are copied
    back too: update kernels and BN write them in place). Returns (cpu, cuda), each
    (outputs, inputs after the run)."""
    from numba import cuda

    from runtime.registry import get_kernel
    res = []
    for target in ("cpu", "cuda"):
        host = [np.array(a, copy=True) for a in ins]
        outs = [np.full(s, np.nan, np.float32) for s in out_shapes]
        if target == "cpu":
            get_kernel(op, "cpu", "NCHW", mode)(host, outs, dict(attrs))()
            res.append((outs, host))
            continue
        d_ins = [cuda.to_device(a) for a in host]
        d_outs = [cuda.to_device(o) for o in outs]
        get_kernel(op, "cuda", "NCHW", mode)(d_ins, d_outs, dict(attrs))()
        res.append(([o.copy_to_host() for o in d_outs], [a.copy_to_host() for a in d_ins]))
    return res


def check(op, ins, out_shapes, attrs, mode="backward", tol=TOL):
    (c_out, c_in), (g_out, g_in) = both(op, ins, out_shapes, attrs, mode)
    for k, (a, b) in enumerate(zip(c_out, g_out)):
        assert not np.isnan(b).any() or np.isnan(a).any(), f"{op} output {k} has NaN"
        assert rel_err(b, a) < tol, f"{op} output {k}: rel err {rel_err(b, a)}"
    for k, (a, b) in enumerate(zip(c_in, g_in)):
        assert rel_err(b, a) < tol, f"{op} input {k} (written in place): {rel_err(b, a)}"
    return g_out


def f32(*shape, seed=0, lo=None):
    r = rng(seed)
    a = r.standard_normal(shape).astype(np.float32)
    return a if lo is None else (np.abs(a) + lo).astype(np.float32)


# ------------------------------------------------------------------ conv, linear, bias

def conv_fwd(k=3, s=(1, 1), p=(1, 1, 1, 1), d=(1, 1), g=1):
    return {"kernel_size": (k, k), "stride": s, "padding": p, "dilation": d, "groups": g}


def out_size(n, k, s, p0, p1, d):
    return (n + p0 + p1 - d * (k - 1) - 1) // s + 1


@pytest.mark.parametrize("n,c,h,w,o,fwd", [
    (2, 2, 5, 5, 3, conv_fwd()),
    (1, 2, 6, 5, 2, conv_fwd(k=2, s=(2, 1), p=(0, 1, 1, 0), d=(1, 2))),   # stride, dilation
    (2, 4, 4, 4, 4, conv_fwd(g=4, s=(2, 2))),                          # depthwise, stride
])
def test_conv2d_grads(n, c, h, w, o, fwd):
    k, (sh, sw), (pt, pl, pb, pr), (dh, dw), g = (fwd["kernel_size"][0], fwd["stride"],
                                                  fwd["padding"], fwd["dilation"],
                                                  fwd["groups"])
    oh, ow = out_size(h, k, sh, pt, pb, dh), out_size(w, k, sw, pl, pr, dw)
    x, wt, gy = f32(n, c, h, w, seed=1), f32(o, c // g, k, k, seed=2), f32(n, o, oh, ow, seed=3)
    attrs = {"fwd": fwd, "shape": (c, h, w)}
    check("conv2d_grad_input", [gy, wt], [(n, c, h, w)], attrs)
    check("conv2d_grad_weight", [x, gy], [wt.shape], attrs)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 7)])
def test_bias_grad(shape):
    check("bias_grad", [f32(*shape, seed=4)], [(shape[1],)], {})


def test_linear_grads():
    x, w, gy = f32(3, 5, seed=5), f32(4, 5, seed=6), f32(3, 4, seed=7)
    check("linear_grad_input", [gy, w], [(3, 5)], {"shape": (5,)})
    check("linear_grad_weight", [x, gy], [(4, 5)], {"shape": (4, 5)})


# ------------------------------------------------------------------ elementwise

@pytest.mark.parametrize("act", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_activation_grad(act):
    gy, s = f32(2, 3, 2, 2, seed=8), f32(2, 3, 2, 2, seed=9)
    if act in ("sigmoid", "tanh"):
        s = np.tanh(s).astype(np.float32)
    check("activation_grad", [gy, s], [gy.shape], {"activation": act, "alpha": 0.1})


def test_dropout_train_matches_the_cpu_mask_bit_for_bit_and_its_grad():
    x = f32(2, 3, 4, seed=10)
    hyper = np.array([0.1, 7.0], np.float64)
    attrs = {"p": 0.4, "seed": 1234}
    (c_out, _), (g_out, _) = both("dropout_train", [x, hyper], [x.shape, x.shape], attrs,
                                  mode="forward")
    np.testing.assert_array_equal(g_out[1], c_out[1])  # the mask
    np.testing.assert_array_equal(g_out[0], c_out[0])
    assert 0 < (g_out[1] == 0).sum() < x.size
    check("dropout_grad", [f32(2, 3, 4, seed=11), c_out[1]], [x.shape], {})


def test_reshape_and_split():
    x = f32(2, 5, 2, 3, seed=12)
    check("reshape", [x], [(2, 30)], {"shape": (30,)})
    check("split", [x], [(2, 2, 2, 3), (2, 3, 2, 3)], {"axis": 1})


# ------------------------------------------------------------------ normalization, loss

@pytest.mark.parametrize("shape,act", [((2, 3, 3, 2), "relu"), ((4, 3), "none")])
def test_batch_norm_train_and_grad(shape, act):
    c = shape[1]
    x = f32(*shape, seed=13)
    gamma, beta = f32(c, seed=14), f32(c, seed=15)
    rmean, rvar = f32(c, seed=16), f32(c, seed=17, lo=0.5)
    attrs = {"eps": 1e-5, "momentum": 0.1, "activation": act, "alpha": 0.0}
    y, mean, invstd = check("batch_norm_train", [x, gamma, beta, rmean, rvar],
                            [shape, (c,), (c,)], attrs, mode="forward")
    gy = f32(*shape, seed=18)
    ins = [gy, x, gamma, mean, invstd] + ([y] if act != "none" else [])
    check("batch_norm_grad", ins, [shape, (c,), (c,)], attrs)


def test_local_response_norm_and_softmax_grads():
    x, gy = f32(2, 5, 2, 2, seed=19), f32(2, 5, 2, 2, seed=20)
    fwd = {"size": 3, "alpha": 0.1, "beta": 0.75, "k": 2.0}
    check("local_response_norm_grad", [gy, x], [x.shape], {"fwd": fwd})
    e = np.exp(x - x.max(1, keepdims=True))
    y = (e / e.sum(1, keepdims=True)).astype(np.float32)
    check("softmax_grad", [gy, y], [x.shape], {"axis": 1})


def test_softmax_cross_entropy_and_grad():
    z = f32(3, 4, seed=21)
    labels = np.array([2, 0, 3], np.int64)
    loss, prob = check("softmax_cross_entropy", [z, labels], [(1,), (3, 4)], {},
                       mode="forward")
    check("softmax_cross_entropy_grad", [prob, labels], [(3, 4)], {})


# ------------------------------------------------------------------ pooling

def pool_fwd(k=2, s=2, p=(0, 0, 0, 0), d=(1, 1), **kw):
    return {"kernel_size": (k, k), "stride": (s, s), "padding": p, "dilation": d,
            "ceil_mode": False, **kw}


@pytest.mark.parametrize("fwd,oshape", [
    (pool_fwd(), (2, 2)),
    (pool_fwd(k=3, s=1, p=(1, 1, 1, 1)), (4, 5)),           # overlapping windows, padding
    (pool_fwd(k=2, s=1, d=(2, 2)), (2, 3)),                  # dilation
])
def test_max_pool2d_grad(fwd, oshape):
    x = f32(2, 2, 4, 5, seed=22)
    x[0, 0, 1, 1] = x[0, 0, 1, 2]  # a tie: the first maximum gets the gradient
    gy = f32(2, 2, *oshape, seed=23)
    check("max_pool2d_grad", [gy, x], [x.shape], {"fwd": fwd, "shape": (2, 4, 5)})


def test_max_pool2d_grad_nan_goes_to_the_last_nan():
    """As PyTorch (and the CPU kernel): every NaN replaces the running maximum."""
    x = f32(1, 1, 4, 4, seed=24)
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = np.nan
    gy = f32(1, 1, 2, 2, seed=25)
    (c_out, _), (g_out, _) = both("max_pool2d_grad", [gy, x], [x.shape],
                                  {"fwd": pool_fwd(), "shape": (1, 4, 4)}, "backward")
    np.testing.assert_array_equal(g_out[0], c_out[0])
    assert g_out[0][0, 0, 1, 1] == gy[0, 0, 0, 0] and g_out[0][0, 0, 0, 0] == 0


@pytest.mark.parametrize("cip", [True, False])
def test_avg_pool2d_grad(cip):
    fwd = pool_fwd(k=3, s=2, p=(1, 1, 1, 0), count_include_pad=cip)
    gy = f32(2, 2, 3, 2, seed=24)
    check("avg_pool2d_grad", [gy], [(2, 2, 5, 4)], {"fwd": fwd, "shape": (2, 5, 4)})


def test_lp_and_global_avg_pool_grads():
    x = f32(1, 2, 4, 4, seed=25, lo=0.1)
    fwd = pool_fwd(norm_type=2.0)
    y = np.sqrt((x.reshape(1, 2, 2, 2, 2, 2) ** 2).sum((3, 5))).astype(np.float32)
    check("lp_pool2d_grad", [f32(1, 2, 2, 2, seed=26), x, y], [x.shape], {"fwd": fwd})
    check("global_avg_pool2d_grad", [f32(2, 3, seed=27)], [(2, 3, 2, 3)], {"shape": (3, 2, 3)})


# ------------------------------------------------------------------ optimizers

@pytest.mark.parametrize("op,attrs,n_state", [
    ("sgd_update", dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False), 0),
    ("sgd_update", dict(momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=False), 1),
    ("sgd_update", dict(momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=True), 1),
    ("adam_update", dict(beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.01), 2),
    ("adagrad_update", dict(eps=1e-10, weight_decay=0.0, lr_decay=0.1), 1),
])
@pytest.mark.parametrize("step", [1.0, 3.0])
def test_optimizer_updates(op, attrs, n_state, step):
    p, g = f32(3, 4, seed=28), f32(3, 4, seed=29)
    state = [f32(3, 4, seed=30 + k, lo=0.1) for k in range(n_state)]
    hyper = np.array([0.05, step], np.float64)
    check(op, [p, g, *state, hyper], [], attrs, mode="update")


# ------------------------------------------------------------------ whole training steps

def lenet():
    import frontend as fe
    return fe.Sequential(
        fe.Conv2d(6, 5, padding=2, name="c1"), fe.ReLU(), fe.MaxPool2d(2),
        fe.Conv2d(16, 5, name="c2"), fe.ReLU(), fe.MaxPool2d(2),
        fe.Flatten(), fe.Linear(12), fe.ReLU(), fe.Dropout(0.3), fe.Linear(10),
        input_shape=(1, 12, 12), name="lenet5")


def residual_block():
    import frontend as fe
    x = fe.Input((4, 5, 5), name="x")
    h = fe.ReLU()(fe.BatchNorm2d()(fe.Conv2d(4, 3, padding=1, bias=False)(x)))
    h = fe.BatchNorm2d()(fe.Conv2d(4, 3, padding=1, bias=False)(h))
    h = fe.ReLU()(fe.Add()(x, h))
    h = fe.GlobalAvgPool2d()(h)
    return fe.Model(x, fe.Linear(3)(h), name="basic_block")


def train(net, target, optimizer, shape, classes, steps):
    import cnncomp
    trainer = cnncomp.compile(net, target=target, training=True, optimizer=optimizer)
    r = rng(40)
    losses = []
    for _ in range(steps):
        x = r.standard_normal(shape).astype(np.float32)
        losses.append(trainer.step(x, r.integers(0, classes, shape[0])))
    return trainer, losses


@pytest.mark.parametrize("make,opt,shape,classes", [
    (lenet, "sgd", (2, 1, 12, 12), 10),
    (residual_block, "adam", (2, 4, 5, 5), 3),
])
def test_training_steps_on_cuda_equal_cpu(make, opt, shape, classes):
    import cnncomp
    optim = (lambda: cnncomp.optim.SGD(lr=0.05, momentum=0.9, nesterov=True)) \
        if opt == "sgd" else (lambda: cnncomp.optim.Adam(lr=0.01, weight_decay=0.01))
    net = make()
    cpu, cpu_losses = train(net, "cpu", optim(), shape, classes, 2)
    gpu, gpu_losses = train(net, "cuda", optim(), shape, classes, 2)
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-5)
    want, have = cpu.parameters(), gpu.parameters()
    assert set(have) == set(want) == set(net.parameters())
    for name in want:
        assert rel_err(have[name], want[name]) < TOL, name
    # optimizer state (momentum / Adam moments) came back from the device too
    want_s, have_s = cpu.optimizer_state(), gpu.optimizer_state()
    for name in want_s:
        assert rel_err(have_s[name], want_s[name]) < TOL, name
    assert not any(np.array_equal(have[k], v) for k, v in net.parameters().items()
                   if k.endswith("weight"))  # trained


def test_cuda_trainer_load_parameters_and_checkpoint_reach_the_device(tmp_path):
    import cnncomp
    net = residual_block()
    gpu, _ = train(net, "cuda", cnncomp.optim.SGD(lr=0.1), (2, 4, 5, 5), 3, 1)
    gpu.load_parameters(net.parameters())  # back to the start, on the device too
    path = str(tmp_path / "ckpt.cnnc")
    gpu.save(path)
    cpu, cpu_losses = train(net, "cpu", cnncomp.optim.SGD(lr=0.1), (2, 4, 5, 5), 3, 1)
    resumed = cnncomp.load_trainer(path)
    assert resumed.options.target == "cuda"
    for trainer in (gpu, resumed):
        r = rng(40)
        x = r.standard_normal((2, 4, 5, 5)).astype(np.float32)
        assert abs(trainer.step(x, r.integers(0, 3, 2)) - cpu_losses[0]) < 1e-5
        for name, v in cpu.parameters().items():
            assert rel_err(trainer.parameters()[name], v) < TOL, name
