"""Collective kernels for data-parallel training over MPI (mpi4py, imported lazily).

The compiler's ``insert_allreduce`` pass puts two ops into a distributed training graph:

* ``allreduce_start(labels, t1..tk, p1..pm) -> flat``: packs ``b * t`` for every tensor
  (``b`` = this rank's batch, read from the labels' length) and ``b`` itself into one
  contiguous float32 buffer of the arena and starts a non-blocking MPI Iallreduce (sum)
  on it. The ``p`` are parameters averaged in place (per-rank BatchNorm running stats).
* ``allreduce_wait(flat, p1..pm) -> (t1', .., tk')``: waits for that Iallreduce, divides
  by the summed batch (so the result is the batch-weighted mean over ranks: exactly the
  gradient of the loss over the global batch) and unpacks the averaged tensors; the
  ``p`` are overwritten with their averages.

A bucket of several gradients costs one message; the memory planner keeps ``flat`` alive
from start to wait, so with ``overlap`` the waits can sit at the end of the backward pass
while the remaining backward kernels run. A wait polls its request with a deadline: a rank
that died or hung makes the others raise ``CommTimeout`` instead of blocking forever.

Synchronized BatchNorm (``batch_norm_train`` / ``batch_norm_grad`` with ``sync=True``,
dispatched here by ``grad_norm``): the forward all-gathers each rank's count, mean and
sum of squared deviations per channel and combines them exactly (Chan et al.), the
backward all-reduces the two per-channel sums its input gradient needs. Parameter
gradients (dgamma, dbeta) stay local sums; the gradient allreduce averages them.

``configure(comm, timeout)`` is called by ``cnncomp.distributed``; the runtime never
imports the compiler. ``STATS`` accumulates seconds spent in communication (packing and
waiting included) for benchmarks.
"""
from __future__ import annotations

import os
import time
from typing import Any, Mapping, Optional, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from .activation import act_code, apply_act
from .grad_norm import (_by_channel, channel_grad_input, channel_grad_sums,
                        channel_moments)
from .jit import PARALLEL


class CommTimeout(RuntimeError):
    """Another rank did not join a collective within the timeout (dead or hung)."""


_COMM: Any = None
_MPI: Any = None
_TIMEOUT = 300.0
_PENDING: dict[int, Any] = {}   # flat buffer address -> in-flight request
STATS = {"seconds": 0.0, "calls": 0, "bytes": 0}


def configure(comm: Any = None, timeout: Optional[float] = None) -> None:
    """Use ``comm`` (an mpi4py communicator) for every collective; set the timeout (s)."""
    global _COMM, _MPI, _TIMEOUT
    if comm is not None:
        from mpi4py import MPI
        _MPI, _COMM = MPI, comm
    if timeout is not None:
        _TIMEOUT = float(timeout)


def communicator() -> Any:
    """The communicator in use (COMM_WORLD unless ``configure`` set another)."""
    global _COMM, _MPI
    if _COMM is None:
        try:
            from mpi4py import MPI
        except ImportError:
            raise ImportError("distributed kernels need mpi4py and an MPI library: "
                              "pip install 'cnncomp[distributed]'") from None
        _MPI, _COMM = MPI, MPI.COMM_WORLD
    return _COMM


def reset_stats() -> None:
    STATS.update(seconds=0.0, calls=0, bytes=0)


def wait(req: Any, what: str) -> None:
    """Wait for an MPI request, polling, for at most the timeout; then raise CommTimeout.

    MPI moves a large message in chunks, and only while a rank polls, so polling must
    not pause: it spins (yielding the core to any other runnable thread) for the first
    second, then sleeps 1 ms between polls (a rank far behind: JIT compiling, or gone)."""
    if req.Test():
        return
    t0 = time.perf_counter()
    spin_until, deadline = t0 + 1.0, t0 + _TIMEOUT
    while not req.Test():
        now = time.perf_counter()
        if now < spin_until:
            os.sched_yield()
            continue
        if now > deadline:
            comm = communicator()
            raise CommTimeout(
                f"rank {comm.Get_rank()} of {comm.Get_size()}: the other ranks did not join "
                f"{what} within {_TIMEOUT:g} s: a rank died, hung or runs a different "
                "program; stopping (cnncomp.distributed timeout)")
        time.sleep(1e-3)


