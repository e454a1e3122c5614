"""Smoke test of benchmarks/suite.py: one tiny row through its functions (no timing asserted)."""
from __future__ import annotations

import math
import os
import sys

import numpy as np
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


def _pass(fused, ort, torch=None, discarded=0):
    ms = {"fused": fused, "unfused": 2 * fused, "torch": torch or 2 * fused, "ort": ort}
    return {"net": "n", "batch": 1, "mode": "inference", "ms": ms,
            "vs_torch": fused / ms["torch"], "vs_ort": fused / ort, "gflops": 1.0 / fused,
            "flops": 1e6, "pct_ceiling": 1.0, "rel_err": 1e-7, "load1": 1.0,
            "other_cpu": 0.01, "rounds": 10, "discarded": discarded,
            "by_pass": [(fused / ms["torch"], fused / ort)],
            "every_fused_s": [fused / 1e3] * 9 + [10 * fused / 1e3], "fused_p90": fused}


def test_passes_combine_into_medians_of_the_passes_and_keep_each_ratio():
    # the passes ran in different phases: the ratio is the median of the per-pass ratios
    # (1.2, 1.0, 0.9 -> 1.0), not the ratio of the median times (2.0 / 2.2)
    row = suite.combine([_pass(2.4, 2.0), _pass(1.0, 1.0, discarded=3), _pass(2.0, 2.2222)])
    assert row["ms"]["fused"] == 2.0 and row["ms"]["ort"] == 2.0
    assert row["vs_ort"] == pytest.approx(1.0)
    assert [round(b[1], 2) for b in row["by_pass"]] == [1.2, 1.0, 0.9]
    assert row["gflops"] == pytest.approx(1e6 / 2e-3 / 1e9)
    assert row["rounds"] == 30 and row["discarded"] == 3
    assert "| 1.20, 1.00, 0.90 |" in suite.row_line(row)
    # the tail over every round of every pass: 3 of 30 rounds at 10x
    assert row["fused_p90"] == pytest.approx(np.percentile(
        [2.4] * 9 + [24] + [1.0] * 9 + [10] + [2.0] * 9 + [20], 90))
    assert suite.combine([_pass(1.0, 2.0)])["vs_ort"] == 0.5  # one pass: as it was
