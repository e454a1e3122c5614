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
