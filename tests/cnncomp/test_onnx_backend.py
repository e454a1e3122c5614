"""The official ONNX backend test suite (shipped inside the onnx package) against
``cnncomp.onnx_backend``: node cases of the CNN operators, PyTorch-exported layers and the
model-zoo architectures of onnx/backend/test/data/light (local files, nothing is
downloaded). The selection and the reasons for the known failures live in
onnx_backend_cases.py; benchmarks/onnx_backend.py writes the per-operator pass counts.
"""
from __future__ import annotations

import pytest

pytest.importorskip("onnx")

from tests.cnncomp.onnx_backend_cases import backend_test_cases  # noqa: E402


@pytest.fixture(autouse=True)
def _onnx_home(tmp_path_factory, monkeypatch):
    """The model-zoo cases write their generated inputs under $ONNX_HOME: keep it out of
    the user's home directory."""
    monkeypatch.setenv("ONNX_HOME", str(tmp_path_factory.getbasetemp() / "onnx_home"))


@pytest.fixture(autouse=True)
def _same_layouts_everywhere(monkeypatch):
    """The analytic layout model, not timings: the plan (and so the summation order) is
    the same on every machine. It matters for the light SqueezeNet, whose 1000 logits are
    ~7e9 and equal in exact arithmetic: its expected softmax (uniform 0.001) survives only a
    summation order that is the same for every channel. The blocked conv has one; the GEMM
    of the NCHW and NHWC plans rounds channels differently (outputs 0 or 0.00103)."""
    monkeypatch.setenv("CNNCOMP_LAYOUT_COST", "model")


globals().update(backend_test_cases(__name__))
