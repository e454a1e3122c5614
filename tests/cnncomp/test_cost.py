"""cnncomp.cost: measured conv costs drive select_layout, are cached on disk and reused."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cnncomp
import frontend as fe
from cnncomp import cost
from cnncomp.ops import Op
from tests.helpers import rel_err


def net():
    x = fe.Input((3, 10, 10), name="x")
    h = fe.ReLU(name="r1")(fe.Conv2d(16, 3, padding=1, name="c1")(x))
    h = fe.ReLU(name="r2")(fe.Conv2d(32, 3, padding=1, name="c2")(h))
    return fe.Model(x, fe.Linear(5, name="fc")(fe.GlobalAvgPool2d(name="gap")(h)), name="tiny")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache file, and the in-memory copy forgotten before and after."""
    monkeypatch.setenv("CNNCOMP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CNNCOMP_LAYOUT_COST", "measured")
    monkeypatch.setattr(cost, "_loaded_from", None)
    yield tmp_path / "kernel_costs.json"
    cost._loaded_from = None


def conv_layouts(model):
    return {n.name: model.graph.values[n.outputs[0]].layout for n in model.graph.nodes
            if n.op is Op.CONV2D}


def test_costs_are_measured_once_then_read_from_disk(cache, monkeypatch):
    m = cnncomp.compile(net())
    data = json.loads(cache.read_text())
    keys = list(data["costs"])
    # both convs in every layout (the 3-channel c1 in NCHW16c reads its input in NCHW)
    for layout, convs in (("NCHW", 2), ("NCHW16c", 2), ("NHWC", 2)):
        assert sum(f"|conv2d/{layout}/" in k for k in keys) == convs, keys
    assert all(v > 0 for v in data["costs"].values())
    # a new process (the in-memory copy forgotten) reads the file and times nothing
    monkeypatch.setattr(cost, "_loaded_from", None)
    monkeypatch.setattr(cost, "_time_convs", lambda *a: pytest.fail("measured again"))
    m2 = cnncomp.compile(net())
    x = np.random.default_rng(0).standard_normal((2, 3, 10, 10)).astype(np.float32)
    assert rel_err(m2(x), m(x)) < 1e-5


@pytest.mark.parametrize("fastest", ["NHWC", "NCHW16c", "NCHW"])
def test_auto_follows_the_measured_costs(cache, monkeypatch, fastest):
    seconds = {"NCHW": 1e-3, "NCHW16c": 1e-3, "NHWC": 1e-3, fastest: 1e-5}
    monkeypatch.setattr(cost, "_time_convs",
                        lambda specs, target: [seconds[s[0]] for s in specs])
    m = cnncomp.compile(net())
    # c1 reads 3 channels: blocked, it reads them in NCHW (13 of 16 would be padding)
    assert conv_layouts(m) == {"c1": fastest, "c2": fastest}
    if fastest == "NCHW16c":
        assert m.graph.node("c1").inputs[0] == "x"
    x = np.random.default_rng(1).standard_normal((3, 3, 10, 10)).astype(np.float32)
    assert rel_err(m(x), cnncomp.compile(net(), layout="NCHW")(x)) < 1e-5


def test_each_convs_layouts_are_timed_together(cache, monkeypatch):
    """The machine's speed drifts over minutes: one conv's layouts are compared only when
    timed moments apart, so the timing runs conv by conv, not layout by layout."""
    groups = []

    def fake(specs, target):
        groups.append([(s[2][0], s[0]) for s in specs])
        return [1e-3] * len(specs)
    monkeypatch.setattr(cost, "_time_convs", fake)
    cnncomp.compile(net())
    assert groups == [[(16, "NCHW"), (16, "NCHW16c"), (16, "NHWC")],
                      [(32, "NCHW"), (32, "NCHW16c"), (32, "NHWC")]]


