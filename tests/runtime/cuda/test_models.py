"""Whole models compiled with target="cuda" (simulator, tiny inputs) match target="cpu";
the device executor: one arena, parameters uploaded once, launch records, errors."""
from __future__ import annotations

import numpy as np
import pytest

import cnncomp
import frontend as fe
from frontend import zoo
from tests.helpers import rel_err, rng
from tests.runtime.cuda.util import require_cuda_or_skip

require_cuda_or_skip()


def lenet_small():
    """LeNet-5's structure on 1x12x12 inputs (conv 12x12 -> pool 6x6 -> conv 2x2 -> 1x1)."""
    return fe.Sequential(
        fe.Conv2d(6, 5, padding=2, name="c1"), fe.ReLU(), fe.MaxPool2d(2),
        fe.Conv2d(16, 5, name="c2"), fe.ReLU(), fe.MaxPool2d(2),
        fe.Flatten(), fe.Linear(120), fe.ReLU(), fe.Linear(84), fe.ReLU(), fe.Linear(10),
        input_shape=(1, 12, 12), name="lenet_small")


def residual_block():
    """conv-bn-relu-conv-bn + identity add + relu, BN statistics randomized."""
    return zoo.randomize_bn_stats(zoo.basic_block(channels=4, hw=5, seed=1), seed=2)


@pytest.fixture(scope="module")
def lenet_models():
    net = lenet_small()
    # the CPU side pinned to NCHW (auto may add layout transforms): same kernels as CUDA's
    return cnncomp.compile(net, target="cuda"), cnncomp.compile(net, target="cpu",
                                                                layout="NCHW")


@pytest.fixture(scope="module")
def lenet_run(lenet_models):
    """One batch-2 run (each simulated LeNet call costs seconds): input, output."""
    x = rng(0).standard_normal((2, 1, 12, 12)).astype(np.float32)
    return x, lenet_models[0](x)


def test_lenet_cuda_matches_cpu(lenet_models, lenet_run):
    gpu, cpu = lenet_models
    x, y = lenet_run
    assert y.shape == (2, 10) and y.dtype == np.float32
    assert rel_err(y, cpu(x)) < 1e-4
    # the same kernels and fusion as on the CPU, every kernel NCHW
    assert [k.ops for k in gpu.kernels] == [k.ops for k in cpu.kernels]
    assert {k.target for k in gpu.kernels} == {"cuda"}
    assert {k.layout for k in gpu.kernels} == {"NCHW"}


def test_lenet_summary_shows_launch_configurations(lenet_models):
    gpu, _ = lenet_models
    text = gpu.summary(batch=2)
    assert "target=cuda" in text and "launch (grid, block)" in text
    assert "conv_gemm_64x16<<<5, 16x16>>>" in text      # c1: 2*12*12 pixels / 64, 6 channels
    assert "max_pool<<<2, 256>>>" in text
    assert "linear_gemm_" in text


@pytest.mark.parametrize("fuse", [True, False])
def test_residual_block_cuda_matches_cpu(fuse):
    net = residual_block()
    gpu = cnncomp.compile(net, target="cuda", fuse=fuse)
    cpu = cnncomp.compile(net, target="cpu", fuse=fuse, layout="NCHW")
    x = rng(1).standard_normal((2, 4, 5, 5)).astype(np.float32)
    assert rel_err(gpu(x), cpu(x)) < 1e-4
    ops = [k.ops for k in gpu.kernels]
    if fuse:  # BN folded into the convs, the add and relu in the second conv's epilogue
        assert ops == [("conv2d", "batch_norm", "relu"), ("conv2d", "batch_norm", "add", "relu")]
    else:
        assert [o for (o,) in ops] == ["conv2d", "batch_norm", "relu", "conv2d", "batch_norm",
                                       "add", "relu"]


def test_inception_block_with_concat_matches_cpu():
    net = zoo.randomize_bn_stats(zoo.inception_block(channels=3, hw=3, seed=3), seed=4)
    x = rng(2).standard_normal((1, 3, 3, 3)).astype(np.float32)
    gpu = cnncomp.compile(net, target="cuda")
    cpu = cnncomp.compile(net, target="cpu", layout="NCHW")
    assert rel_err(gpu(x), cpu(x)) < 1e-4
    assert "concat" in [k.op for k in gpu.kernels]


def test_executor_one_arena_parameters_uploaded_once(lenet_models):
    from runtime.cuda import CudaExecutor
    gpu, _ = lenet_models
    e1, _ = gpu._executor(1)
    e3, plan3 = gpu._executor(3)
    assert isinstance(e1, CudaExecutor) and isinstance(e3, CudaExecutor)
    # one uint8 device allocation per program, sized by the memory plan
    assert e3.arena.dtype == np.uint8 and e3.arena.size == plan3.planned_bytes
    # every parameter is one device array shared by the programs of every batch size
    assert e1.constants.keys() == e3.constants.keys() != set()
    assert all(e1.constants[k] is e3.constants[k] for k in e1.constants)
    assert len(e3.launches) == len(e3.program.steps)


def test_batch_sizes_and_repeated_calls(lenet_models, lenet_run):
    gpu, _ = lenet_models
    x, y = lenet_run
    assert rel_err(gpu(x[:1]), y[:1]) < 1e-6   # a new batch size: a new program
    assert np.array_equal(gpu(x), y)           # back to batch 2: its arena is reused


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the simulator's numpy sees inf*0
def test_check_finite_names_the_kernel_on_cuda():
    net = fe.Sequential(fe.Linear(3, name="fc"), fe.Softmax(name="sm"), input_shape=(4,),
                        name="tiny")
    p = net.parameters()
    p["fc.weight"][:] = np.inf
    net.load_parameters(p)
    model = cnncomp.compile(net, target="cuda", check_finite=True)
    with pytest.raises(cnncomp.errors.NonFiniteError, match="fc"):
        model(np.ones((1, 4), np.float32))


def test_layout_is_nchw_only_on_cuda():
    net = residual_block()
    assert cnncomp.compile(net, target="cuda", layout="auto").options.layout == "NCHW"
    for forced in ("NCHWc", "NHWC"):
        with pytest.raises(cnncomp.errors.CnnCompError, match="NCHW kernels only"):
            cnncomp.compile(net, target="cuda", layout=forced)


def test_save_and_load_a_cuda_model(tmp_path, lenet_models, lenet_run):
    gpu, _ = lenet_models
    x, y = lenet_run
    path = str(tmp_path / "m.cnnc")
    gpu.save(path)
    loaded = cnncomp.load(path)
    assert loaded.target == "cuda" and rel_err(loaded(x[:1]), y[:1]) < 1e-6


def test_unavailable_cuda_is_a_clear_error(monkeypatch):
    import runtime.cuda_status as status
    monkeypatch.setattr(status, "unavailable_reason", lambda: "no CUDA GPU was found (test)")
    with pytest.raises(cnncomp.errors.CnnCompError, match="no CUDA GPU was found"):
        cnncomp.compile(lenet_small(), target="cuda")


def test_unavailable_reason_explains_the_simulator(monkeypatch):
    """Without a GPU and with the simulator off, the reason says how to enable it."""
    import runtime.cuda_status as status
    from numba import cuda
    monkeypatch.setattr(status, "simulator_enabled", lambda: False)
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    reason = status.unavailable_reason()
    assert "no CUDA GPU" in reason and "NUMBA_ENABLE_CUDASIM=1" in reason
