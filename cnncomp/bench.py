"""Fused vs unfused vs each pass alone, timed interleaved in one process.

Machines are noisy: variants run round-robin (one call of each per round) so drift
hits them alike, and we report medians and ratios rather than single timings.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .api import compile
from .compiled import CompiledModel
from .ir import PARAM, Graph
from .passes import PASSES, default_pipeline

# Runtimes busy-wait after a call (OpenBLAS for up to ~0.1 s unless told otherwise, OpenMP
# and ONNX Runtime pools briefly) on the cores the next contestant needs: interleaved, that
# penalized whoever ran next (the blocked ResNet-18 b32 ran 305 ms after itself, 557 ms
# right after BLAS-heavy variants). Timing loops pause this long before each turn.
SETTLE_S = 0.12
MIN_SAMPLE_S = 0.02  # a timed sample lasts at least this long (short calls are repeated)


@dataclass
class Variant:
    name: str
    model: CompiledModel
    times: list[float]

    @property
    def median(self) -> float:
        return float(np.median(self.times))


def variants_for(net: Any, target: str = "cpu") -> list[tuple[str, dict]]:
    """(label, compile kwargs): unfused, fused (auto layout), each fusion pass alone on top
    of unfused, and fused with each layout forced."""
    fusion = [n for n in default_pipeline() if PASSES[n].fusion]
    out = [("unfused", dict(fuse=False)), ("fused", dict(fuse=True))]
    if len(fusion) > 1:
        for p in fusion:
            others = [q for q in fusion if q != p]
            out.append((f"only {p}", dict(fuse=True, disable=others)))
    out += [("fused, layout=NCHW", dict(fuse=True, layout="NCHW")),
            ("fused, layout=NHWC", dict(fuse=True, layout="NHWC")),
            ("fused, layout=NCHWc", dict(fuse=True, layout="NCHWc"))]
    if target == "cpu":  # what the Winograd convs buy
        out.append(("fused, no Winograd", dict(fuse=True, disable=["use_winograd"])))
    return out


def bytes_moved(model: CompiledModel, batch: int) -> int:
    """Estimate: every kernel reads its inputs and weights and writes its outputs once."""
    g: Graph = model.graph
    total = 0
    for k in model.kernels:
        for v in k.inputs + k.outputs:
            val = g.values[v]
            shape = val.shape if val.kind == PARAM else val.concrete_shape(batch)
            total += 4 * math.prod(shape)
    return total


def time_interleaved(fns: dict[str, Callable[[], Any]], repeat: int, warmup: int,
                     min_sample: float, desc: str, progress: bool) -> dict[str, list[float]]:
    """Seconds per call of each function, ``repeat`` samples each, timed round-robin.

    The ``warmup`` rounds are not timed: the first calls after compiling run slow
    (first-touch of arena pages, thread pools spinning up: 1.3-1.7x the steady state on
    ResNet-18). They also size each function's sample: a call shorter than ``min_sample``
    is repeated within its turn and averaged (one 2 ms LeNet-5 call right after the pause
    varied 1.5x). Thread pools busy-wait after a call (OpenBLAS for ~0.1 s by default) on
    the cores the next function needs: one timed right after a BLAS-heavy one ran up to
    1.8x slower. So each turn starts with a pause of SETTLE_S (the previous function's
    threads go to sleep) and an untimed call (which wakes this function's own)."""
    from tqdm.auto import tqdm
    number = {}
    for _ in range(warmup):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            number[key] = max(1, math.ceil(min_sample / max(time.perf_counter() - t0, 1e-7)))
    times: dict[str, list[float]] = {key: [] for key in fns}
    for _ in tqdm(range(repeat), desc=desc, disable=not progress, leave=False):
        for key, fn in fns.items():
            time.sleep(SETTLE_S)
            fn()
            k = number.get(key, 1)
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            times[key].append((time.perf_counter() - t0) / k)
    return times


def run_bench(net: Any, batch: int = 8, repeat: int = 10, target: str = "cpu",
              variants: Optional[Sequence[tuple[str, dict]]] = None, seed: int = 0,
              progress: bool = True, warmup: int = 3) -> list[dict]:
    """Compile each variant, check they agree, time them interleaved; one dict per row."""
    from tqdm.auto import tqdm
    variants = list(variants or variants_for(net, target))
    graph = net if isinstance(net, Graph) else net.to_graph()
    shape = graph.values[graph.inputs[0]].concrete_shape(batch)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    built: list[Variant] = []
    for label, kw in tqdm(variants, desc="compiling", disable=not progress, leave=False):
        m = compile(net, target=target, **kw)
        m(x)  # warm up: jit, plan memory for this batch
        built.append(Variant(label, m, []))
    ref = built[0].model(x)
    for v in built[1:]:
        out = v.model(x)
        err = float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))
        if not err < 1e-4:
            raise AssertionError(f"variant {v.name!r} disagrees with {built[0].name!r}: "
                                 f"relative error {err:.2e}")
    times = time_interleaved({v.name: (lambda m=v.model: m(x)) for v in built}, repeat,
                             warmup, MIN_SAMPLE_S, "timing", progress)
    for v in built:
        v.times.extend(times[v.name])
    base = built[0].median
    rows = []
    for v in built:
        rows.append({
            "variant": v.name, "median_ms": 1e3 * v.median, "images_per_s": batch / v.median,
            "speedup": base / v.median, "kernels": len(v.model.kernels),
            "mb_moved": bytes_moved(v.model, batch) / 1e6,
            "gflops": v.model.flops(batch) / v.median / 1e9, "batch": batch})
    return rows