def test_a_convs_layouts_are_timed_round_robin_best_round_kept(monkeypatch):
    """Within one conv the layouts take turns, so a slow second of the machine falls on
    all of them: one warm-up call each, then RUNS rounds of one call each."""
    calls, clock = [], [0.0]
    slow = {("NHWC", 1): 5.0}  # NHWC's first timed call hit a slow moment

    def bind(layout, *a, batch=None):
        def run():
            n = sum(c == layout for c in calls) - 1  # timed calls of this layout so far
            calls.append(layout)
            clock[0] += slow.get((layout, n), {"NCHW": 2.0, "NHWC": 1.0}[layout])
        return run, 4
    monkeypatch.setattr(cost, "_bind_conv", bind)
    monkeypatch.setattr(cost.time, "perf_counter", lambda: clock[0])
    spec = ((1, 16, 8, 8), (16, 16, 3, 3), (1, 16, 8, 8), {})
    t = cost._time_convs([("NCHW", *spec), ("NHWC", *spec)], "cpu")
    assert calls == ["NCHW", "NHWC"] * (1 + cost.RUNS)
    assert t == [2.0 / 4, 1.0 / 4]  # the best round per image


def test_a_layout_without_a_kernel_for_the_conv_is_remembered_as_unavailable(cache,
                                                                             monkeypatch):
    def bind(layout, *a, batch=None):
        if layout == "NHWC":
            raise NotImplementedError("no such kernel")
        return (lambda: None), 1
    monkeypatch.setattr(cost, "_bind_conv", bind)
    spec = ((1, 16, 8, 8), (16, 16, 3, 3), (1, 16, 8, 8),
            dict(kernel_size=(3, 3), stride=(1, 1), padding=(1,) * 4, dilation=(1, 1),
                 groups=1))
    assert cost.conv_seconds("NHWC", *spec) is None
    assert cost.conv_seconds("NCHW", *spec) > 0
    assert any(v == -1.0 for v in json.loads(cache.read_text())["costs"].values())


def test_model_mode_measures_nothing(cache, monkeypatch):
    monkeypatch.setenv("CNNCOMP_LAYOUT_COST", "model")
    monkeypatch.setattr(cost, "_time_convs", lambda *a: pytest.fail("measured"))
    cnncomp.compile(net())
    assert not cache.exists()
    monkeypatch.setenv("CNNCOMP_LAYOUT_COST", "fast")
    with pytest.raises(ValueError, match="CNNCOMP_LAYOUT_COST='fast'.*measured.*model"):
        cnncomp.compile(net())


def test_a_corrupt_cache_file_is_measured_again_and_rewritten(cache):
    cache.write_text("{not json")
    cnncomp.compile(net())
    assert len(json.loads(cache.read_text())["costs"]) == 6  # 2 convs x 3 layouts


def test_timings_of_older_kernel_sources_are_dropped_other_cpus_kept(cache):
    cpu = cost._cpu_and_kernels().rsplit("/kernels=", 1)[0]
    stale = f"{cpu}/kernels=000000000000/threads=2|conv2d/NCHW/x"
    other = "some-other-cpu/avx2/kernels=000000000000/threads=2|conv2d/NCHW/x"
    cache.write_text(json.dumps({"version": cost.VERSION, "costs": {stale: 1.0, other: 2.0}}))
    cnncomp.compile(net())
    costs = json.loads(cache.read_text())["costs"]
    assert stale not in costs and costs[other] == 2.0 and len(costs) == 1 + 6


# ------------------------------------------------- compiling in a helper process (cold start)

def specs_of(layouts):
    attrs = dict(kernel_size=(3, 3), stride=(1, 1), padding=(1,) * 4, dilation=(1, 1),
                 groups=1)
    return [(lay, (1, 16, 6, 6), (16, 16, 3, 3), (1, 16, 6, 6), attrs) for lay in layouts]


def test_the_blocked_kernels_are_compiled_here_the_others_in_the_helper():
    """Split by kernel: an NCHW conv of 16+ channels runs the blocked kernels too, so it
    compiles with the NCHW16c specs; a stem's planar-input build goes to the helper."""
    (nchw, blocked, nhwc) = specs_of(["NCHW", "NCHW16c", "NHWC"])
    assert cost._runs_blocked(nchw) and cost._runs_blocked(blocked)
    assert not cost._runs_blocked(nhwc)
    attrs = blocked[4]
    stem = ("NCHW16c", (1, 3, 6, 6), (16, 3, 3, 3), (1, 16, 6, 6), attrs)
    assert not cost._runs_blocked(stem)
    assert not cost._runs_blocked(("NCHW",) + stem[1:])
    depthwise = ("NCHW", (1, 32, 6, 6), (32, 1, 3, 3), (1, 32, 6, 6), dict(attrs, groups=32))
    assert not cost._runs_blocked(depthwise)  # the NCHW depthwise kernel
    assert cost._runs_blocked(("NCHW16c",) + depthwise[1:])


