"""Measured kernel costs for the layout pass, cached on disk.

One GFLOP/s figure per layout cannot rank layouts across CPUs and layer shapes: on an
AVX-512 Zen 4 the blocked NCHW16c conv ran 3x the NCHW one, on an AVX2 Zen 3 the NHWC
GEMM beat it on VGG's wide layers while depthwise convs ran 10x slower in NHWC. So,
like TVM's and ONNX Runtime's tuners, ``select_layout`` asks what each convolution
actually costs here: the registered kernel of each candidate layout is bound to random
data (``calibration_batch`` images) and timed, the layouts of one convolution taking turns
(best of RUNS rounds each). Results are keyed by the CPU, the thread count and threading
layer, the kernels' source and the layer's shape, and kept in a JSON file,
so each layer shape is measured once per machine; a new process reads them back.

A cold start compiles every candidate layout's kernels before timing them (most of a
first ``compile``: ~30 s for ResNet-18, Numba's parallel kernels take 3-11 s each). Numba
compiles on one core, so ``measure`` splits that work: a helper process compiles the
kernels of one layout into Numba's on-disk cache while this one compiles the others; the
timing runs afterwards, on an otherwise idle machine, and loads the helper's kernels from
the cache. ``CNNCOMP_COMPILE_PROCESSES=1`` keeps it all in this process.

``CNNCOMP_LAYOUT_COST=model`` switches measurement off (the analytic model in
``select_layout`` is used); ``CNNCOMP_CACHE_DIR`` moves the file (default: beside Numba's
cache when ``NUMBA_CACHE_DIR`` is set, else ``~/.cache/cnncomp``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

# Images per timed call: enough for ~1 GFLOP (a few ms) and at most 32. A conv's cost per
# image depends on the batch (parallel work, weight reuse): at 8 images VGG-11's layers
# ranked NHWC first, at 32 NCHW16c ran the whole network 14% faster.
WORK_FLOPS = 1e9
MAX_BATCH = 32
RUNS = 5  # timed rounds after a warm-up call; the best is kept (noise only adds time)
HELPER_TIMEOUT_S = 600  # the compile helper is killed after this (its work is optional)
# This process's share compiled in less than this: its kernels came from Numba's disk
# cache, so will the helper's, and loading them here beats waiting for a new interpreter
# (ResNet-18's first compile with a warm kernel cache: 4.6 s waiting, 2.7 s loading here).
WARM_CACHE_S = 3.0
VERSION = 2
_KERNEL_SOURCES = ("conv.py", "conv_direct.py", "conv_blocked.py", "conv_winograd.py",
                   "nhwc.py", "simd.py", "activation.py")

_memory: dict[str, float] = {}
_loaded_from: Optional[Path] = None


def enabled() -> bool:
    """Measure kernels (default) or fall back to the analytic model."""
    mode = os.environ.get("CNNCOMP_LAYOUT_COST", "measured").strip().lower()
    if mode not in ("measured", "model"):
        raise ValueError(f"CNNCOMP_LAYOUT_COST={mode!r}: use 'measured' (time each "
                         "convolution once per machine) or 'model' (analytic GFLOP/s)")
    return mode == "measured"


def cache_path() -> Path:
    """The JSON file of measured costs."""
    if os.environ.get("CNNCOMP_CACHE_DIR"):
        root = Path(os.environ["CNNCOMP_CACHE_DIR"])
    elif os.environ.get("NUMBA_CACHE_DIR"):
        root = Path(os.environ["NUMBA_CACHE_DIR"]) / "cnncomp"
    else:
        root = Path.home() / ".cache" / "cnncomp"
    return root / "kernel_costs.json"


def _machine() -> str:
    """CPU name, vector features, thread count and threading layer (TBB joins its second
    thread late on short kernels): what a timing depends on."""
    import numba
    return (f"{_cpu_and_kernels()}/threads={numba.get_num_threads()}"
            f"@{numba.config.THREADING_LAYER}")


@functools.lru_cache(maxsize=1)
def _cpu_and_kernels() -> str:
    import llvmlite.binding as llvm
    feats = llvm.get_host_cpu_features()
    isa = "+".join(f for f in ("avx512f", "avx2", "fma", "neon") if feats.get(f))
    src = Path(__file__).resolve().parent.parent / "runtime" / "cpu"
    digest = hashlib.sha1()
    for name in _KERNEL_SOURCES:  # a kernel change invalidates its timings
        p = src / name
        digest.update(p.read_bytes() if p.exists() else b"")
    return f"{llvm.get_host_cpu_name()}/{isa}/kernels={digest.hexdigest()[:12]}"


def _read(path: Path) -> dict[str, float]:
    """The costs in ``path``; empty when it is missing, unreadable or of another version."""
    try:
        data = json.loads(path.read_text())
        return ({k: float(v) for k, v in data["costs"].items()}
                if data.get("version") == VERSION else {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # measure again and rewrite


def _load(path: Path) -> None:
    global _loaded_from
    if _loaded_from != path:
        _memory.clear()
        _memory.update(_read(path))
        _loaded_from = path


def _save(path: Path) -> None:
    """Merge with what another process may have written, then replace atomically."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        costs = _read(path)
        costs.update(_memory)
        current = _cpu_and_kernels()  # "cpu/isa/kernels=digest"
        cpu = current.rsplit("/kernels=", 1)[0] + "/"
        costs = {k: v for k, v in costs.items()  # drop timings of older kernel sources
                 if not k.startswith(cpu) or k.startswith(current + "/")}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".kernel_costs.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"version": VERSION, "costs": costs}, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: the timings still serve this process


