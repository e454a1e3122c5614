"""Training-step time: cnncomp unfused vs fused vs PyTorch eager, interleaved in one process.

    .venv/bin/python benchmarks/training.py [--repeat 5]

One step = forward in training mode (batch statistics), softmax cross-entropy, backward,
SGD with momentum 0.9. PyTorch runs the same graph with the same weights as an nn.Module
built from torch.nn.functional (tests/torch_reference.TorchNet, float32, 2 threads).
Before timing, one step of each is checked to give the same loss. Writes
benchmarks/results/training.md.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cnncomp  # noqa: E402
from cnncomp.bench import format_train_table, run_train_bench  # noqa: E402
from frontend import zoo  # noqa: E402
from tests.torch_reference import TorchNet  # noqa: E402
from fusion_layout_memory import machine  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

CASES = [("lenet5", 64), ("resnet18", 32)]
LR = 0.01


def torch_step(net):
    twin = TorchNet(net.to_graph(), dtype=torch.float32)
    opt = torch.optim.SGD(twin.trainable.parameters(), lr=LR, momentum=0.9)

    def step(x: np.ndarray, y: np.ndarray) -> float:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        return loss.item()
    return step


def check_agreement(net, batch: int) -> float:
    g = net.to_graph()
    r = np.random.default_rng(1)
    x = r.standard_normal(g.values[g.inputs[0]].concrete_shape(batch)).astype(np.float32)
    y = r.integers(0, g.values[g.outputs[0]].shape[1], batch)
    ours = cnncomp.compile(net, training=True, optimizer=cnncomp.optim.SGD(LR, momentum=0.9))
    return abs(ours.step(x, y) - torch_step(net)(x, y))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(2)
    lines = ["# Training step: cnncomp unfused vs fused vs PyTorch eager", "",
             f"Machine: {machine()}, torch {torch.__version__} ({torch.get_num_threads()} "
             "threads)  ", f"Command: `.venv/bin/python benchmarks/training.py --repeat "
             f"{a.repeat}`  ", "One step: training-mode forward, softmax cross-entropy, "
             "backward, SGD momentum 0.9. Medians of interleaved rounds; speedup is over "
             "cnncomp unfused (a PyTorch row above 1x is faster than cnncomp unfused).", ""]
    for name, batch in CASES:
        net = zoo.get(name)
        diff = check_agreement(net, batch)
        assert diff < 1e-3, f"{name}: first-step losses differ by {diff}"
        rows = run_train_bench(net, batch, a.repeat, peers={"PyTorch eager": torch_step(net)})
        table = format_train_table(rows, f"{name}, batch {batch} (first-step loss agrees "
                                         f"with PyTorch to {diff:.1e})")
        print(table, flush=True)
        lines += [table, ""]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "training.md")
    with open(out, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
