"""``compile()`` and ``load()``: the two entry points."""
from __future__ import annotations

import os
from typing import Any, Iterable

from .compiled import CompileOptions, CompiledModel
from .errors import CnnCompError
from .ir import Graph
from .passes import DumpInstrument, PassContext, PassManager, VerifyInstrument, default_pipeline

TARGETS = ("cpu", "cuda")
LAYOUTS = ("auto", "NCHW", "NCHWc")


def _as_graph(net: Any) -> Graph:
    if isinstance(net, Graph):
        return net
    to_graph = getattr(net, "to_graph", None)
    if to_graph is None:
        raise TypeError(f"compile() takes a network (fe.Sequential / fe.Model), an imported "
                        f"graph or a cnncomp.Graph, got {type(net).__name__}")
    return to_graph()


def compile(net: Any, target: str = "cpu", *, fuse: bool = True, training: bool = False,
            opt_level: int = 2, layout: str = "auto", disable: Iterable[str] = (),
            check_finite: bool = False, dump_dir: str | None = None, verify: bool = False,
            **kwargs: Any) -> CompiledModel:
    """Optimize ``net`` and lower it for ``target``; returns a callable CompiledModel.

    fuse=False gives the unfused baseline (no BN folding, no fusion); ``disable`` turns
    off passes by name; ``dump_dir`` writes the graph after each pass (text and DOT);
    ``verify`` checks the graph after every pass and the memory plan for overlaps.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known targets: {', '.join(TARGETS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if training:
        raise CnnCompError("training=True is not available yet in this build of cnncomp")
    if kwargs:
        raise TypeError(f"compile() got unexpected arguments {sorted(kwargs)}")
    if target == "cuda":
        raise CnnCompError("target='cuda' is not available yet in this build of cnncomp; "
                           "use target='cpu'")
    # CNNCOMP_VERIFY=1 turns verification on for every compile (the test suite sets it)
    verify = verify or os.environ.get("CNNCOMP_VERIFY") == "1"
    source = _as_graph(net)
    disable = tuple(disable)
    names = default_pipeline(fuse=fuse, training=training, opt_level=opt_level,
                             disable=disable)
    instruments = [VerifyInstrument()] if verify else []
    if dump_dir:
        instruments.append(DumpInstrument(dump_dir))
    ctx = PassContext(target=target, training=training, opt_level=opt_level, layout=layout)
    graph, records = PassManager(names, ctx, instruments).run(source)
    options = CompileOptions(target=target, fuse=fuse, opt_level=opt_level, layout=layout,
                             disable=disable, check_finite=check_finite, passes=tuple(names),
                             verify=verify)
    return CompiledModel(graph, options, source, records)


def load(path: str) -> CompiledModel:
    """Load a model saved by ``CompiledModel.save``; kernels are bound afresh."""
    from .serialize import load_graph
    from .errors import FormatError
    graph, manifest = load_graph(path)
    if manifest.get("kind") != "compiled":
        raise FormatError(f"{path} holds a network, not a compiled model; load it with "
                          "frontend.load(path) and compile it")
    o = manifest.get("options", {})
    try:
        options = CompileOptions(target=o.get("target", "cpu"), fuse=bool(o.get("fuse", True)),
                                 opt_level=int(o.get("opt_level", 2)),
                                 layout=o.get("layout", "auto"),
                                 disable=tuple(o.get("disable", ())),
                                 check_finite=bool(o.get("check_finite", False)),
                                 passes=tuple(o.get("passes", ())))
    except (TypeError, ValueError) as e:
        raise FormatError(f"{path}: compile options are corrupt ({e})") from None
    return CompiledModel(graph, options, graph, [])
