"""cnncomp vs PyTorch eager (2 threads) on the DESIGN.md networks, interleaved in one process.

    .venv/bin/python benchmarks/peers.py [--repeat 10] [--batches 1 32]

PyTorch runs the same graph with the same weights, node by node through
torch.nn.functional in float32 under no_grad (what an eager nn.Module does). Outputs are
checked to agree before timing. Writes benchmarks/results/peers.md. ONNX Runtime joins
once the ONNX exporter exists (issue 7).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cnncomp  # noqa: E402
from cnncomp.ir import Graph  # noqa: E402
from frontend import zoo  # noqa: E402
from tests.torch_reference import _node  # noqa: E402  (the oracle's per-node torch code)
from fusion_layout_memory import machine  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

NETS = ["lenet5", "resnet18", "vgg11", "mobilenet", "inception", "resnet18_224"]


class TorchEager:
    """The graph as PyTorch eager code: weights as float32 tensors, F.* per node."""

    def __init__(self, g: Graph):
        self.g = g
        self.consts = {k: torch.from_numpy(np.array(v)) for k, v in g.constants.items()}

    @torch.no_grad()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        g = self.g
        env = {g.inputs[0]: torch.from_numpy(x)}
        for n in g.nodes:
            args = [env[i] for i in n.inputs if i not in self.consts]
            params = [self.consts[i] for i in n.inputs if i in self.consts]
            env[n.outputs[0]] = _node(n, args, params)
        return env[g.outputs[0]].numpy()


def bench(name: str, batch: int, repeat: int) -> dict:
    net = zoo.randomize_bn_stats(zoo.get(name), seed=0)
    model = cnncomp.compile(net)
    peer = TorchEager(net.graph)
    x = np.random.default_rng(0).standard_normal((batch, *net.input_shape)).astype(np.float32)
    a, b = model(x), peer(x)
    err = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    assert err < 1e-4, f"{name}: cnncomp and PyTorch disagree (rel err {err:.2e})"
    times = {"cnncomp": [], "torch": []}
    for _ in range(3):
        model(x), peer(x)
    for _ in range(repeat):
        for key, fn in (("cnncomp", model), ("torch", peer)):
            fn(x)  # absorb what the other left running (thread pools spinning down)
            t0 = time.perf_counter()
            fn(x)
            times[key].append(time.perf_counter() - t0)
    med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    return {"net": name, "batch": batch, "cnncomp_ms": med["cnncomp"], "torch_ms": med["torch"],
            "ratio": med["cnncomp"] / med["torch"], "rel_err": err,
            "gflops": model.flops(batch) / (med["cnncomp"] / 1e3) / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    a = ap.parse_args()
    torch.set_num_threads(2)
    lines = ["# cnncomp vs PyTorch eager (inference)", "", f"Machine: {machine()}, torch "
             f"{torch.__version__} ({torch.get_num_threads()} threads)  ",
             f"Command: `.venv/bin/python benchmarks/peers.py --repeat {a.repeat}`  ",
             "Ratio = cnncomp time / PyTorch time (lower is better); medians of interleaved "
             "rounds.", "", "| network | batch | cnncomp ms | PyTorch ms | ratio | cnncomp "
             "GFLOP/s | rel err |", "|---|---|---|---|---|---|---|"]
    for batch in a.batches:
        for name in NETS:
            if name == "resnet18_224" and batch > 8:
                continue  # 2 cores: a batch of 32 at 224x224 takes minutes per variant
            r = bench(name, batch, a.repeat)
            row = (f"| {r['net']} | {r['batch']} | {r['cnncomp_ms']:.2f} | {r['torch_ms']:.2f} | "
                   f"{r['ratio']:.2f}x | {r['gflops']:.1f} | {r['rel_err']:.1e} |")
            print(row, flush=True)
            lines.append(row)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "peers.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
