"""``compile()`` and ``load()``: the two entry points."""
from __future__ import annotations

import os
from typing import Any, Iterable

from .compiled import CompileOptions, CompiledModel
from .errors import CnnCompError
from .ir import Graph
from .passes import DumpInstrument, PassContext, PassManager, VerifyInstrument, default_pipeline

TARGETS = ("cpu", "cuda")
LAYOUTS = ("auto", "NCHW", "NHWC", "NCHWc")


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
            **kwargs: Any) -> Any:
    """Optimize ``net`` and lower it for ``target``; returns a callable CompiledModel.

    training=True (with ``loss="cross_entropy"`` and ``optimizer=cnncomp.optim.SGD(...)``)
    returns a ``Trainer`` instead: the graph gains the loss, the backward pass made by the
    ``differentiate`` pass and the optimizer updates, then goes through the same passes.

    fuse=False gives the unfused baseline (no BN folding, no fusion); ``disable`` turns
    off passes by name; ``dump_dir`` writes the graph after each pass (text and DOT);
    ``verify`` checks the graph after every pass and the memory plan for overlaps.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known targets: {', '.join(TARGETS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    loss = kwargs.pop("loss", None)
    optimizer = kwargs.pop("optimizer", None)
    distributed = kwargs.pop("distributed", None)
    if kwargs:
        raise TypeError(f"compile() got unexpected arguments {sorted(kwargs)}")
    if training:
        from .optim import SGD, Optimizer
        optimizer = SGD(lr=0.01) if optimizer is None else optimizer
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a cnncomp.optim optimizer (SGD, Adam, "
                            f"Adagrad), got {type(optimizer).__name__}")
        loss = loss or "cross_entropy"
    elif loss is not None or optimizer is not None or distributed:
        raise TypeError("loss=, optimizer= and distributed= need training=True (split "
                        "inference over ranks with cnncomp.distributed.predict)")
    if target == "cuda":
        _require_cuda()
        if layout not in ("auto", "NCHW"):
            raise CnnCompError(f"target='cuda' runs NCHW kernels only, layout={layout!r} "
                               "is CPU-only; use layout='NCHW' or 'auto'")
        layout = "NCHW"  # the CUDA kernels are NCHW: no layout search
    # CNNCOMP_VERIFY=1 turns verification on for every compile (the test suite sets it)
    verify = verify or os.environ.get("CNNCOMP_VERIFY") == "1"
    source = _as_graph(net)
    disable = tuple(disable)
    dist = None
    if distributed:  # data-parallel training over MPI ranks (cnncomp/distributed.py)
        from . import distributed as _dist
        if target != "cpu":
            raise CnnCompError("distributed training runs on target='cpu'")
        dist = _dist.config(distributed)
        _dist.init(dist)
    names = default_pipeline(fuse=fuse, training=training, opt_level=opt_level,
                             disable=disable, distributed=dist is not None)
    instruments = [VerifyInstrument()] if verify else []
    if dump_dir:
        instruments.append(DumpInstrument(dump_dir))
    ctx = PassContext(target=target, training=training, opt_level=opt_level, layout=layout,
                      loss=loss or "cross_entropy", optimizer=optimizer, distributed=dist)
    graph, records = PassManager(names, ctx, instruments).run(source)
    options = CompileOptions(target=target, fuse=fuse, opt_level=opt_level, layout=layout,
                             disable=disable, check_finite=check_finite, passes=tuple(names),
                             verify=verify)
    if training and dist is not None:
        return _dist.DistributedTrainer(source, graph, options, optimizer, loss, records,
                                        config=dist)
    if training:
        from .trainer import Trainer
        return Trainer(source, graph, options, optimizer, loss, records)
    return CompiledModel(graph, options, source, records)


def _require_cuda() -> None:
    """A clear CnnCompError unless the CUDA target can run here (a GPU, or the simulator)."""
    from runtime.cuda_status import unavailable_reason
    reason = unavailable_reason()
    if reason is not None:
        raise CnnCompError(f"target='cuda' cannot run: {reason}; or use target='cpu'")


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
    if options.target == "cuda":
        _require_cuda()
    return CompiledModel(graph, options, graph, [])