def conv_key(layout: str, x_shape: Sequence[int], w_shape: Sequence[int],
             attrs: Mapping[str, Any]) -> str:
    """What a convolution's cost depends on (its epilogue costs the same in every layout,
    so fused and unfused convs share one measurement)."""
    c, h, w = x_shape[1:]
    a = attrs
    return (f"conv2d/{layout}/C{c}xH{h}xW{w}/O{w_shape[0]}/k{tuple(a['kernel_size'])}/"
            f"s{tuple(a['stride'])}/p{tuple(a['padding'])}/d{tuple(a['dilation'])}/"
            f"g{a['groups']}" + ("/winograd" if a.get("algorithm") == "winograd" else ""))


def calibration_batch(w_shape: Sequence[int], out_shape: Sequence[int]) -> int:
    """Images per timed call of a conv with weight ``w_shape`` (OIHW) and output shape
    ``out_shape`` (NCHW): about WORK_FLOPS of work, 1 to MAX_BATCH images."""
    flops = 2.0 * math.prod(w_shape) * out_shape[2] * out_shape[3]
    return max(1, min(MAX_BATCH, math.ceil(WORK_FLOPS / max(flops, 1.0))))


_NOISE = np.empty(0, np.float32)


def _noise(shape: Sequence[int]) -> np.ndarray:
    """Standard-normal float32 data of ``shape`` (a fresh copy from one pool drawn once per
    process: drawing it per conv took 0.7 s of a cold ResNet-18 compile's timing)."""
    global _NOISE
    size = math.prod(shape)
    if _NOISE.size < size:
        _NOISE = np.random.default_rng(0).standard_normal(max(size, 1 << 20),
                                                          dtype=np.float32)
    return _NOISE[:size].reshape(shape).copy()


def _bind_conv(layout: str, x_shape: Sequence[int], w_shape: Sequence[int],
               out_shape: Sequence[int], attrs: Mapping[str, Any], target: str,
               batch: Optional[int] = None):
    """The registered kernel of ``layout`` bound to random data of ``batch`` images
    (default ``calibration_batch``); returns (run, images)."""
    from runtime.registry import get_kernel
    from .passes.select_layout import input_layout, physical_shape
    batch = batch or calibration_batch(w_shape, out_shape)
    xs = (batch, *x_shape[1:])
    os_ = (batch, *out_shape[1:])
    x = _noise(physical_shape(xs, input_layout(layout, x_shape[1], attrs["groups"])))
    wt = _noise(tuple(w_shape))
    b = _noise((w_shape[0],))
    # read-only, as a graph's constants are (ir.Graph freezes them): Numba compiles a
    # kernel per signature, and a writable weight here left the one the network runs
    # (read-only) to its first call (a 7 s recompile of the NCHW direct conv)
    wt.flags.writeable = False
    b.flags.writeable = False
    out = np.empty(physical_shape(os_, layout), np.float32)
    run = get_kernel("conv2d", target, layout)(
        [x, wt, b], [out], dict(attrs, bias=True, activation="none", residual=False))
    return run, batch


