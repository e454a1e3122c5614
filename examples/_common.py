"""Shared by the example scripts: compile fused and unfused, run, time, print."""
from __future__ import annotations

import argparse
import time

import cnncomp
import numpy as np


def parse(description: str, batch: int = 8) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--repeat", type=int, default=5)
    return ap.parse_args()


def median_ms(model, x: np.ndarray, repeat: int) -> float:
    model(x)  # warm up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def run_example(net, x: np.ndarray, repeat: int = 5) -> np.ndarray:
    """Print the network, compile it fused and unfused, run both on x, print what ran."""
    print(net.summary())
    t0 = time.perf_counter()
    fused = cnncomp.compile(net)
    plain = cnncomp.compile(net, fuse=False)
    print(f"\ncompiled fused + unfused in {time.perf_counter() - t0:.2f} s")
    y, y0 = fused(x), plain(x)
    print(f"\nkernels that ran (fused), batch {x.shape[0]}:")
    for k in fused.kernels:
        print(f"  {k.name:22s} {'+'.join(k.ops)}")
    ms_f, ms_u = median_ms(fused, x, repeat), median_ms(plain, x, repeat)
    print(f"\nunfused: {len(plain.kernels)} kernels, {ms_u:.2f} ms/batch")
    print(f"fused:   {len(fused.kernels)} kernels, {ms_f:.2f} ms/batch "
          f"({ms_u / ms_f:.2f}x faster)")
    print(f"max |fused - unfused| = {np.abs(y - y0).max():.2e}")
    mem = fused.memory_report()
    print(f"activation memory: planned {mem['planned_bytes'] / 2**20:.2f} MiB, naive "
          f"{mem['naive_bytes'] / 2**20:.2f} MiB, weights {mem['weights_bytes'] / 2**20:.2f} MiB")
    return y


def cifar_batch(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)).astype(np.float32)
