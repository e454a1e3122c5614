"""Smoke test of benchmarks/suite.py: one tiny row through its functions (no timing asserted)."""
from __future__ import annotations

import math
import os
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "benchmarks")
sys.path.append(BENCH)  # after the packages: benchmarks/ has distributed.py, gpu.py ...

import suite  # noqa: E402


def test_one_lenet5_row_has_every_column(tmp_path):
    suite.set_threads()
    ceiling = suite.gemm_ceiling(n=256, tries=1)
    assert ceiling > 0
    row = suite.inference_row(suite.Inference("lenet5", str(tmp_path)), batch=1, repeat=1,
                              ceiling=ceiling, warmup=1)
    assert set(suite.COLUMNS) <= set(row)
    assert set(row["ms"]) == set(suite.CONTESTANTS)
    assert all(math.isfinite(v) and v > 0 for v in row["ms"].values())
    for key in ("vs_torch", "vs_ort", "gflops", "pct_ceiling"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["rel_err"] < suite.TOL and row["rounds"] == 1
    md = suite.markdown([row], (ceiling, ceiling), [], "suite.py --test", 1, 1.5, 1.0)
    assert "| lenet5 | 1 | inference |" in md and "rounds discarded" in md
    suite.plot([row], str(tmp_path / "suite.png"))
    assert (tmp_path / "suite.png").stat().st_size > 1000