def allreduce_sum(buf: np.ndarray, what: str) -> None:
    """In-place sum of ``buf`` over all ranks, bounded by the timeout."""
    comm = communicator()
    t0 = time.perf_counter()
    wait(comm.Iallreduce(_MPI.IN_PLACE, buf, _MPI.SUM), what)
    _count(buf.nbytes, t0)


def allgather(send: np.ndarray, recv: np.ndarray, what: str) -> None:
    comm = communicator()
    t0 = time.perf_counter()
    wait(comm.Iallgather(send, recv), what)
    _count(send.nbytes, t0)


def broadcast(buf: np.ndarray, root: int, what: str) -> None:
    comm = communicator()
    t0 = time.perf_counter()
    wait(comm.Ibcast(buf, root), what)
    _count(buf.nbytes, t0)


def _count(nbytes: int, t0: float) -> None:
    STATS["seconds"] += time.perf_counter() - t0
    STATS["calls"] += 1
    STATS["bytes"] += int(nbytes)


# ------------------------------------------------------------------ gradient buckets

def _slices(arrays: Sequence[np.ndarray], start: int = 0) -> list[slice]:
    out = []
    for a in arrays:
        out.append(slice(start, start + a.size))
        start += a.size
    return out


@register_kernel("allreduce_start", mode="comm")
def bind_allreduce_start(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                         attrs: Mapping):
    """Pack batch-weighted tensors into ``flat`` and start a non-blocking sum over ranks."""
    labels, tensors = ins[0], [np.ascontiguousarray(t).reshape(-1) for t in ins[1:]]
    flat = outs[0]
    if flat.size != sum(t.size for t in tensors) + 1:
        raise ValueError(f"allreduce_start: buffer of {flat.size} for tensors of "
                         f"{[t.size for t in tensors]} + 1")
    weight = np.float32(labels.shape[0])
    parts = list(zip(tensors, _slices(tensors)))
    bucket = attrs.get("bucket", 0)

    def run():
        t0 = time.perf_counter()
        for t, s in parts:
            np.multiply(t, weight, out=flat[s])
        flat[-1] = weight
        comm = communicator()
        _PENDING[flat.ctypes.data] = comm.Iallreduce(_MPI.IN_PLACE, flat, _MPI.SUM)
        if len(_PENDING) > 1:  # MPI progresses earlier buckets only inside MPI calls
            _MPI.Request.Testall(list(_PENDING.values()))
        _count(flat.nbytes, t0)
    run.__name__ = f"allreduce_start_{bucket}"
    return run


@register_kernel("allreduce_wait", mode="comm")
def bind_allreduce_wait(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                        attrs: Mapping):
    """Finish the bucket's Iallreduce; unpack the batch-weighted means (and in-place params)."""
    flat, inplace = ins[0], list(ins[1:])
    outs = list(outs)
    targets = outs + inplace
    n = sum(a.size for a in targets)
    if flat.size != n + 1:
        raise ValueError(f"allreduce_wait: buffer of {flat.size} for outputs of {n} + 1")
    parts = [(t, flat[s].reshape(t.shape)) for t, s in zip(targets, _slices(targets))]
    what = f"gradient bucket {attrs.get('bucket', 0)} (allreduce_wait)"

    def run():
        t0 = time.perf_counter()
        req = _PENDING.pop(flat.ctypes.data, None)
        if req is None:
            raise RuntimeError("allreduce_wait: no allreduce_start in flight for its buffer")
        wait(req, what)
        scale = np.float32(1.0 / flat[-1])
        for t, src in parts:
            np.multiply(src, scale, out=t)
        STATS["seconds"] += time.perf_counter() - t0
    return run


# ------------------------------------------------------------------ synchronized BatchNorm

@numba.njit(cache=True, parallel=PARALLEL)
def _local_moments(x, mean, m2):
    for c in prange(x.shape[1]):
        mean[c], m2[c] = channel_moments(x, c)


@numba.njit(cache=True, parallel=PARALLEL)
def _normalize(x, y, gamma, beta, mean, inv, code, alpha):
    # the same arithmetic as grad_norm._bn_train, with the global statistics
    n, c_n, p = x.shape
    for c in prange(c_n):
        scale = np.float32(gamma[c] * inv[c])
        shift = np.float32(beta[c] - mean[c] * inv[c] * gamma[c])
        for i in range(n):
            for k in range(p):
                y[i, c, k] = apply_act(x[i, c, k] * scale + shift, code, alpha)