def format_table(rows: list[dict], title: str = "") -> str:
    """A markdown table of ``run_bench`` rows."""
    head = ("variant", "median ms", "images/s", "speedup vs unfused", "kernels",
            "MB moved (est.)", "GFLOP/s")
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        lines.append(f"| {r['variant']} | {r['median_ms']:.2f} | {r['images_per_s']:.1f} | "
                     f"{r['speedup']:.2f}x | {r['kernels']} | {r['mb_moved']:.1f} | "
                     f"{r['gflops']:.2f} |")
    return "\n".join(lines)


def plot_rows(rows: list[dict], path: str, title: str = "") -> None:
    """Bar chart of median time per variant, annotated with the speedup over unfused."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'cnncomp[plot]' "
                         "(or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.5))
    names = [r["variant"] for r in rows][::-1]
    ms = [r["median_ms"] for r in rows][::-1]
    bars = ax.barh(names, ms, color=["#4c72b0" if "fused" != n else "#dd8452" for n in names])
    for b, r in zip(bars, rows[::-1]):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2,
                f" {r['speedup']:.2f}x, {r['kernels']} kernels", va="center", fontsize=9)
    ax.set_xlabel(f"median ms per batch of {rows[0]['batch']} (lower is better)")
    ax.set_title(title or "cnncomp: fused vs unfused")
    ax.set_xlim(0, max(ms) * 1.35)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def profile_kernels(model: CompiledModel, batch: int, repeat: int = 5, seed: int = 0
                    ) -> list[dict]:
    """Per-kernel median time, share of the total and GFLOP/s."""
    g = model.graph
    shape = g.values[g.inputs[0]].concrete_shape(batch)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    model(x)
    executor, _ = model._executor(batch)
    return _profile_rows(executor.program.steps, executor.profile({g.inputs[0]: x}, repeat),
                         getattr(executor, "algorithms", ()))


def profile_train_kernels(trainer: Any, batch: int, repeat: int = 5, seed: int = 0
                          ) -> list[dict]:
    """profile_kernels for a Trainer: each kernel of a whole training step (forward, loss,
    backward, update). The steps update the trainer's weights, as training does."""
    g = trainer.graph
    shape = g.values[trainer.input_name].concrete_shape(batch)
    classes = g.values[trainer.logits_output].shape[1]
    r = np.random.default_rng(seed)
    x = r.standard_normal(shape).astype(np.float32)
    y = r.integers(0, classes, batch)
    trainer.step(x, y)
    executor, _ = trainer._executor(batch)
    times = executor.profile({trainer.input_name: x, trainer.label_name: y}, repeat)
    return _profile_rows(executor.program.steps, times, getattr(executor, "algorithms", ()))


def _profile_rows(steps: Sequence[Any], times: Sequence[float],
                  algorithms: Sequence[str]) -> list[dict]:
    """One row per step; a conv's ops name the algorithm its kernel chose, e.g.
    "conv2d+batch_norm+relu (winograd)" (CPU; ``algorithms`` is empty on CUDA)."""
    total = sum(times)
    algorithms = list(algorithms) or [""] * len(steps)
    return [{"kernel": s.name, "ops": "+".join(s.ops) + (f" ({a})" if a else ""),
             "ms": 1e3 * t, "share": t / total if total else 0.0,
             "gflops": s.flops / t / 1e9 if t else 0.0}
            for s, t, a in zip(steps, times, algorithms)]


