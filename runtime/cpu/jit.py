"""Numba settings and small helpers shared by the CPU kernels."""
import hashlib
import os
from pathlib import Path

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


# ------------------------------------------------------------ the kernel cache on disk

STAMP = "cnncomp-kernel-sources.sha1"


def _cache_dir() -> "Path | None":
    """The directory where Numba keeps this package's compiled kernels (its own choice of
    locator for these source files: __pycache__ beside them, or under NUMBA_CACHE_DIR)."""
    from numba.core import caching, config
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    if impl is None or getattr(config, "CACHE_LOCATOR_CLASSES", None):
        return None  # another Numba, or the user's own locators: leave it to Numba
    for cls in impl._locator_classes:
        loc = cls.from_function(valid_range.py_func, valid_range.py_func.__code__.co_filename)
        if loc is not None:
            return Path(loc.get_cache_path())
    return None


def drop_stale_caches() -> None:
    """Delete the kernels Numba cached from other versions of these sources.

    Numba checks a cached function against the timestamp of the file that defines it,
    not of the files it inlines or calls: after an update that changed only simd.py,
    every kernel built on its intrinsics would load the old machine code. So the cache
    is stamped with a digest of all of runtime/cpu's sources and emptied when they
    change (the kernels then compile once). Best effort: a cache we cannot read or
    write is left to Numba."""
    try:
        src = Path(__file__).parent
        digest = hashlib.sha1()
        for p in sorted(src.glob("*.py")):
            digest.update(p.name.encode() + b"\0" + p.read_bytes())
        cache = _cache_dir()
        if cache is None or not cache.is_dir():
            return
        stamp = cache / STAMP
        if stamp.exists() and stamp.read_text().strip() == digest.hexdigest():
            return
        for p in list(cache.glob("*.nbi")) + list(cache.glob("*.nbc")):
            p.unlink(missing_ok=True)
        tmp = cache / f"{STAMP}.{os.getpid()}"
        tmp.write_text(digest.hexdigest())
        os.replace(tmp, stamp)
    except Exception:  # noqa: BLE001 (a read-only or odd cache: Numba's own checks apply)
        return
