"""Fused vs unfused vs each pass vs forced layouts, and the memory plan, for the DESIGN.md nets.

    .venv/bin/python benchmarks/fusion_layout_memory.py [--repeat 15] [--quick]

Variants of one network run round-robin in one process (see cnncomp.bench), so drift hits
them alike; tables report medians and ratios. Writes benchmarks/results/fusion_layout.md,
benchmarks/results/memory.md and a plot per network.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import cnncomp
from cnncomp.bench import format_table, plot_rows, run_bench
from frontend import zoo
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "results")
NETS = [("resnet18", 32), ("lenet5", 64), ("vgg11", 32), ("mobilenet", 32), ("inception", 32)]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numba

    import runtime.cpu  # noqa: F401  (it picks the threading layer)
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"numba {numba.__version__} ({numba.config.THREADING_LAYER} threading layer), "
            f"numpy {np.__version__}")


def memory_rows(batch: int) -> list[str]:
    rows = ["| network | batch | naive MiB | planned MiB | lower bound MiB | planned / lower "
            "bound | planned / naive | weights MiB |", "|---|---|---|---|---|---|---|---|"]
    for name, _ in NETS:
        net = zoo.get(name)
        m = cnncomp.compile(net, verify=True)
        r = m.memory_report(batch=batch)
        mib = lambda b: f"{b / 2**20:.2f}"  # noqa: E731
        rows.append(f"| {name} | {batch} | {mib(r['naive_bytes'])} | {mib(r['planned_bytes'])} "
                    f"| {mib(r['lower_bound_bytes'])} | {r['planned_over_lower_bound']:.3f} | "
                    f"{r['planned_over_naive']:.3f} | {mib(r['weights_bytes'])} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="ResNet-18 only, fewer repeats")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    nets = NETS[:1] if a.quick else NETS
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE).stdout.strip()
    head = ["# Fusion, layout and memory: cnncomp vs its own unfused baseline", "",
            f"Machine: {machine()}  ", f"Commit: {commit}, {time.strftime('%Y-%m-%d')}  ",
            f"Command: `.venv/bin/python benchmarks/fusion_layout_memory.py --repeat "
            f"{a.repeat}`  ",
            "Inference, float32, random weights with randomized BN statistics; each table's "
            "rows ran interleaved in one process, median of the rounds.", ""]
    body = []
    for name, batch in nets:
        net = zoo.randomize_bn_stats(zoo.get(name), seed=0)
        rows = run_bench(net, batch=batch, repeat=a.repeat)
        title = f"{name}, batch {batch}"
        body += [format_table(rows, title), ""]
        plot_rows(rows, os.path.join(OUT, f"fusion_{name}_b{batch}.png"), title)
        print(format_table(rows, title), flush=True)
    with open(os.path.join(OUT, "fusion_layout.md"), "w") as f:
        f.write("\n".join(head + body) + "\n")
    mem = ["# Memory plan (activations; weights separate)", "", f"Machine: {machine()}  ",
           f"Commit: {commit}  ", "Command: `.venv/bin/python benchmarks/fusion_layout_memory.py`",
           "", "naive: one buffer per tensor; lower bound: the largest total of tensors live "
           "at one kernel; planned: the arena after in-place reuse and greedy-by-size offsets "
           "(physical bytes, NCHW16c channel padding included).", ""] + memory_rows(32)
    with open(os.path.join(OUT, "memory.md"), "w") as f:
        f.write("\n".join(mem) + "\n")
    print("\n".join(mem[-(len(NETS) + 2):]))


if __name__ == "__main__":
    main()