def format_profile(prof: list[dict], title: str, top: Optional[int] = None) -> str:
    """A markdown table of ``profile_kernels`` rows, slowest first."""
    rows = sorted(prof, key=lambda p: -p["ms"])
    lines = [f"### {title}", "", "| kernel | ops | ms | share | GFLOP/s |", "|---|---|---|---|---|"]
    for p in rows[:top]:
        lines.append(f"| {p['kernel']} | {p['ops']} | {p['ms']:.3f} | {100 * p['share']:.1f}% "
                     f"| {p['gflops']:.2f} |")
    if top is not None and len(rows) > top:
        rest = rows[top:]
        lines.append(f"| ({len(rest)} more) | | {sum(p['ms'] for p in rest):.3f} | "
                     f"{100 * sum(p['share'] for p in rest):.1f}% | |")
    return "\n".join(lines)


def run_train_bench(net: Any, batch: int = 32, repeat: int = 5, target: str = "cpu",
                    peers: Optional[dict] = None, seed: int = 0, progress: bool = True,
                    warmup: int = 2, lr: float = 0.01) -> list[dict]:
    """Time one training step (forward, loss, backward, SGD-momentum update), unfused vs
    fused, plus ``peers`` (label -> ``step(x, y)`` callable), interleaved; one row each."""
    from .optim import SGD
    graph = net if isinstance(net, Graph) else net.to_graph()
    shape = graph.values[graph.inputs[0]].concrete_shape(batch)
    classes = graph.values[graph.outputs[0]].shape[1]
    r = np.random.default_rng(seed)
    x = r.standard_normal(shape).astype(np.float32)
    y = r.integers(0, classes, batch)
    entries = []
    for label, fuse in (("unfused", False), ("fused", True)):
        t = compile(net, target=target, training=True, fuse=fuse,
                    optimizer=SGD(lr, momentum=0.9))
        ex, plan = t._executor(batch)
        entries.append((label, t.step, len(ex.program.steps), plan.planned_bytes))
    for label, fn in (peers or {}).items():
        entries.append((label, fn, 0, 0))
    # one call per sample (min_sample 0), as this bench has always timed training steps
    times = time_interleaved({label: (lambda fn=fn: fn(x, y)) for label, fn, _, _ in entries},
                             repeat, warmup, 0.0, "timing training steps", progress)
    base = float(np.median(times["unfused"]))
    rows = []
    for label, _, kernels, mem in entries:
        med = float(np.median(times[label]))
        rows.append({"variant": label, "median_ms": 1e3 * med, "images_per_s": batch / med,
                     "speedup": base / med, "kernels": kernels, "arena_mb": mem / 1e6,
                     "batch": batch})
    return rows


def format_train_table(rows: list[dict], title: str = "") -> str:
    head = ("variant", "median ms / step", "images/s", "speedup vs unfused", "kernels",
            "activation+gradient arena MB")
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        k = str(r["kernels"]) if r["kernels"] else "-"
        mb = f"{r['arena_mb']:.1f}" if r["arena_mb"] else "-"
        lines.append(f"| {r['variant']} | {r['median_ms']:.1f} | {r['images_per_s']:.1f} | "
                     f"{r['speedup']:.2f}x | {k} | {mb} |")
    return "\n".join(lines)


def plot_history(hist: dict, path: str, title: str = "cnncomp training",
                 target: Optional[float] = None) -> None:
    """Loss and accuracy per epoch (train and, if present, validation) side by side."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("plotting needs matplotlib: pip install 'cnncomp[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(hist["epoch"], hist["loss"], label="train loss")
    if "val_loss" in hist:
        a.plot(hist["epoch"], hist["val_loss"], label="test loss")
    a.set_xlabel("epoch")
    a.set_ylabel("cross-entropy")
    a.set_yscale("log")
    a.legend()
    b.plot(hist["epoch"], np.array(hist["accuracy"]) * 100, label="train")
    if "val_accuracy" in hist:
        b.plot(hist["epoch"], np.array(hist["val_accuracy"]) * 100, label="test")
    if target is not None:
        b.axhline(100 * target, color="gray", linestyle=":", label=f"{100 * target:g}%")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy (%)")
    low = min(min(hist["accuracy"]), min(hist.get("val_accuracy", [1.0])))
    b.set_ylim(max(0, 100 * low - 2), 100)
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
