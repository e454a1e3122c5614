"""Data-parallel training over MPI: images/s for 1 and 2 ranks, communication per step.

    .venv/bin/python benchmarks/distributed.py [--rounds 3] [--nets digits_cnn,lenet5,mobilenet]

Each configuration is one job (``mpiexec -n R python benchmarks/distributed.py --worker``,
or plain ``python`` for the single-process baseline), repeated ``--rounds`` times in
round-robin order; the table gives medians over rounds. A job compiles the network,
warms up, then times ``steps`` training steps (SGD momentum) on a fixed global batch
that each rank shards; images/s = global batch x steps / wall time on rank 0 (ranks
start together after a barrier). "comm ms/step" is the time rank 0 spends inside
cnncomp's collectives per step (packing, MPI, and waiting for the other rank to arrive);
"max over ranks" shows the rank that waited most. "allreduce alone" is a bare MPI
Allreduce of all the gradients (float32) after a barrier: the pure transfer cost. With 2
ranks each rank runs single-threaded (cores // ranks); the single process uses both
cores. Writes benchmarks/results/distributed.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import runtime  # noqa: E402,F401  (before numpy: it sets OpenBLAS's thread policy)
import numpy as np  # noqa: E402

MIB = 1 << 20
NETS = {  # name -> (zoo builder, global batch, timed steps, warm-up steps)
    "digits_cnn": ("digits_cnn", 32, 200, 10),
    "lenet5": ("lenet5", 64, 100, 5),
    "mobilenet": ("mobilenet_v1_cifar", 32, 6, 2),
}
# label -> (ranks, MPI options or None for the plain single-process trainer)
CONFIGS = {
    "1 process (no MPI), 2 threads": (1, None),
    "1 rank (MPI), 2 threads": (1, {}),
    "2 ranks x 1 thread": (2, {}),
    "2 ranks, a bucket per parameter": (2, {"bucket_bytes": 0}),
    "2 ranks, one bucket": (2, {"bucket_bytes": 1 << 40}),
    "2 ranks, overlap (1 MiB buckets)": (2, {"overlap": True}),
    "2 ranks, synchronized BN": (2, {"sync_batch_norm": True}),
}
PLAN = {  # which configurations each network runs
    "digits_cnn": ["1 process (no MPI), 2 threads", "1 rank (MPI), 2 threads",
                   "2 ranks x 1 thread", "2 ranks, a bucket per parameter",
                   "2 ranks, synchronized BN"],
    "lenet5": ["1 process (no MPI), 2 threads", "2 ranks x 1 thread",
               "2 ranks, a bucket per parameter"],
    "mobilenet": ["1 process (no MPI), 2 threads", "2 ranks x 1 thread",
                  "2 ranks, a bucket per parameter", "2 ranks, one bucket",
                  "2 ranks, overlap (1 MiB buckets)", "2 ranks, synchronized BN"],
}


# ---------------------------------------------------------------------------- worker

def worker(net_name: str, config: str) -> None:
    import cnncomp
    from frontend import zoo
    zoo_name, batch, steps, warm = NETS[net_name]
    ranks, options = CONFIGS[config]
    net = getattr(zoo, zoo_name)()
    opt = cnncomp.optim.SGD(0.01, momentum=0.9)
    if options is None:
        trainer = cnncomp.compile(net, training=True, optimizer=opt)
        rank, size, comm = 0, 1, None
    else:
        trainer = cnncomp.compile(net, training=True, optimizer=opt,
                                  distributed=cnncomp.distributed.MPI(**options))
        rank, size, comm = trainer.rank, trainer.world_size, trainer.comm
    g = net.to_graph()
    shape = g.values[g.inputs[0]].shape[1:]
    r = np.random.default_rng(0)
    x = r.random((batch, *shape), dtype=np.float32)
    y = r.integers(0, g.values[g.outputs[0]].shape[1], batch)
    mine = np.array_split(np.arange(batch), size)[rank]
    xs, ys = x[mine], y[mine]
    for _ in range(warm):
        trainer.step(xs, ys)
    from runtime.cpu import comm as rc
    if comm is not None:
        comm.Barrier()
    rc.reset_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step(xs, ys)
    seconds = time.perf_counter() - t0
    stats = dict(rc.STATS)
    grads = sum(v.size for k, v in trainer.parameters().items()
                if k.endswith(".weight") or k.endswith(".bias"))
    result = {"images_per_s": batch * steps / seconds, "ms_per_step": seconds / steps * 1e3,
              "comm_ms": stats["seconds"] / steps * 1e3, "calls": stats["calls"] / steps,
              "buckets": sum(n.op.value == "allreduce_start" for n in trainer.graph.nodes),
              "grad_mib": grads * 4 / MIB, "threads": _threads()}
    if comm is not None:
        result["comm_ms_max"] = comm.allreduce(result["comm_ms"], op=_mpi().MAX)
        buf = np.ones(grads, np.float32)
        times = []
        for _ in range(15):
            comm.Barrier()
            t = time.perf_counter()
            comm.Allreduce(_mpi().IN_PLACE, buf, op=_mpi().SUM)
            times.append(time.perf_counter() - t)
        result["allreduce_ms"] = statistics.median(times) * 1e3
    if rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


def _mpi():
    from mpi4py import MPI
    return MPI


def _threads() -> int:
    import numba
    return numba.get_num_threads()


# ---------------------------------------------------------------------------- driver

def run_job(net: str, config: str, mpiexec: str) -> dict:
    ranks, options = CONFIGS[config]
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", net, config]
    if options is not None:
        cmd = [mpiexec, "-n", str(ranks)] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return {**json.loads(line[len("RESULT "):]), "load": os.getloadavg()[0]}


def machine() -> str:
    import numba
    import numpy
    try:
        from mpi4py import MPI
        mpi = MPI.Get_library_version().split("\n")[0].strip()
    except ImportError:
        mpi = "no MPI"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numba "
            f"{numba.__version__}, numpy {numpy.__version__}, {mpi}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                  "distributed.md"))
    ap.add_argument("--worker", nargs=2, metavar=("NET", "CONFIG"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(*a.worker)
        return
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or \
        shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit("no mpiexec: pip install -e '.[distributed]'")
    nets = a.nets.split(",")
    runs: dict[tuple[str, str], list[dict]] = {}
    load = os.getloadavg()[0]
    for k in range(a.rounds):
        for net in nets:
            for config in PLAN[net]:
                res = run_job(net, config, mpiexec)
                runs.setdefault((net, config), []).append(res)
                print(f"round {k + 1}/{a.rounds} {net:10s} {config:34s} "
                      f"{res['images_per_s']:8.1f} img/s  comm {res['comm_ms']:.2f} ms/step",
                      flush=True)
    loads = [r["load"] for rs in runs.values() for r in rs]
    cmd = "python benchmarks/distributed.py " + " ".join(
        f"--{k} {v}" for k, v in (("rounds", a.rounds), ("nets", a.nets)))
    lines = ["# Data-parallel training over MPI: 1 vs 2 ranks", "",
             f"Machine: {machine()}  ",
             f"Command: `.venv/bin/{cmd}`  ",
             f"1-minute load average: {load:.1f} at the start, {min(loads):.1f}-"
             f"{max(loads):.1f} after the jobs (this 2-core VM is shared: other processes "
             "make single timings vary by up to 2-3x; compare within a table)  ",
             "One step: training-mode forward, loss, backward, gradient allreduce, SGD "
             "momentum, on a fixed global batch that the ranks shard. Medians of "
             f"{a.rounds} rounds (each configuration a separate mpiexec job, round-robin). "
             "comm = time in cnncomp's collectives on rank 0 per step (packing, MPI, "
             "waiting for the other rank); allreduce alone = a bare MPI Allreduce of all "
             "gradients after a barrier.", ""]
    for net in nets:
        zoo_name, batch, steps, _ = NETS[net]
        first = runs[(net, PLAN[net][0])][0]
        base = statistics.median(r["images_per_s"] for r in runs[(net, PLAN[net][0])])
        lines += [f"### {net} ({zoo_name}), global batch {batch}, {steps} timed steps, "
                  f"{first['grad_mib']:.2f} MiB of gradients", "",
                  "| configuration | images/s | ms / step | vs 1 process | comm ms / step "
                  "(rank 0) | comm max over ranks | allreduce alone ms | buckets | "
                  "collectives / step |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for config in PLAN[net]:
            rs = runs[(net, config)]
            med = lambda key: statistics.median(r[key] for r in rs)  # noqa: E731
            ips = med("images_per_s")
            dist = "comm_ms_max" in rs[0]
            lines.append(
                f"| {config} | {ips:.1f} | {med('ms_per_step'):.1f} | {ips / base:.2f}x | "
                + (f"{med('comm_ms'):.2f} | {med('comm_ms_max'):.2f} | "
                   f"{med('allreduce_ms'):.2f} | {rs[0]['buckets']} | {med('calls'):.0f} |"
                   if dist else "- | - | - | - | - |"))
        lines.append("")
    with open(a.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
