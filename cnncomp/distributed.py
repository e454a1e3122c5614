"""Data-parallel training over MPI (mpi4py), as Horovod does it.

    # mpiexec -n 2 python train.py            (pip install 'cnncomp[distributed]')
    trainer = cnncomp.compile(net, training=True, optimizer=cnncomp.optim.SGD(0.05),
                              distributed="mpi")   # or distributed=cnncomp.distributed.MPI(...)
    trainer.fit(x, y, epochs=10, batch_size=64)    # batch_size: the GLOBAL batch
    loss = trainer.step(x_shard, y_shard)          # or step on this rank's shard yourself

What happens:

* ``compile`` imports mpi4py, duplicates COMM_WORLD, limits each rank's kernels to
  ``cores // ranks_on_this_host`` threads (Numba and BLAS), and installs an excepthook
  that calls ``MPI_Abort`` when a rank raises, so the others do not wait forever.
* The ``insert_allreduce`` pass puts bucketed ``allreduce_start``/``allreduce_wait`` ops
  into the training graph before the optimizer updates: every rank applies the
  batch-weighted mean of all ranks' gradients (exactly the gradient of the global batch's
  mean loss), and ``step`` returns the global mean loss.
* The trainer broadcasts rank 0's state (parameters, running statistics, optimizer state)
  at construction, so all ranks start equal and stay equal.
* BatchNorm: by default each rank normalizes with its own shard's statistics (what
  Horovod and PyTorch DDP do) and the running statistics are averaged over ranks every
  step (inside the last gradient bucket). ``MPI(sync_batch_norm=True)`` normalizes with
  the statistics of the global batch instead (one all-gather per BN layer forward, one
  all-reduce backward): training then equals one process on the global batch.
* ``fit`` draws one permutation per epoch from (seed, epoch), identical on every rank,
  cuts it into global batches of ``batch_size`` and gives rank r the r-th of
  ``np.array_split(batch, ranks)``: the ranks see disjoint parts of every batch, and the
  global batches do not depend on the number of ranks. Augmentation draws from a per-rank
  stream derived from the epoch's seed. Only rank 0 shows progress; ``save`` writes on
  rank 0 only (every rank holds the same state). ``evaluate``/``predict`` split the array
  across ranks and gather the logits on every rank; ``predict(model, x)`` does the same for
  any compiled inference model.
* Faults: every collective polls with a deadline (``MPI(timeout=...)``, default 300 s): a
  rank that died or hung makes the others raise ``CommTimeout``, which the excepthook
  turns into ``MPI_Abort`` of the whole job. mpiexec (MPICH's hydra) also ends the job as
  soon as a rank is killed or exits with an error.
* A checkpoint is rank-independent: ``cnncomp.load_trainer(path, distributed="mpi")``
  resumes with any number of ranks (or ``distributed=None``: one process).
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np

from .errors import CnnCompError, InputError
from .passes.insert_allreduce import SAMPLE_OFFSET
from .trainer import Trainer

DEFAULT_BUCKET_BYTES = 1 << 20


@dataclass(frozen=True)
class MPI:
    """Options of ``compile(..., distributed=MPI(...))``; ``distributed="mpi"`` = ``MPI()``.

    sync_batch_norm: BatchNorm statistics over the global batch (default: per rank).
    bucket_bytes: gradients are all-reduced in buckets of about this many bytes, in the
      order the backward pass completes them (``0``: one message per parameter).
    overlap: start each bucket's all-reduce as soon as it is complete and wait for all of
      them after the backward pass (default: wait right away).
    timeout: seconds a rank waits for the others in any collective before it gives up.
    threads: kernel threads per rank (default: cores // ranks on this host, at least 1).
    """
    sync_batch_norm: bool = False
    bucket_bytes: int = DEFAULT_BUCKET_BYTES
    overlap: bool = False
    timeout: float = float(os.environ.get("CNNCOMP_MPI_TIMEOUT", 300.0))
    threads: Optional[int] = None


class _State:
    comm: Any = None
    world: Any = None
    local_ranks: int = 1
    blas_limits: Any = None


def config(distributed: Any) -> MPI:
    """Normalize the ``distributed=`` argument of compile."""
    if isinstance(distributed, MPI):
        return distributed
    if isinstance(distributed, str) and distributed.lower() == "mpi":
        return MPI()
    raise ValueError(f"distributed= takes 'mpi' or cnncomp.distributed.MPI(...), got "
                     f"{distributed!r}")


def _mpi() -> Any:
    try:
        from mpi4py import MPI as _M
    except ImportError:
        raise CnnCompError(
            "distributed='mpi' needs mpi4py and an MPI library: pip install "
            "'cnncomp[distributed]' (mpi4py and mpich), then launch the script with "
            "mpiexec -n 2 python script.py") from None
    return _M


def init(cfg: Optional[MPI] = None) -> Any:
    """Set up MPI for cnncomp (idempotent; collective on first call): returns the
    communicator the kernels use. ``compile(..., distributed=...)`` calls it."""
    cfg = cfg or MPI()
    mpi = _mpi()
    from runtime.cpu import comm as rc  # selects Numba's threading layer first
    if _State.comm is None:
        world = mpi.COMM_WORLD
        _State.world = world
        _State.comm = world.Dup()
        node = world.Split_type(mpi.COMM_TYPE_SHARED)
        _State.local_ranks = node.Get_size()
        node.Free()
        if world.Get_size() > 1:
            _install_excepthook(world)
    rc.configure(_State.comm, cfg.timeout)
    _limit_threads(cfg.threads)
    return _State.comm


def rank() -> int:
    """This process's rank in COMM_WORLD (0 without mpiexec)."""
    return _mpi().COMM_WORLD.Get_rank()


def size() -> int:
    """The number of ranks in COMM_WORLD (1 without mpiexec)."""
    return _mpi().COMM_WORLD.Get_size()


def threads_per_rank(threads: Optional[int] = None) -> int:
    if threads:
        return int(threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
    return max(1, cores // max(_State.local_ranks, 1))


def _limit_threads(threads: Optional[int]) -> None:
    """As many kernel threads per rank as leaves one core per thread on this host."""
    import numba
    n = threads_per_rank(threads)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # BLAS keeps its own default (OPENBLAS_NUM_THREADS)
        return
    _State.blas_limits = threadpool_limits(limits=n, user_api="blas")


def _install_excepthook(world: Any) -> None:
    """An uncaught exception on any rank aborts the whole job (after printing it)."""
    previous = sys.excepthook

    def hook(tp, value, tb):
        try:
            # the one-line cause first: when a rank aborts, mpiexec may stop forwarding
            # output before a long traceback is through (seen under load in CI)
            sys.stderr.write(f"cnncomp.distributed: rank {world.Get_rank()} of "
                             f"{world.Get_size()} stopped with {tp.__name__}: {value}\n")
            sys.stderr.flush()
            previous(tp, value, tb)
            sys.stderr.write("cnncomp.distributed: aborting every rank (MPI_Abort)\n")
            sys.stdout.flush()
            sys.stderr.flush()
            time.sleep(0.2)  # let mpiexec forward what was written before the abort
        finally:
            world.Abort(1)
    sys.excepthook = hook


def predict(model: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int = 256,
            comm: Any = None) -> np.ndarray:
    """``model(x)`` over a large array split across ranks: rank r computes the r-th of
    ``np.array_split(x, ranks)`` (in batches) and every rank gets all the outputs."""
    from runtime.cpu import comm as rc
    if comm is None:
        comm = init() if _State.comm is None else _State.comm
    r, n_ranks = comm.Get_rank(), comm.Get_size()
    counts = np.array([len(a) for a in np.array_split(np.arange(len(x)), n_ranks)])
    lo = int(counts[:r].sum())
    part = x[lo:lo + counts[r]]
    probe = part if len(part) else x[:1]
    outs = [model(probe[i:i + batch_size]) for i in range(0, len(probe), batch_size)]
    local = np.ascontiguousarray(np.concatenate(outs)[:len(part)], np.float32)
    row = int(np.prod(local.shape[1:]))
    result = np.empty((len(x), *local.shape[1:]), np.float32)
    rc.allgatherv(local, result, counts * row, "the predictions (allgatherv)")
    return result


class DistributedTrainer(Trainer):
    """A ``Trainer`` whose graph averages gradients over MPI ranks (see the module doc)."""

    def __init__(self, *args: Any, config: MPI, **kwargs: Any):
        from runtime.cpu import comm as rc
        self.config = config
        self.comm = rc.communicator()
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        super().__init__(*args, **kwargs)
        self._has_bn = any(n.op.value == "batch_norm_train" for n in self.graph.nodes)
        self._offset_hint: Optional[int] = None
        self._broadcast_state()

    def _broadcast_state(self) -> None:
        """Every rank starts from rank 0's parameters, statistics and optimizer state."""
        from runtime.cpu import comm as rc
        keys = sorted(self.state)
        flat = np.concatenate([self.state[k].reshape(-1).view(np.uint8) for k in keys])
        rc.broadcast(flat, 0, "the initial state (broadcast from rank 0)")
        at = 0
        for k in keys:
            dst = self.state[k].reshape(-1).view(np.uint8)
            dst[:] = flat[at:at + dst.size]
            at += dst.size

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One step on this rank's shard; returns the mean loss over all ranks' shards.

        Every rank must call it (the same number of times); shards may differ in size:
        the update uses the batch-weighted mean gradient."""
        offset = self.state.get(SAMPLE_OFFSET)
        if offset is not None:  # dropout masks keyed by the global sample index
            if self._offset_hint is not None:  # fit knows where its shard starts
                offset[0] = self._offset_hint
            else:
                from runtime.cpu import comm as rc
                sizes = np.empty(self.world_size, np.float64)
                rc.allgather(np.array([len(x)], np.float64), sizes, "the shard sizes (dropout)")
                offset[0] = sizes[:self.rank].sum()
        self._offset_hint = None
        return super().step(x, y)

    # -------------------------------------------------------------- fit hooks
    def _epoch_batches(self, x: np.ndarray, y: np.ndarray, batch_size: int,
                       rng: np.random.Generator, shuffle: bool, drop_last: bool,
                       augment: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This rank's shard of each global batch (the permutation is the same on all)."""
        if batch_size < self.world_size:
            raise InputError(f"fit: batch_size={batch_size} is the global batch, split over "
                             f"{self.world_size} ranks; it must be at least {self.world_size}")
        order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
        aug_rng = np.random.default_rng([int(rng.integers(2**62)), self.rank])
        stop = len(x) - len(x) % batch_size if drop_last else len(x)
        least = (2 if self._has_bn else 1) * self.world_size
        for i in range(0, stop, batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < least:  # a last partial batch too small to share
                continue
            parts = np.array_split(idx, self.world_size)
            mine = parts[self.rank]
            xb = x[mine]
            if augment is not None:
                xb = augment(xb, aug_rng)
            self._offset_hint = sum(len(p) for p in parts[:self.rank])
            yield xb, y[mine]

    def _reduce_counts(self, correct: int, seen: int) -> tuple[int, int]:
        from runtime.cpu import comm as rc
        buf = np.array([correct, seen], np.float64)
        rc.allreduce_sum(buf, "the epoch's accuracy counts")
        return int(buf[0]), int(buf[1])

    # -------------------------------------------------------------- inference, checkpoints
    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits of ``x``, computed a slice per rank and gathered on every rank."""
        return predict(self._inference_model(), x, batch_size, self.comm)

    @contextmanager
    def _rank_independent_state(self) -> Iterator[None]:
        offset = self.state.pop(SAMPLE_OFFSET, None)
        try:
            yield
        finally:
            if offset is not None:
                self.state[SAMPLE_OFFSET] = offset

    def save(self, path: str) -> None:
        """Write the checkpoint on rank 0 (the state is the same on every rank)."""
        if self.rank != 0:
            return
        with self._rank_independent_state():
            super().save(path)

    def restore(self, path: str) -> None:
        with self._rank_independent_state():
            super().restore(path)

    def comm_stats(self) -> dict[str, float]:
        """Seconds, calls and bytes of communication so far on this rank (all collectives,
        packing and waiting included)."""
        from runtime.cpu import comm as rc
        return dict(rc.STATS)

    def __repr__(self) -> str:
        return (f"<DistributedTrainer {self.source_graph.name!r} rank {self.rank}/"
                f"{self.world_size} optimizer={self.optimizer} steps={self.steps}>")
