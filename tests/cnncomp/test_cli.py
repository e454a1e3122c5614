"""The cnncomp command as the README uses it: show, bench (--plot, --profile), run."""
from __future__ import annotations

import os

import pytest

from cnncomp.cli import main


def test_show_writes_per_pass_dumps(tmp_path, capsys):
    out = tmp_path / "dump"
    assert main(["show", "lenet5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "== before passes ==" in text and "conv2d[" in text and "computes conv2d+relu" in text
    assert {"00_input.txt", "00_input.dot"} <= set(os.listdir(out))


def test_bench_table_plot_and_profile(tmp_path, capsys):
    png = tmp_path / "b.png"
    assert main(["bench", "lenet5", "--batch", "2", "--repeat", "2", "--plot", str(png),
                 "--profile"]) == 0
    text = capsys.readouterr().out
    assert "| unfused |" in text and "| fused |" in text and "speedup vs unfused" in text
    assert "per-kernel profile (fused)" in text
    assert png.stat().st_size > 1000


def test_bench_train_times_a_training_step(capsys):
    assert main(["bench", "lenet5", "--batch", "4", "--repeat", "1", "--train",
                 "--profile"]) == 0
    text = capsys.readouterr().out
    assert "training step" in text and "| unfused |" in text and "| fused |" in text
    assert "per-kernel profile of a training step (fused)" in text
    assert "| c1/conv2d_grad_weight | conv2d_grad_weight |" in text


def test_train_digits_writes_model_plot_and_checkpoint(tmp_path, capsys):
    png, model, ckpt = tmp_path / "c.png", tmp_path / "m.cnnc", tmp_path / "t.cnnc"
    assert main(["train", "digits_cnn", "--epochs", "1", "--plot", str(png), "--save",
                 str(model), "--checkpoint", str(ckpt)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert png.stat().st_size > 1000
    import cnncomp
    assert cnncomp.load(str(model)).kernels and cnncomp.load_trainer(str(ckpt)).steps == 44


def test_train_refuses_mismatched_data():
    with pytest.raises(SystemExit, match=r"takes inputs of shape \(1, 28, 28\)"):
        main(["train", "lenet5", "--epochs", "1"])


def test_run_a_user_file(tmp_path, capsys):
    f = tmp_path / "my_net.py"
    f.write_text("import frontend as fe\n"
                 "net = fe.Sequential(fe.Conv2d(4, 3), fe.ReLU(), fe.GlobalAvgPool2d(),\n"
                 "                    fe.Linear(3), input_shape=(2, 6, 6), name='mine')\n")
    assert main(["run", str(f), "--batch", "2"]) == 0
    assert "compiled model 'mine'" in capsys.readouterr().out


def test_unknown_network_is_a_clear_error():
    with pytest.raises(SystemExit, match="built-in networks"):
        main(["run", "nosuchnet"])
