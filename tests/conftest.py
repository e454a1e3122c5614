"""Test-wide settings: every compile in the tests verifies the graph after each pass and
proves the memory plan has no overlapping live buffers; kernel timings for the layout
pass are cached in a scratch folder.

CUDA: unless pytest runs with ``--run-cuda`` (on a GPU machine), the CUDA tests run the
kernels under the CUDA simulator. numba.cuda picks the simulator when it is first
imported, so the environment is set here, in pytest_configure, before any test module
(and so numba) is imported; pytest-xdist workers run it too. Tests marked ``cuda`` need
a real GPU and run only with ``--run-cuda``.
"""
import os
import tempfile

import pytest

os.environ.setdefault("CNNCOMP_VERIFY", "1")
# pytest's plugins load numpy before cnncomp can set this (runtime/__init__.py); set here, it
# reaches the subprocesses the tests start (examples, MPI ranks) and silences the warning
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
# measured conv costs (select_layout) go to a scratch folder, not the user's ~/.cache
os.environ.setdefault("CNNCOMP_CACHE_DIR", tempfile.mkdtemp(prefix="cnncomp-test-cache-"))
# no compile helper process per compile: xdist already keeps both cores busy, and many tests
# time layouts in a fresh cost cache (tests/cnncomp/test_cost.py covers the helper)
os.environ.setdefault("CNNCOMP_COMPILE_PROCESSES", "1")


def pytest_addoption(parser):
    parser.addoption("--run-cuda", action="store_true", default=False,
                     help="run the CUDA tests on the real GPU (default: the CUDA simulator) "
                          "and the tests marked `cuda`")


def pytest_configure(config):
    if not config.getoption("--run-cuda"):
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-cuda"):
        return
    skip = pytest.mark.skip(reason="needs a real GPU: run pytest --run-cuda on a GPU machine")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