def _time_convs(specs: Sequence["ConvSpec"], target: str) -> list[float]:
    """Seconds per image of each spec's kernel: the layouts of one convolution, timed
    round-robin (RUNS rounds after a warm-up call each), keeping each one's best round.
    Interleaved, a slow phase of the machine (they last seconds on a shared VM) falls on
    every layout alike; timed one layout after the other, a cold ResNet-18 compile picked
    NHWC (1.3x slower there) in one of four runs. A spec without a kernel gets -1."""
    runs: list[Optional[tuple]] = []
    for layout, xs, ws, outs, attrs in specs:
        try:
            run, batch = _bind_conv(layout, xs, ws, outs, attrs, target)
            run()  # compiles (or loads from Numba's cache) and warms the caches
            runs.append((run, batch))
        except (LookupError, NotImplementedError, ValueError):
            runs.append(None)  # this layout has no kernel for this conv
    best = [float("inf")] * len(specs)
    for _ in range(RUNS):
        for i, rb in enumerate(runs):
            if rb is not None:
                t = time.perf_counter()
                rb[0]()
                best[i] = min(best[i], time.perf_counter() - t)
    return [b / rb[1] if rb is not None else -1.0 for b, rb in zip(best, runs)]


def _compile(specs: Sequence["ConvSpec"], target: str, desc: Optional[str] = None,
             batch_1: bool = True) -> None:
    """Bind and run each spec's kernel once at the calibration batch (and at batch 1 with
    ``batch_1``): Numba compiles them (and, with cache=True, writes them to its on-disk
    cache). Batch 1 takes other paths in some kernels (small-M GEMMs, serial loops) and is
    the batch of a usual first call. Specs without a kernel are skipped here."""
    from tqdm.auto import tqdm
    for spec in tqdm(specs, desc=desc, unit="conv", disable=None if desc else True,
                     leave=False):
        try:
            _bind_conv(*spec, target)[0]()
            if batch_1:
                _bind_conv(*spec, target, batch=1)[0]()
        except (LookupError, NotImplementedError, ValueError):
            pass  # measure() records it as unavailable


def compile_processes() -> int:
    """How many processes compile kernels before timing (CNNCOMP_COMPILE_PROCESSES)."""
    raw = os.environ.get("CNNCOMP_COMPILE_PROCESSES", "2").strip()
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"CNNCOMP_COMPILE_PROCESSES={raw!r}: use 1 (compile in this "
                         "process only) or 2 (a helper process compiles one layout's "
                         "kernels alongside)")
    return min(int(raw), 2)


def _helper_main() -> None:
    """Entry point of the helper process: compile the pickled specs read from stdin."""
    import pickle
    import sys
    import runtime  # noqa: F401  (first: OpenBLAS's thread policy, as in the parent)
    specs, target = pickle.load(sys.stdin.buffer)
    _compile(specs, target, batch_1=False)


def _warm_transforms(layouts: Sequence[str], target: str) -> None:
    """Compile the conversions NCHW <-> each of ``layouts`` (on a tiny tensor): a network
    run in one of them converts at its region's edges, and the NCHW16c kernels took 3.8 s
    of a cold ResNet-18's first call."""
    from runtime.registry import get_kernel
    from .passes.select_layout import physical_shape
    shape = (1, 17, 2, 3)  # a partial channel block too
    for layout in layouts:
        try:
            bind = get_kernel("layout_transform", target, layout)
        except LookupError:
            continue
        x = _noise(shape)
        y = np.empty(physical_shape(shape, layout), np.float32)
        bind([x], [y], {"src": "NCHW", "dst": layout})()
        bind([y], [x], {"src": layout, "dst": "NCHW"})()


