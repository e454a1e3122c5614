"""Numba settings and small helpers shared by the CPU kernels."""
import numba
from numba.core.cpu import ParallelOptions

# ``parallel=`` for every kernel with a prange loop. Parfor fusion merges adjacent
# parallel loops of equal range; ours are written as the parallel regions they should be,
# and the fusion pass alone took 1.5-2 s of the compile of each large kernel (the direct
# and blocked convs). An instance, not a dict: Numba pops a dict's keys on the first
# compile, so a second signature would compile with the defaults.
PARALLEL = ParallelOptions({"fusion": False})


@numba.njit(cache=True, inline="always")
def valid_range(n_out, n_in, stride, pad, offset):
    """Outputs o in [lo, hi) whose input index o*stride - pad + offset is in [0, n_in)."""
    start = pad - offset  # need o*stride >= start
    lo = 0 if start <= 0 else (start + stride - 1) // stride
    end = n_in + pad - offset  # need o*stride < end
    hi = 0 if end <= 0 else min(n_out, (end + stride - 1) // stride)
    return lo, max(lo, hi)


def parallel_and_serial(fn, **options):
    """(parallel, serial) compilations of one loop written with ``prange``: for kernels
    whose small calls (a bias, a BN scale) cost less than a parallel region, and would
    wake the pool's other thread once more per step. ``options`` go to both (fastmath)."""
    return (numba.njit(cache=True, parallel=PARALLEL, **options)(fn),
            numba.njit(cache=True, **options)(fn))


def by_size(kernels, n: int, parallel_min: int):
    """The parallel one of ``parallel_and_serial``'s pair from ``parallel_min`` elements."""
    return kernels[0] if n >= parallel_min else kernels[1]
