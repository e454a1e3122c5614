"""Numba settings shared by the CPU kernels."""
from numba.core.cpu import ParallelOptions

# ``parallel=`` for every kernel with a prange loop. Parfor fusion merges adjacent
# parallel loops of equal range; ours are written as the parallel regions they should be,
# and the fusion pass alone took 1.5-2 s of the compile of each large kernel (the direct
# and blocked convs). An instance, not a dict: Numba pops a dict's keys on the first
# compile, so a second signature would compile with the defaults.
PARALLEL = ParallelOptions({"fusion": False})