def _compile_in_two_processes(specs: Sequence["ConvSpec"], target: str) -> None:
    """Compile the kernels ``specs`` need, split by kernel (``_runs_blocked``) between a
    helper process and this one, so both cores compile; returns when both are done. The
    helper only fills Numba's disk cache: if it fails, the timing loop compiles what is
    missing.

    The split is by the kernels a spec compiles, not by its layout: an NCHW conv of 16 or
    more channels runs the blocked kernels between conversions, so with the helper taking
    every NCHW spec both processes compiled the blocked dense and Winograd kernels at once.
    Measured on a cold ResNet-18 (the blocked kernels 5 s, 4 s and 4 s for the stem's
    planar-input build): split by layout, this process 21.3 s and the helper 19.3 s.
    This process also warms the batch-1 paths; the helper does not (its serial batch-1
    kernels made it 25 s when it had the NCHW ones)."""
    import pickle
    import subprocess
    import sys
    ours: list["ConvSpec"] = []
    theirs: list["ConvSpec"] = []
    for s in specs:
        (ours if _runs_blocked(s) else theirs).append(s)
    root = str(Path(__file__).resolve().parent.parent)  # holds cnncomp/ and runtime/
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    try:
        helper = subprocess.Popen(
            [sys.executable, "-c", "from cnncomp.cost import _helper_main; _helper_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env)
    except OSError:
        return  # no second process here: the timing loop compiles everything
    try:
        helper.stdin.write(pickle.dumps((theirs, target)))
        helper.stdin.close()
    except OSError:
        pass  # the helper died at start: same as above
    start = time.perf_counter()
    try:
        _compile(ours, target, desc="compiling conv kernels (a helper process compiles the rest)")
    except BaseException:  # Ctrl-C or an error here: the helper's work is moot
        helper.kill()
        helper.wait()
        raise
    if time.perf_counter() - start < WARM_CACHE_S and helper.poll() is None:
        helper.kill()  # a warm cache: see WARM_CACHE_S
        helper.wait()
        _compile(theirs, target)
        return
    if helper.poll() is None:  # while the helper works: what a region in any candidate layout
        _warm_transforms(sorted({s[0] for s in specs}), target)  # runs at its edges
    try:
        helper.wait(timeout=HELPER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        helper.kill()
        helper.wait()


ConvSpec = tuple  # (layout, x_shape, w_shape, out_shape, attrs): one conv in one layout


def _runs_blocked(spec: "ConvSpec") -> bool:
    """Whether a CPU conv spec runs the NCHW16c kernels on a channel-blocked input: in
    NCHW16c (all but a stem, whose planar input takes another build of the dense kernel),
    or in NCHW with 16+ channels (``suits_nchw``: blocked between two conversions)."""
    from runtime.cpu.conv_blocked import suits_nchw
    from .passes.select_layout import input_layout
    layout, xs, ws, _, attrs = spec
    groups = int(attrs["groups"])
    if layout == "NCHW16c":
        return input_layout(layout, xs[1], groups) == "NCHW16c"
    return layout == "NCHW" and suits_nchw(xs[1], ws[0], groups,
                                           attrs.get("activation", "none"))


def _keys(specs: Sequence[ConvSpec], target: str) -> list[str]:
    """Cache keys of ``specs``, with this process's costs loaded. The target's kernels are
    imported first: runtime.cpu picks Numba's threading layer, which _machine() names
    and whose numba.get_num_threads() would otherwise fix it early."""
    from runtime.registry import registered
    registered(target)
    _load(cache_path())
    machine = _machine()
    return [f"{machine}|{conv_key(s[0], s[1], s[2], s[4])}" for s in specs]


def conv_seconds(layout: str, x_shape: Sequence[int], w_shape: Sequence[int],
                 out_shape: Sequence[int], attrs: Mapping[str, Any],
                 target: str = "cpu") -> Optional[float]:
    """Measured seconds per image of one conv2d in ``layout`` (None: no such kernel, or
    it rejects this conv)."""
    spec = (layout, x_shape, w_shape, out_shape, attrs)
    (key,) = _keys([spec], target)
    if key not in _memory:
        measure([spec], target)
    cost = _memory[key]
    return None if cost < 0 else cost


def measure(specs: Sequence[ConvSpec], target: str = "cpu") -> None:
    """Time the convolutions of ``specs`` not measured on this machine yet (a progress
    bar when there are several), then write the cache file once."""
    from tqdm.auto import tqdm
    todo = {k: s for k, s in zip(_keys(specs, target), specs) if k not in _memory}
    if not todo:
        return
    if (target == "cpu" and compile_processes() > 1
            and len({_runs_blocked(s) for s in todo.values()}) > 1):  # both have a share
        _compile_in_two_processes(list(todo.values()), target)
    convs: dict[str, list[str]] = {}  # one convolution -> the keys of its layouts
    for key, (_, xs, ws, _, attrs) in todo.items():
        convs.setdefault(conv_key("*", xs, ws, attrs), []).append(key)
    for keys in tqdm(convs.values(), desc="measuring conv kernels per layout", unit="conv",
                     disable=None if len(convs) > 3 else True, leave=False):
        # -1: this layout has no kernel for this conv (remembered too)
        for key, t in zip(keys, _time_convs([todo[k] for k in keys], target)):
            _memory[key] = t
    _save(cache_path())
