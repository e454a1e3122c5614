"""Per-layer times of one network: cnncomp's kernels beside ONNX Runtime's nodes.

    .venv/bin/python benchmarks/layers_vs_ort.py mobilenet --batch 1 [--layout auto] [--top 25]

cnncomp's times come from its per-kernel profile (`cnncomp bench --profile`), ONNX
Runtime's from its own profiler (the same weights, exported to ONNX; 2 intra-op threads).
A cnncomp kernel is matched to the ORT nodes named after its layer (ORT fuses conv + relu
into nodes such as `l1_0_1_relu_nchwc`). The two run one after the other, not interleaved:
use this to see where the time goes, and `benchmarks/suite.py` for ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cnncomp  # noqa: E402
from cnncomp.bench import profile_kernels  # noqa: E402
from frontend import zoo  # noqa: E402
import numpy as np  # noqa: E402


def ort_node_ms(path: str, x: np.ndarray, repeat: int) -> dict[str, float]:
    """Median milliseconds per ONNX Runtime node over ``repeat`` runs (after 3 warm-ups)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(os.path.dirname(path), "ort")
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    for _ in range(3 + repeat):
        session.run(None, feed)
    with open(session.end_profiling()) as f:
        events = json.load(f)
    times: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times.setdefault(e["name"][:-len("_kernel_time")], []).append(e["dur"] / 1e3)
    return {k: float(np.median(v[-repeat:])) for k, v in times.items()}


def layer_of(kernel: str) -> str:
    return kernel[:-len("_conv")] if kernel.endswith("_conv") else kernel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("net", choices=sorted(zoo.BUILTIN))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--layout", default="auto")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--top", type=int, default=25, help="rows, largest gap first")
    a = ap.parse_args()
    net = zoo.randomize_bn_stats(zoo.get(a.net), seed=0)
    x = np.random.default_rng(0).standard_normal((a.batch, *net.input_shape)).astype(np.float32)
    path = os.path.join(tempfile.mkdtemp(), f"{a.net}.onnx")
    cnncomp.export_onnx(net, path)
    ort_ms = ort_node_ms(path, x, a.repeat)
    ours = profile_kernels(cnncomp.compile(net, layout=a.layout), a.batch, repeat=a.repeat)
    rows = []
    for r in ours:
        layer = layer_of(r["kernel"])
        nodes = [k for k in ort_ms if k == r["kernel"] or k == layer or k.startswith(layer + "_")]
        theirs = sum(ort_ms[k] for k in nodes) if nodes else None
        rows.append((r["ms"] - (theirs or 0.0), r["kernel"], r["ms"], theirs, nodes))
    print(f"{a.net}, batch {a.batch}, layout {a.layout}: cnncomp kernels sum "
          f"{sum(r['ms'] for r in ours):.3f} ms, ONNX Runtime nodes sum "
          f"{sum(ort_ms.values()):.3f} ms\n")
    print("| kernel | cnncomp ms | ORT ms | ORT nodes |\n|---|---|---|---|")
    for _, kernel, ms, theirs, nodes in sorted(rows, reverse=True)[:a.top]:
        print(f"| {kernel} | {ms:.3f} | {'-' if theirs is None else f'{theirs:.3f}'} | "
              f"{', '.join(nodes) or '-'} |")


if __name__ == "__main__":
    main()
