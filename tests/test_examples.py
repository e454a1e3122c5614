"""Smoke test: every example script runs to the end and prints the kernels it ran."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = ["lenet5", "alexnet", "vgg16", "googlenet", "resnet18", "mobilenet"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", f"{name}.py"),
                        "--batch", "2", "--repeat", "1"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "kernels that ran" in r.stdout and "faster" in r.stdout


def test_demo_quick():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "demo.py"), "--quick"],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "speedup vs unfused" in r.stdout and "conv2d+batch_norm+add+relu" in r.stdout


def test_train_digits_short_run(tmp_path):
    """Three epochs: learns (well above chance), writes the plot and the model."""
    plot, model = tmp_path / "curves.png", tmp_path / "digits.cnnc"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_digits.py"),
                        "--epochs", "3", "--no-progress", "--plot", str(plot),
                        "--save", str(model)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    acc = float(r.stdout.split("test accuracy ")[1].split("%")[0])
    assert acc > 80, r.stdout
    assert plot.stat().st_size > 10_000 and model.exists()
