"""The cnncomp demo: compile LeNet-5 and a CIFAR ResNet-18, run them, compare fused vs unfused.

    make demo                       # or: python examples/demo.py [--batch 16] [--quick]

What it shows: the kernels that run after fusion (each with the source ops it computes),
the memory plan, and a side-by-side timing of the unfused baseline, the fully fused
executable and each fusion pass alone, all measured interleaved in one process.
"""
from __future__ import annotations

import argparse
import time

import cnncomp
from cnncomp.bench import format_table, run_bench
from frontend import zoo
import numpy as np


def digits_batch(n: int) -> tuple[np.ndarray, str]:
    """Real handwritten digits (scikit-learn's bundled set) padded to 28x28, if available."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        x = np.random.default_rng(0).random((n, 1, 28, 28), dtype=np.float32)
        return x, "random images (install scikit-learn for real digits)"
    d = load_digits()
    imgs = d.images[:n].astype(np.float32) / 16.0            # (n, 8, 8) in [0, 1]
    big = np.kron(imgs, np.ones((3, 3), np.float32))           # 24x24
    x = np.zeros((n, 1, 28, 28), np.float32)
    x[:, 0, 2:26, 2:26] = big
    return x, f"{n} real handwritten digits from scikit-learn (upsampled to 28x28)"


def show(title: str, net, x: np.ndarray, batch: int, repeat: int) -> None:
    print(f"\n{'=' * 78}\n{title}\n{'=' * 78}")
    t0 = time.perf_counter()
    model = cnncomp.compile(net)
    y = model(x)
    print(f"compiled and ran in {time.perf_counter() - t0:.1f} s -> output {y.shape}")
    print(model.summary())
    rows = run_bench(net, batch=batch, repeat=repeat)
    print()
    print(format_table(rows, f"{net.name}: fused vs unfused, batch {batch}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="smaller batch and fewer repeats")
    a = ap.parse_args()
    batch, repeat = (4, 3) if a.quick else (a.batch, a.repeat)

    x, what = digits_batch(64)
    lenet = zoo.lenet5()
    print(f"LeNet-5 input: {what}")
    show("LeNet-5 (1x28x28)", lenet, x, 64, max(repeat, 10))
    preds = cnncomp.compile(lenet)(x).argmax(1)
    print(f"\n(untrained weights) predicted classes of the first 16 digits: {preds[:16]}")

    resnet = zoo.resnet18_cifar()
    zoo.randomize_bn_stats(resnet, seed=0)
    xr = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    show("CIFAR ResNet-18 (3x32x32)", resnet, xr, batch, repeat)
    print("\nRows ran interleaved in one process (medians); this VM-class machine is noisy, "
          "so compare\nratios within a table. Committed measurements: "
          "benchmarks/results/fusion_layout.md")


if __name__ == "__main__":
    main()
