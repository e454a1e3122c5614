"""runtime.cpu picks Numba's threading layer (TBB when the wheel is there); nothing in a
compile may start Numba's threads before it does, or Numba silently takes its default."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("layout,asked", [("auto", None), ("NCHWc", None), ("NCHWc", "tbb")])
def test_a_compile_runs_on_the_threading_layer_runtime_cpu_chose(tmp_path, layout, asked):
    # asked: NUMBA_THREADING_LAYER, which the README offers (TBB for forked workers)
    # 16 input channels: the conv runs in NCHW16c when forced (a stem's few do not)
    code = ("import cnncomp, numba, numpy as np\n"
            "import frontend as fe\n"
            "x = fe.Input((16, 12, 12), name='x')\n"
            "net = fe.Model(x, fe.ReLU()(fe.Conv2d(32, 3, padding=1)(x)))\n"
            f"m = cnncomp.compile(net, layout={layout!r})\n"
            "m(np.zeros((4, 16, 12, 12), np.float32))\n"
            "print(numba.config.THREADING_LAYER, numba.threading_layer())\n")
    env = dict(os.environ, CNNCOMP_CACHE_DIR=str(tmp_path), CNNCOMP_LAYOUT_COST="measured")
    env.pop("NUMBA_THREADING_LAYER", None)
    if asked:
        env["NUMBA_THREADING_LAYER"] = asked
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    chosen, running = r.stdout.split()[-2:]
    assert running == chosen == (asked or chosen), (chosen, running)


def test_a_forked_child_runs_a_model_the_parent_ran(tmp_path):
    # GNU OpenMP cannot restart its threads after fork (Numba would terminate the child):
    # the child must run the kernels on one thread and get the parent's answer
    code = ("import cnncomp, json, numba, numpy as np, multiprocessing as mp\n"
            "import frontend as fe\n"
            "x = fe.Input((16, 12, 12), name='x')\n"
            "net = fe.Model(x, fe.ReLU()(fe.Conv2d(32, 3, padding=1)(x)))\n"
            "m = cnncomp.compile(net, layout='NCHWc')\n"
            "a = np.random.default_rng(0).standard_normal((4, 16, 12, 12)).astype(np.float32)\n"
            "y = m(a)\n"
            "def child(_):\n"
            "    return m(a), numba.get_num_threads()\n"
            "with mp.get_context('fork').Pool(2) as pool:\n"
            "    outs = pool.map(child, range(2))\n"
            "assert all(np.array_equal(o, y) for o, _ in outs)\n"
            "print(json.dumps([numba.threading_layer(), [n for _, n in outs], "
            "numba.get_num_threads()]))\n")
    env = dict(os.environ, CNNCOMP_CACHE_DIR=str(tmp_path), CNNCOMP_LAYOUT_COST="model")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=180)  # a hang: the child waits for threads
    assert r.returncode == 0, r.stderr[-3000:]
    layer, child_threads, parent_threads = json.loads(r.stdout.splitlines()[-1])
    if layer == "omp":
        assert child_threads == [1, 1] and parent_threads == numba.config.NUMBA_NUM_THREADS
