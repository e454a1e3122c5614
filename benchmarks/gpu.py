"""cnncomp target="cuda" vs PyTorch (cuDNN) on the GPU, inference, interleaved in one process.

    .venv/bin/python benchmarks/gpu.py [--nets lenet5 resnet18 ...] [--batches 1 32]
                                       [--repeat 20] [--tf32] [--out results/gpu.md]

Needs a real CUDA GPU and numba-cuda (`pip install -e '.[cuda,bench]'`); PyTorch joins when
it was built with CUDA. It exits with a message when there is no GPU (or when the CUDA
simulator is on: simulated timings mean nothing).

For each network and batch: the outputs are checked first (cnncomp vs PyTorch, or vs
cnncomp's CPU target without PyTorch), then medians over ``--repeat`` interleaved rounds of
  * device ms: the kernels alone, inputs already on the device, synchronized after;
  * host ms:   a whole call from a host array to a host array (copies included).
PyTorch runs the same graph node by node through torch.nn.functional on CUDA tensors
(cuDNN, ``cudnn.benchmark`` on). TF32 is off on both sides unless ``--tf32`` (cnncomp's
kernels compute in float32 FMA). Ratio = cnncomp / PyTorch (lower is better).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Any, Callable, Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from runtime.cuda_status import (device_description, simulator_enabled,  # noqa: E402
                                 unavailable_reason)

NETS = ["lenet5", "resnet18", "vgg11", "mobilenet", "inception"]


def _torch_cuda() -> tuple[Optional[Any], str]:
    """(torch, '') when PyTorch with CUDA is usable, else (None, why not)."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed"
    if not torch.cuda.is_available():
        return None, f"PyTorch {torch.__version__} has no CUDA device"
    return torch, ""


class TorchCuda:
    """The graph as PyTorch eager code on the GPU: F.* per node, float32, no_grad."""

    def __init__(self, torch: Any, g: Any):
        from tests.torch_reference import _node
        self.torch, self.g, self._node = torch, g, _node
        self.consts = {k: torch.from_numpy(np.array(v)).cuda() for k, v in g.constants.items()}

    def device(self, x: Any) -> Any:
        g = self.g
        with self.torch.no_grad():
            env = {g.inputs[0]: x}
            for n in g.nodes:
                args = [env[i] for i in n.inputs if i not in self.consts]
                params = [self.consts[i] for i in n.inputs if i in self.consts]
                env[n.outputs[0]] = self._node(n, args, params)
            return env[g.outputs[0]]

    def host(self, x: np.ndarray) -> np.ndarray:
        return self.device(self.torch.from_numpy(x).cuda()).cpu().numpy()


def _median_ms(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def bench(name: str, batch: int, repeat: int, warmup: int, torch: Optional[Any],
          tolerance: float = 1e-4) -> dict:
    import cnncomp
    from frontend import zoo
    from numba import cuda

    net = zoo.randomize_bn_stats(zoo.get(name), seed=0)
    model = cnncomp.compile(net, target="cuda")
    x = np.random.default_rng(0).standard_normal((batch, *net.input_shape)).astype(np.float32)
    executor = model._executor(batch)[0]
    y = model(x)  # also compiles every kernel for this batch (numba JIT)
    if torch is not None:
        peer = TorchCuda(torch, net.graph)
        ref, ref_name = peer.host(x), "PyTorch"
    else:
        peer = None
        ref, ref_name = cnncomp.compile(net, target="cpu")(x), "cnncomp CPU"
    err = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
    if err > tolerance:
        raise SystemExit(f"{name} batch {batch}: cnncomp cuda and {ref_name} disagree "
                         f"(rel err {err:.2e}); not timing a wrong answer")

    def ours_device() -> None:
        executor.launch_all()
        cuda.synchronize()

    fns: dict[str, Callable[[], Any]] = {"ours_device": ours_device,
                                         "ours_host": lambda: model(x)}
    if peer is not None:
        xd = torch.from_numpy(x).cuda()

        def torch_device() -> None:
            peer.device(xd)
            torch.cuda.synchronize()
        fns["torch_device"] = torch_device
        fns["torch_host"] = lambda: peer.host(x)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    med = _median_ms(fns, repeat)
    flops = model.flops(batch)
    row = {"net": name, "batch": batch, "rel_err": err, "ref": ref_name,
           "gflops": flops / (med["ours_device"] / 1e3) / 1e9, **med}
    if peer is not None:
        row["ratio"] = med["ours_device"] / med["torch_device"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", nargs="+", default=NETS)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tf32", action="store_true", help="let PyTorch use TF32 tensor cores")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "gpu.md"),
                    help="markdown table to write ('' for none)")
    a = ap.parse_args()

    if simulator_enabled():
        sys.exit("benchmarks/gpu.py times a real GPU, but the CUDA simulator is on "
                 "(NUMBA_ENABLE_CUDASIM): unset it and run on a machine with an NVIDIA GPU")
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"benchmarks/gpu.py needs a CUDA GPU: {reason}")
    torch, why = _torch_cuda()
    if torch is not None:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = a.tf32
        torch.backends.cuda.matmul.allow_tf32 = a.tf32

    import numba
    device = device_description()
    head = ["# cnncomp target='cuda' vs PyTorch (cuDNN), inference", "",
            f"GPU: {device}; Python {platform.python_version()}, numba {numba.__version__}"
            + (f", torch {torch.__version__} (cuDNN {torch.backends.cudnn.version()}, "
               f"TF32 {'on' if a.tf32 else 'off'})" if torch is not None else f"; {why}")
            + "  ",
            f"Command: `python benchmarks/gpu.py --repeat {a.repeat}"
            f"{' --tf32' if a.tf32 else ''}`  ",
            "device ms: kernels only (inputs on the device); host ms: host array in, host "
            "array out. Medians of interleaved rounds; ratio = cnncomp / PyTorch device time "
            "(lower is better).", ""]
    cols = ["network", "batch", "cnncomp device ms", "cnncomp host ms"]
    if torch is not None:
        cols += ["PyTorch device ms", "PyTorch host ms", "ratio"]
    cols += ["cnncomp GFLOP/s", "rel err"]
    lines = head + ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    print("\n".join(lines), flush=True)
    for batch in a.batches:
        for name in a.nets:
            r = bench(name, batch, a.repeat, a.warmup, torch, 1e-2 if a.tf32 else 1e-4)
            cells = [r["net"], str(r["batch"]), f"{r['ours_device']:.3f}",
                     f"{r['ours_host']:.3f}"]
            if torch is not None:
                cells += [f"{r['torch_device']:.3f}", f"{r['torch_host']:.3f}",
                          f"{r['ratio']:.2f}x"]
            cells += [f"{r['gflops']:.1f}", f"{r['rel_err']:.1e} (vs {r['ref']})"]
            row = "| " + " | ".join(cells) + " |"
            print(row, flush=True)
            lines.append(row)
    if a.out:
        path = a.out if os.path.isabs(a.out) else os.path.join(ROOT, a.out)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"wrote {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