def combine_moments(gathered: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, biased var, count) of the union from each rank's row [count, mean, M2]."""
    counts = gathered[:, 0]
    means = gathered[:, 1:1 + channels]
    m2 = gathered[:, 1 + channels:]
    total = float(counts.sum())
    mean = (counts[:, None] * means).sum(axis=0) / total
    m2_all = m2.sum(axis=0) + (counts[:, None] * (means - mean) ** 2).sum(axis=0)
    return mean, m2_all / total, total


def bind_sync_batch_norm_train(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                               attrs: Mapping):
    """Training BatchNorm with the statistics of the global batch (all ranks)."""
    x, gamma, beta, rmean, rvar = ins
    y, mean_out, invstd_out = outs
    if not (rmean.flags.writeable and rvar.flags.writeable):
        raise ValueError("batch_norm_train updates the running statistics in place: they "
                         "must be writable arrays")
    x3, y3 = _by_channel(x), _by_channel(y)
    c = x3.shape[1]
    local = x.size // c
    eps, mom = float(attrs["eps"]), float(attrs["momentum"])
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    send = np.empty(1 + 2 * c, np.float64)
    mean_l, m2_l = send[1:1 + c], send[1 + c:]
    size = communicator().Get_size()
    recv = np.empty((size, 1 + 2 * c), np.float64)

    def run():
        _local_moments(x3, mean_l, m2_l)
        send[0] = local
        allgather(send, recv, "synchronized batch_norm statistics")
        mean, var, total = combine_moments(recv, c)
        if total < 2:
            raise ValueError("synchronized batch_norm needs at least 2 values per channel "
                             "over all ranks")
        inv = 1.0 / np.sqrt(var + eps)
        _normalize(x3, y3, gamma, beta, mean, inv, code, alpha)
        mean_out[:] = mean
        invstd_out[:] = inv
        rmean[:] = (1.0 - mom) * rmean + mom * mean
        rvar[:] = (1.0 - mom) * rvar + mom * var * total / (total - 1)
    return run


@numba.njit(cache=True, parallel=PARALLEL)
def _grad_sums(gy, x, mean, s, code, alpha, sg_out, sgx_out):
    for c in prange(x.shape[1]):
        sg_out[c], sgx_out[c] = channel_grad_sums(gy, x, s, c, mean[c], code, alpha)


@numba.njit(cache=True, parallel=PARALLEL)
def _grad_input(gy, x, gamma, mean, invstd, gx, s, code, alpha, sg, sgx, m):
    for c in prange(x.shape[1]):
        channel_grad_input(gy, x, s, gx, c, mean[c], invstd[c], gamma[c], sg[c], sgx[c], m,
                           code, alpha)


def bind_sync_batch_norm_grad(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                              attrs: Mapping):
    """Backward of synchronized BatchNorm: dx from the global sums of the upstream gradient.

    Each rank's upstream gradient is its own loss's (mean over its b samples); weighting
    each rank's sums by b and dividing by the local b again gives the global sums on this
    rank's scale, so dx is exact for shards of any size."""
    gy, x, gamma, mean, invstd = ins[:5]
    gx, ggamma, gbeta = outs
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    g3, x3, gx3 = _by_channel(gy), _by_channel(x), _by_channel(gx)
    s3 = _by_channel(ins[5]) if code else g3
    c = x3.shape[1]
    b = float(x.shape[0])
    local = float(x.size // c)
    sg, sgx = np.empty(c, np.float64), np.empty(c, np.float64)
    buf = np.empty(2 * c + 1, np.float64)

    def run():
        _grad_sums(g3, x3, mean, s3, code, alpha, sg, sgx)
        ggamma[:] = sgx * invstd
        gbeta[:] = sg
        np.multiply(sg, b, out=buf[:c])
        np.multiply(sgx, b, out=buf[c:2 * c])
        buf[-1] = local
        allreduce_sum(buf, "synchronized batch_norm gradient")
        _grad_input(g3, x3, gamma, mean, invstd, gx3, s3, code, alpha, buf[:c] / b,
                    buf[c:2 * c] / b, buf[-1])
    return run


def allgatherv(send: np.ndarray, recv: np.ndarray, counts: np.ndarray, what: str) -> None:
    """Concatenate every rank's ``send`` (``counts[r]`` float32 values each) into ``recv``."""
    comm = communicator()
    counts = np.asarray(counts, np.int64)
    displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
    t0 = time.perf_counter()
    wait(comm.Iallgatherv(send, [recv, counts, displs, _MPI.FLOAT]), what)
    _count(recv.nbytes, t0)