def test_measure_compiles_the_blocked_kernels_here_the_rest_in_a_helper(cache, monkeypatch):
    monkeypatch.setenv("CNNCOMP_COMPILE_PROCESSES", "2")
    monkeypatch.setattr(cost, "WARM_CACHE_S", 0.0)  # as if this share compiled cold
    compiled_here, helpers = [], []
    real_popen = subprocess.Popen

    def popen(cmd, **kw):
        helpers.append(cmd)
        return real_popen(cmd, **kw)
    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(cost, "_compile",
                        lambda specs, target, desc=None: compiled_here.extend(specs))
    specs = specs_of(["NCHW", "NCHW16c", "NHWC"])
    cost.measure(specs)
    assert len(helpers) == 1
    assert [s[0] for s in compiled_here] == ["NCHW", "NCHW16c"]
    assert all(cost.conv_seconds(*s) > 0 for s in specs)  # then every layout was timed


def test_with_a_warm_kernel_cache_the_helper_is_stopped_and_its_share_loaded_here(
        cache, monkeypatch):
    """This process's share took less than WARM_CACHE_S: it came from Numba's disk cache,
    and so will the helper's, faster here than a new interpreter starts."""
    monkeypatch.setenv("CNNCOMP_COMPILE_PROCESSES", "2")
    monkeypatch.setattr(cost, "WARM_CACHE_S", 60.0)
    compiled_here, helpers = [], []
    real_popen = subprocess.Popen

    def popen(cmd, **kw):  # a helper that would take long: it must not be waited for
        helpers.append(real_popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                  **kw))
        return helpers[-1]
    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(cost, "_compile",
                        lambda specs, target, desc=None: compiled_here.extend(specs))
    specs = specs_of(["NCHW", "NCHW16c", "NHWC"])
    start = time.perf_counter()
    cost.measure(specs)
    assert time.perf_counter() - start < 30
    assert helpers[0].poll() is not None  # stopped
    assert [s[0] for s in compiled_here] == ["NCHW", "NCHW16c", "NHWC"]
    assert all(cost.conv_seconds(*s) > 0 for s in specs)


def test_the_helper_entry_point_compiles_pickled_specs(tmp_path):
    """What the helper runs, in a fresh interpreter: it must import from any directory."""
    specs = specs_of(["NHWC"])
    p = subprocess.run([sys.executable, "-c",
                        "from cnncomp.cost import _helper_main; _helper_main()"],
                       input=pickle.dumps((specs, "cpu")), capture_output=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(Path(cost.__file__).parents[1])},
                       timeout=600)
    assert p.returncode == 0, p.stderr.decode()[-2000:]


@pytest.mark.parametrize("broken", ["missing", "exits at once"])
def test_a_helper_that_cannot_start_or_dies_only_costs_time(cache, monkeypatch, tmp_path,
                                                            broken):
    monkeypatch.setenv("CNNCOMP_COMPILE_PROCESSES", "2")
    exe = tmp_path / "no-such-python" if broken == "missing" else "/bin/false"
    monkeypatch.setattr(sys, "executable", str(exe))
    specs = specs_of(["NCHW", "NHWC"])
    cost.measure(specs)
    assert all(cost.conv_seconds(*s) > 0 for s in specs)


def test_one_compile_process_starts_no_helper(cache, monkeypatch):
    monkeypatch.setenv("CNNCOMP_COMPILE_PROCESSES", "1")
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("helper started"))
    cost.measure(specs_of(["NCHW", "NHWC"]))
    monkeypatch.setenv("CNNCOMP_COMPILE_PROCESSES", "many")
    with pytest.raises(ValueError, match="CNNCOMP_COMPILE_PROCESSES='many'.*use 1.*or 2"):
        cost.compile_processes()


def test_an_interrupted_compile_stops_the_helper(cache, monkeypatch):
    monkeypatch.setenv("CNNCOMP_COMPILE_PROCESSES", "2")
    helpers = []
    real_popen = subprocess.Popen

    def popen(cmd, **kw):
        helpers.append(real_popen(cmd, **kw))
        return helpers[-1]

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(cost, "_compile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cost.measure(specs_of(["NCHW", "NHWC"]))
    assert helpers and helpers[0].poll() is not None  # killed, not waited for
