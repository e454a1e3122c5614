"""The performance suite: cnncomp vs PyTorch eager vs ONNX Runtime on the CPU, side by side.

    .venv/bin/python benchmarks/suite.py [--repeat 10] [--passes 3] [--nets ...]
        [--batches 1 32] [--train-nets lenet5 resnet18 | --no-train] [--no-skip-224-b32]
        [--quick]

Inference rows (each network x batch): cnncomp fused, cnncomp unfused (fuse=False),
PyTorch eager (benchmarks/peers.TorchEager: the same graph and weights through
torch.nn.functional, 2 threads) and ONNX Runtime (the same weights exported with
cnncomp.export_onnx, CPU provider, 2 intra-op threads, 1 inter-op thread). Training rows
(forward, softmax cross-entropy, backward, SGD momentum 0.9; batch 32, LeNet-5 64):
cnncomp fused and unfused vs PyTorch eager (benchmarks/training.torch_step); ONNX Runtime
has no training step ('-').

Every row first checks that all contestants agree with cnncomp unfused (relative error of
the output, or of the first step's loss, < 1e-4), warms up, then times round-robin: one
round = one timed call of each contestant (calls under --min-time, 20 ms, are repeated to
last that long and averaged), each preceded by an untimed call of the same contestant
(thread pools left spinning by the previous one are absorbed; see cnncomp/bench.py). A
round in which any contestant took more than --noise (1.5) x its running median is
discarded and run again ("noisy round"). The whole set of rows runs --passes (3) times,
minutes apart, because this VM's speed drifts by 10-30% over minutes and one pass cannot
resolve a ratio to +-5%: a row reports the median over passes (times: of the per-pass
medians; ratios: of the per-pass ratios) and lists each pass's ratio. Tables give
medians, the ratios cnncomp fused / PyTorch and cnncomp fused / ORT (below 1 = cnncomp
faster), fused GFLOP/s against a float32 GEMM ceiling measured in the same run, the
1-minute load average before the row and the CPU time that other processes used during
it (from /proc/stat).
Compile time of the CIFAR ResNet-18 is measured in fresh subprocesses, cold (empty
NUMBA_CACHE_DIR) and warm (default kernel cache, primed first).

Writes benchmarks/results/suite.md and suite.png (--quick writes to a temp directory
unless --out is given, so a smoke check never overwrites the committed results).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import cnncomp  # noqa: E402
from cnncomp.bench import SETTLE_S  # noqa: E402
from frontend import zoo  # noqa: E402
from fusion_layout_memory import machine  # noqa: E402
from peers import NETS, TorchEager  # noqa: E402
import numpy as np  # noqa: E402
from training import LR, torch_step  # noqa: E402
from tests.helpers import rel_err  # noqa: E402

THREADS = 2
TOL = 1e-4
TRAIN_NETS = ["lenet5", "resnet18"]
QUICK_NETS = ["lenet5", "mobilenet"]
COMPILE_NET = "resnet18"
CONTESTANTS = ("fused", "unfused", "torch", "ort")
LABELS = {"fused": "cnncomp fused", "unfused": "cnncomp unfused", "torch": "PyTorch eager",
          "ort": "ONNX Runtime"}
# the keys of every row (inference and training alike); None where a value does not apply
COLUMNS = ("net", "batch", "mode", "ms", "vs_torch", "vs_ort", "gflops", "pct_ceiling",
           "rel_err", "load1", "other_cpu", "rounds", "discarded", "flops", "by_pass",
           "fused_p90")


def train_batch(name: str) -> int:
    return 64 if name == "lenet5" else 32


# ----------------------------------------------------------------- machine measurements
def set_threads(n: int = THREADS) -> None:
    import torch
    torch.set_num_threads(n)


def gemm_ceiling(n: int = 2048, tries: int = 5) -> float:
    """Best GFLOP/s of a float32 n x n numpy matmul (the BLAS numpy links, all threads)."""
    r = np.random.default_rng(0)
    a = r.standard_normal((n, n), dtype=np.float32)
    b = r.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)  # warm up the BLAS thread pool
    best = math.inf
    for _ in range(tries):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def _proc_stat_busy() -> Optional[float]:
    """Seconds of CPU time (all cores) the machine spent busy since boot; None without /proc."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:]]
    # user nice system idle iowait irq softirq steal (guest is already inside user)
    busy = v[0] + v[1] + v[2] + sum(v[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


class CpuMonitor:
    """Average number of cores that processes other than this one kept busy (steal time
    included) between start and stop; and the 1-minute load average at start."""

    def __init__(self) -> None:
        self.load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
        self._busy, self._own, self._t = _proc_stat_busy(), self._own_cpu(), time.monotonic()

    @staticmethod
    def _own_cpu() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def other_cores(self) -> float:
        busy = _proc_stat_busy()
        if busy is None or self._busy is None:
            return math.nan
        wall = time.monotonic() - self._t
        other = (busy - self._busy) - (self._own_cpu() - self._own)
        return max(0.0, other / wall) if wall > 0 else math.nan


# ----------------------------------------------------------------------------- timing
def time_rounds(fns: dict[str, Callable[[], Any]], repeat: int, warmup: int = 3,
                noise: float = 1.5, max_discard: Optional[int] = None,
                min_time: float = 0.02) -> tuple[dict[str, list[float]], int]:
    """Time ``fns`` round-robin until ``repeat`` rounds are kept.

    One round = for each function in turn, a pause of ``SETTLE_S`` (thread pools the
    previous function left spinning go to sleep), one untimed call (it wakes this
    function's own threads), then ``number`` timed calls; the sample is their mean.
    ``number`` is 1 unless a call is shorter than ``min_time`` (sub-millisecond LeNet-5
    calls): then enough calls to last ``min_time``, set from the warm-up rounds. A round in
    which any function took more than ``noise`` x its running median (over every round so
    far, discarded ones and the last warm-up round included, so that one lucky fast round
    cannot make all later ones look noisy) is discarded and run again, at most
    ``max_discard`` times (default 2 x repeat + 5; after that rounds are kept as they
    come). Returns (seconds per call, per kept round, per function; rounds discarded;
    seconds per call in every timed round, discarded ones included)."""
    max_discard = 2 * repeat + 5 if max_discard is None else max_discard
    number = {k: 1 for k in fns}

    def one_round() -> dict[str, float]:
        out = {}
        for key, fn in fns.items():
            time.sleep(SETTLE_S)
            fn()
            t0 = time.perf_counter()
            for _ in range(number[key]):
                fn()
            out[key] = (time.perf_counter() - t0) / number[key]
        return out

    last = None
    for _ in range(warmup):
        last = one_round()
        number = {k: max(number[k], math.ceil(min_time / max(t, 1e-7)))
                  for k, t in last.items()}
    kept: dict[str, list[float]] = {k: [] for k in fns}
    seen: dict[str, list[float]] = {k: [last[k]] if last else [] for k in fns}
    first = next(iter(fns))
    discarded = 0
    while len(kept[first]) < repeat:
        r = one_round()
        noisy = seen[first] and any(r[k] > noise * float(np.median(seen[k])) for k in fns)
        for k, t in r.items():
            seen[k].append(t)
        if noisy and discarded < max_discard:
            discarded += 1
            continue
        for k, t in r.items():
            kept[k].append(t)
    return kept, discarded, {k: v[1:] if last else v for k, v in seen.items()}


# ------------------------------------------------------------------------ contestants
class Inference:
    """The four inference contestants of one network; reused for every batch size."""

    def __init__(self, name: str, workdir: str):
        import onnxruntime as ort
        self.name = name
        self.net = zoo.randomize_bn_stats(zoo.get(name), seed=0)
        self.fused = cnncomp.compile(self.net)
        self.unfused = cnncomp.compile(self.net, fuse=False)
        self.torch = TorchEager(self.net.graph)
        path = os.path.join(workdir, f"{name}.onnx")
        cnncomp.export_onnx(self.net, path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def ort(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]

    def calls(self) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
        return {"fused": self.fused, "unfused": self.unfused, "torch": self.torch,
                "ort": self.ort}


def inference_row(c: Inference, batch: int, repeat: int, ceiling: float, warmup: int = 3,
                  noise: float = 1.5, min_time: float = 0.02) -> dict:
    mon = CpuMonitor()
    x = np.random.default_rng(0).standard_normal((batch, *c.net.input_shape)).astype(np.float32)
    calls = c.calls()
    outs = {k: fn(x) for k, fn in calls.items()}
    errs = {k: rel_err(outs[k], outs["unfused"]) for k in calls if k != "unfused"}
    bad = {k: e for k, e in errs.items() if not e < TOL}
    if bad:
        raise AssertionError(f"{c.name} batch {batch}: disagrees with cnncomp unfused: "
                             + ", ".join(f"{LABELS[k]} rel err {e:.2e}" for k, e in bad.items()))
    times, discarded, every = time_rounds({k: (lambda fn=fn: fn(x)) for k, fn in calls.items()},
                                          repeat, warmup, noise, min_time=min_time)
    return _row(c.name, batch, "inference", times, discarded, c.fused.flops(batch), ceiling,
                max(errs.values()), mon, every)


class Training:
    """The training contestants of one network (cnncomp fused and unfused, PyTorch eager),
    checked once: their first steps from the same weights give the same loss."""

    def __init__(self, name: str, batch: int):
        self.name, self.batch = name, batch
        net = zoo.randomize_bn_stats(zoo.get(name), seed=0)
        opt = lambda: cnncomp.optim.SGD(LR, momentum=0.9)  # noqa: E731
        fused = cnncomp.compile(net, training=True, optimizer=opt())
        unfused = cnncomp.compile(net, training=True, fuse=False, optimizer=opt())
        self.steps = {"fused": fused.step, "unfused": unfused.step, "torch": torch_step(net)}
        g = net.graph
        r = np.random.default_rng(1)
        self.x = r.standard_normal((batch, *net.input_shape)).astype(np.float32)
        self.y = r.integers(0, g.values[g.outputs[0]].shape[1], batch)
        losses = {k: fn(self.x, self.y) for k, fn in self.steps.items()}  # same weights
        self.errs = {k: rel_err(losses[k], losses["unfused"]) for k in self.steps
                     if k != "unfused"}
        bad = {k: e for k, e in self.errs.items() if not e < TOL}
        if bad:
            raise AssertionError(f"{name} training batch {batch}: first-step loss disagrees "
                                 "with cnncomp unfused: " + ", ".join(
                                     f"{LABELS[k]} rel err {e:.2e}" for k, e in bad.items()))
        # work of one step: what the fused trainer's kernels compute (fwd, bwd, update)
        ex, _ = fused._executor(batch)
        self.flops = sum(s.flops for s in ex.program.steps)


def train_row(t: Training, repeat: int, ceiling: float, warmup: int = 2, noise: float = 1.5,
              min_time: float = 0.02) -> dict:
    """One training step: cnncomp fused and unfused vs PyTorch eager, same weights."""
    mon = CpuMonitor()
    times, discarded, every = time_rounds({k: (lambda fn=fn: fn(t.x, t.y))
                                           for k, fn in t.steps.items()},
                                          repeat, warmup, noise, min_time=min_time)
    return _row(t.name, t.batch, "train", times, discarded, t.flops, ceiling,
                max(t.errs.values()), mon, every)


def _gflops(flops: float, ms: float) -> Optional[float]:
    return flops / (ms / 1e3) / 1e9 if flops else None


def _p90_ms(seconds: Sequence[float]) -> float:
    return 1e3 * float(np.percentile(seconds, 90))


def _row(net: str, batch: int, mode: str, times: dict, discarded: int, flops: float,
         ceiling: float, err: float, mon: CpuMonitor, every: dict) -> dict:
    """``times``: seconds per kept round per contestant; ``every``: per timed round,
    discarded ones included (for the fused p90)."""
    ms = {k: 1e3 * float(np.median(times[k])) if k in times else None for k in CONTESTANTS}
    ratio = lambda peer: ms["fused"] / ms[peer] if ms[peer] else None  # noqa: E731
    gflops = _gflops(flops, ms["fused"])
    return {"net": net, "batch": batch, "mode": mode, "ms": ms, "vs_torch": ratio("torch"),
            "vs_ort": ratio("ort"), "gflops": gflops, "flops": flops,
            "by_pass": [(ratio("torch"), ratio("ort"))],
            "every_fused_s": list(every["fused"]), "fused_p90": _p90_ms(every["fused"]),
            "pct_ceiling": 100 * gflops / ceiling if gflops and ceiling else None,
            "rel_err": err, "load1": mon.load1, "other_cpu": mon.other_cores(),
            "rounds": len(times["fused"]), "discarded": discarded}


def combine(passes: list[dict]) -> dict:
    """One row from the same row timed in several passes through the suite (minutes
    apart, in different phases of a noisy machine): each contestant's time is the median
    of its per-pass medians; a ratio is the median of the per-pass ratios, each measured
    interleaved within one phase; ``by_pass`` keeps every pass's ratios."""
    if len(passes) == 1:
        return passes[0]
    first = passes[0]
    med = lambda v: float(np.median(v)) if all(x is not None for x in v) else None  # noqa: E731
    ms = {k: med([p["ms"][k] for p in passes]) for k in CONTESTANTS}
    by_pass = [b for p in passes for b in p["by_pass"]]
    every = [t for p in passes for t in p["every_fused_s"]]
    return {**first, "ms": ms, "by_pass": by_pass, "every_fused_s": every,
            "fused_p90": _p90_ms(every),
            "vs_torch": med([b[0] for b in by_pass]), "vs_ort": med([b[1] for b in by_pass]),
            "gflops": _gflops(first["flops"], ms["fused"]), "rel_err": max(p["rel_err"] for p in passes),
            "load1": max(p["load1"] for p in passes),
            "other_cpu": max(p["other_cpu"] for p in passes),
            "rounds": sum(p["rounds"] for p in passes),
            "discarded": sum(p["discarded"] for p in passes)}


# ---------------------------------------------------------------------- compile time
_COMPILE = r"""
import json, sys, time
t0 = time.perf_counter()
import cnncomp
import numpy as np
from frontend import zoo
t1 = time.perf_counter()
net = zoo.randomize_bn_stats(zoo.get(sys.argv[1]), seed=0)
x = np.random.default_rng(0).standard_normal((1, *net.input_shape)).astype(np.float32)
t2 = time.perf_counter()
model = cnncomp.compile(net)
t3 = time.perf_counter()
model(x)
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "compile_s": t3 - t2, "first_call_s": t4 - t3}))
"""


def compile_time(name: str, cold: bool, timeout: float = 1800) -> dict:
    """``cnncomp.compile(net)`` + the first call (batch 1), timed inside a fresh Python.

    cold: NUMBA_CACHE_DIR is a new empty directory, so every kernel is compiled by Numba.
    warm: the default cache, primed by an untimed run of the same subprocess first."""
    env = dict(os.environ)
    tmp = None
    if cold:
        tmp = tempfile.TemporaryDirectory(prefix="cnncomp-cold-numba-")
        env["NUMBA_CACHE_DIR"] = tmp.name
    cmd = [sys.executable, "-c", _COMPILE, name]

    def run() -> dict:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT,
                           timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"compile-time subprocess failed:\n{p.stderr[-3000:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])
    try:
        if not cold:
            run()
        r = run()
    finally:
        if tmp is not None:
            tmp.cleanup()
    r.update(net=name, kind="cold" if cold else "warm",
             total_s=r["compile_s"] + r["first_call_s"])
    return r


# ---------------------------------------------------------------------------- output
def _f(v: Optional[float], fmt: str, suffix: str = "") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else \
        f"{v:{fmt}}{suffix}"


BUSY_CORES = 0.25  # other processes keeping this much CPU busy during a row: flagged


def busy(r: dict) -> bool:
    return bool(r["other_cpu"] > BUSY_CORES)  # False for NaN (no /proc/stat)


def row_line(r: dict) -> str:
    ms = r["ms"]
    step = "inference" if r["mode"] == "inference" else "train step"
    return (f"| {r['net']} | {r['batch']} | {step} | {_f(ms['fused'], '.2f')} | "
            f"{_f(ms['unfused'], '.2f')} | {_f(ms['torch'], '.2f')} | {_f(ms['ort'], '.2f')} | "
            f"{_f(r['vs_torch'], '.2f', 'x')} | {_f(r['vs_ort'], '.2f', 'x')} | "
            f"{_f(r['gflops'], '.1f')} | {_f(r['pct_ceiling'], '.0f', '%')} | "
            f"{r['rel_err']:.1e} | {_f(r['load1'], '.2f')} | {_f(r['other_cpu'], '.2f')}"
            f"{' (busy!)' if busy(r) else ''} | "
            f"{r['discarded']} / {r['rounds'] + r['discarded']} | {r['fused_p90']:.2f} | "
            f"{_by_pass(r, 0)} | {_by_pass(r, 1)} |")


def _by_pass(r: dict, i: int) -> str:
    """Every pass's ratio (0: fused / PyTorch, 1: fused / ORT), in the order they ran."""
    return ", ".join(_f(b[i], ".2f") for b in r["by_pass"]) if r["by_pass"][0][i] else "-"


TABLE_HEAD = ["| network | batch | step | cnncomp fused ms | cnncomp unfused ms | PyTorch ms | "
              "ORT ms | fused / PyTorch | fused / ORT | fused GFLOP/s | % of GEMM | max rel "
              "err | load1 before | other CPU (cores) | discarded rounds | cnncomp fused p90 "
              "ms | fused / PyTorch by pass | fused / ORT by pass |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]


def _geomean(v: Sequence[float]) -> Optional[float]:
    v = [x for x in v if x]
    return float(np.exp(np.mean(np.log(v)))) if v else None


def markdown(rows: list[dict], gemm: tuple[float, float], compiles: list[dict], command: str,
             repeat: int, noise: float, seconds: float, min_time: float = 0.02,
             passes: int = 1) -> str:
    import onnxruntime
    import torch
    ceiling = max(gemm)
    inf = [r for r in rows if r["mode"] == "inference"]
    wins = sum(1 for r in inf if r["vs_torch"] < 1 and r["vs_ort"] < 1)
    gm_torch = _geomean([r["vs_torch"] for r in inf])
    gm_ort = _geomean([r["vs_ort"] for r in inf])
    disc = sum(r["discarded"] for r in rows)
    total = sum(r["rounds"] + r["discarded"] for r in rows)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, cwd=HERE).stdout.strip()
    lines = [
        "# cnncomp vs PyTorch eager vs ONNX Runtime (CPU)", "",
        f"Machine: {machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"onnxruntime {onnxruntime.__version__} ({THREADS} intra-op threads, 1 inter-op)  ",
        f"Commit: {commit}{' (plus uncommitted changes)' if dirty else ''}, "
        f"{time.strftime('%Y-%m-%d')}, the run took {seconds / 60:.1f} min  ",
        f"Command: `{command}`  ",
        f"GEMM ceiling: {ceiling:.1f} GFLOP/s (float32 2048x2048 numpy matmul, best of 5; "
        f"{gemm[0]:.1f} at the start of the run, {gemm[1]:.1f} at the end)", "",
        "Float32, random weights with randomized BN statistics, the same weights in every "
        "contestant. Each row's contestants ran interleaved round-robin in this one process; "
        f"times are medians of {repeat} kept rounds (a call shorter than {min_time * 1e3:g} "
        "ms is repeated within its round to last that long, and averaged)"
        + (f". The suite ran {passes} passes over all rows, minutes apart (the machine's "
           "speed drifts by 10-30% over minutes): a time is the median of the passes' "
           "medians, a ratio the median of the passes' ratios (each measured interleaved, "
           "in one phase), and the by-pass columns give every pass's ratio. Ratios are "
           if passes > 1 else ". Ratios are ") +
        "cnncomp fused time / peer time: **below 1x, cnncomp is faster**. Before timing, "
        f"every output agreed with cnncomp unfused to a relative error < {TOL:g} (max rel "
        "err column; training rows: the first step's loss). Training step: training-mode "
        "forward, softmax cross-entropy, backward, SGD momentum 0.9 (ONNX Runtime has no "
        "training: '-'); its GFLOP/s counts the forward, backward and update kernels of the "
        "fused trainer. "
        "% of GEMM = fused GFLOP/s / GEMM ceiling.", "",
        f"Noise: load1 is the 1-minute load average before the row (it includes this "
        f"benchmark itself, ~{THREADS} while it runs); other CPU is the average number of "
        "cores that other processes (and the hypervisor, as steal time) kept busy during the "
        "row, from /proc/stat minus this process's own CPU time. A round in which any "
        f"contestant took > {noise:g}x its running median was discarded and rerun: "
        f"**{disc} of {total} rounds discarded**. Rows marked busy! had other processes "
        f"using > {BUSY_CORES:g} cores: their times are not trustworthy, rerun on an idle "
        f"machine ({sum(map(busy, rows))} such rows). The p90 column is the 90th percentile "
        "of cnncomp fused over every timed round, discarded ones included: a stall of "
        "cnncomp's own (which the rerun would hide) shows there as a p90 far above the "
        "median.", "",
        f"Inference: cnncomp fused beats both PyTorch and ONNX Runtime in {wins} of {len(inf)} "
        f"rows; geometric mean of fused / PyTorch {_f(gm_torch, '.2f', 'x')}, "
        f"fused / ORT {_f(gm_ort, '.2f', 'x')}.", "",
    ] + TABLE_HEAD + [row_line(r) for r in rows]
    if compiles:
        lines += ["", "## Compile time", "",
                  "`cnncomp.compile(net)` plus the first call (batch 1), timed inside a fresh "
                  "Python process (imports timed separately). Cold: `NUMBA_CACHE_DIR` set to "
                  "a new empty directory, so Numba compiles every kernel. Warm: the default "
                  "on-disk kernel cache, after a previous compile.", "",
                  "| network | cache | import s | compile s | first call s | compile + first "
                  "call s |", "|---|---|---|---|---|---|"]
        for c in compiles:
            lines.append(f"| {c['net']} | {c['kind']} | {c['import_s']:.2f} | "
                         f"{c['compile_s']:.2f} | {c['first_call_s']:.2f} | {c['total_s']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str, title: str = "") -> None:
    """Grouped bars per row: cnncomp fused / PyTorch and / ORT, drawn from the line at 1.0
    (log scale: a bar going down is a row cnncomp wins). Busy rows are starred."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter
    labels = [f"{r['net']}{' *' if busy(r) else ''}\n"
              f"{'train ' if r['mode'] == 'train' else ''}b{r['batch']}" for r in rows]
    xs = np.arange(len(rows))
    w = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.6))
    for off, key, label, color in ((-w / 2, "vs_torch", "vs PyTorch eager", "#4c72b0"),
                                   (w / 2, "vs_ort", "vs ONNX Runtime", "#dd8452")):
        vals = np.array([r[key] if r[key] else np.nan for r in rows])
        bars = ax.bar(xs + off, vals - 1.0, w, bottom=1.0, label=label, color=color)
        for b, v in zip(bars, vals):
            if not np.isnan(v):
                ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.2f}", ha="center",
                        va="bottom" if v >= 1 else "top", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    vals = [r[k] for r in rows for k in ("vs_torch", "vs_ort") if r[k]]
    if vals:
        ax.set_ylim(min(0.8, min(vals) / 1.3), max(1.25, max(vals) * 1.3))
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("cnncomp fused time / peer time\n(below 1 = cnncomp faster)")
    ax.set_title(title or "cnncomp fused vs PyTorch eager and ONNX Runtime (CPU)")
    if any(map(busy, rows)):
        ax.set_xlabel(f"* other processes used > {BUSY_CORES:g} cores during the row: "
                      "not trustworthy", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------ main
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=None, help="kept rounds per row (default 10)")
    ap.add_argument("--nets", nargs="+", choices=NETS, default=None, metavar="NET",
                    help=f"inference networks (default: {' '.join(NETS)})")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32],
                    help="inference batch sizes (default 1 32)")
    ap.add_argument("--train-nets", nargs="+", choices=list(zoo.BUILTIN), default=None,
                    metavar="NET",
                    help=f"networks with a training-step row (default: {' '.join(TRAIN_NETS)}; "
                         "batch 32, LeNet-5 64)")
    ap.add_argument("--no-train", action="store_true", help="no training rows")
    ap.add_argument("--skip-224-b32", action=argparse.BooleanOptionalAction, default=True,
                    help="skip resnet18_224 at batch > 8 (default on: on 2 cores a batch of "
                         "32 at 224x224 takes minutes per round; --no-skip-224-b32 runs it)")
    ap.add_argument("--compile-net", default=None,
                    help=f"network of the cold/warm compile-time rows (default {COMPILE_NET})")
    ap.add_argument("--no-compile-time", action="store_true",
                    help="skip the cold/warm compile-time subprocesses")
    ap.add_argument("--passes", type=int, default=None,
                    help="passes over all rows, minutes apart; a row reports the median of "
                         "its passes (default 3, --quick 1)")
    ap.add_argument("--noise", type=float, default=1.5,
                    help="discard a round slower than NOISE x the running median (1.5)")
    ap.add_argument("--min-time", type=float, default=0.02,
                    help="repeat calls shorter than this many seconds within one timed "
                         "sample (0.02)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: repeat 2, lenet5 + mobilenet, LeNet-5 training and "
                         "compile time; writes to a temp directory unless --out is given")
    ap.add_argument("--out", default=None, help="directory for suite.md and suite.png "
                                                "(default benchmarks/results)")
    a = ap.parse_args(argv)
    a.repeat = a.repeat or (2 if a.quick else 10)
    a.passes = a.passes or (1 if a.quick else 3)
    a.nets = a.nets or (QUICK_NETS if a.quick else NETS)
    a.train_nets = [] if a.no_train else (a.train_nets or (["lenet5"] if a.quick else TRAIN_NETS))
    a.compile_net = a.compile_net or ("lenet5" if a.quick else COMPILE_NET)
    if a.out is None:
        a.out = (os.path.join(tempfile.gettempdir(), "cnncomp-suite-quick") if a.quick
                 else os.path.join(HERE, "results"))
    return a


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    set_threads()
    t_start = time.perf_counter()
    command = " ".join([".venv/bin/python", "benchmarks/suite.py"] + [shlex.quote(s) for s in argv])
    cases = [(n, b) for n in a.nets for b in a.batches
             if not (a.skip_224_b32 and n == "resnet18_224" and b > 8)]
    n_rows = len(cases) + len(a.train_nets)
    gemm0 = gemm_ceiling()
    print(f"GEMM ceiling {gemm0:.1f} GFLOP/s; {n_rows} rows, repeat {a.repeat}, "
          f"{a.passes} pass{'es' if a.passes > 1 else ''}", flush=True)
    print(TABLE_HEAD[0], flush=True)
    n_timed = 0

    def done(r: dict, timed: dict[tuple, list[dict]]) -> None:
        nonlocal n_timed
        n_timed += 1
        timed.setdefault((r["net"], r["batch"], r["mode"]), []).append(r)
        print(f"[{n_timed}/{n_rows * a.passes} {(time.perf_counter() - t_start) / 60:.1f} min] "
              f"{row_line(r)}", flush=True)
        if busy(r):
            print(f"  warning: other processes kept {r['other_cpu']:.2f} cores busy during "
                  "this row: its times are not trustworthy", flush=True)

    with tempfile.TemporaryDirectory(prefix="cnncomp-suite-") as work:
        contestants: dict[tuple, Any] = {}
        for name in a.nets:
            if any(n == name for n, _ in cases):
                print(f"compiling {name} (fused, unfused, ONNX export, ORT session) ...",
                      flush=True)
                contestants[(name, "inference")] = Inference(name, work)
        for name in a.train_nets:
            print(f"compiling {name} trainers ...", flush=True)
            contestants[(name, "train")] = Training(name, train_batch(name))
        timed: dict[tuple, list[dict]] = {}
        for p in range(a.passes):
            if a.passes > 1:
                print(f"pass {p + 1} of {a.passes}", flush=True)
            for name, b in cases:
                done(inference_row(contestants[(name, "inference")], b, a.repeat, gemm0,
                                   noise=a.noise, min_time=a.min_time), timed)
            for name in a.train_nets:
                done(train_row(contestants[(name, "train")], a.repeat, gemm0, noise=a.noise,
                               min_time=a.min_time), timed)
        del contestants
    rows = [combine(v) for v in timed.values()]
    gemm1 = gemm_ceiling()
    ceiling = max(gemm0, gemm1)
    for r in rows:  # the per-row % against the run's ceiling (best of start and end)
        r["pct_ceiling"] = 100 * r["gflops"] / ceiling if r["gflops"] else None
    compiles = []
    if not a.no_compile_time:
        for cold in (True, False):
            print(f"compile time of {a.compile_net}, {'cold' if cold else 'warm'} cache ...",
                  flush=True)
            compiles.append(compile_time(a.compile_net, cold))
            c = compiles[-1]
            print(f"  compile {c['compile_s']:.2f} s + first call {c['first_call_s']:.2f} s "
                  f"(import {c['import_s']:.2f} s)", flush=True)
    os.makedirs(a.out, exist_ok=True)
    md = markdown(rows, (gemm0, gemm1), compiles, command, a.repeat, a.noise,
                  time.perf_counter() - t_start, a.min_time, a.passes)
    with open(os.path.join(a.out, "suite.md"), "w") as f:
        f.write(md)
    plot(rows, os.path.join(a.out, "suite.png"))
    print(md)
    print(f"wrote {os.path.join(a.out, 'suite.md')} and suite.png", flush=True)


if __name__ == "__main__":
    main()
