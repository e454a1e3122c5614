"""Passes: named ``Graph -> Graph`` functions run in order by a ``PassManager``.

A pass is registered with ``@graph_pass(name, ...)``; it returns the graph it was
given when it changes nothing (so "changed" is ``new is not old``) and never mutates
its input. Instruments observe each pass: verify the graph, dump it to a folder (text
and DOT per pass, so a user can see which pass changed what), time it.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

from ..errors import GraphError, fmt_shape
from ..ir import Graph


@dataclass(frozen=True)
class PassContext:
    """What a pass may need to know about the compilation."""
    target: str = "cpu"
    training: bool = False
    opt_level: int = 2
    layout: str = "auto"
    loss: str = "cross_entropy"  # training only
    optimizer: Any = None        # training only: a cnncomp.optim optimizer
    distributed: Any = None      # training only: a cnncomp.distributed.MPI config (or None)


PassFn = Callable[[Graph, PassContext], Graph]


@dataclass(frozen=True)
class PassInfo:
    name: str
    fn: Optional[PassFn]
    opt_level: int = 1
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    fusion: bool = False        # turned off by compile(fuse=False)
    inference_only: bool = False
    doc: str = ""


PASSES: dict[str, PassInfo] = {}


def graph_pass(name: str, *, opt_level: int = 1, requires: Sequence[str] = (),
               provides: Sequence[str] = (), fusion: bool = False,
               inference_only: bool = False) -> Callable[[PassFn], PassFn]:
    """Register a graph pass under a verb-first ``name``."""
    def deco(fn: PassFn) -> PassFn:
        if name in PASSES:
            raise ValueError(f"pass {name!r} is already registered")
        PASSES[name] = PassInfo(name, fn, opt_level, tuple(requires), tuple(provides), fusion,
                                inference_only, (fn.__doc__ or "").strip().split("\n")[0])
        return fn
    return deco


def register_lowering_pass(name: str, doc: str, provides: Sequence[str] = ()) -> None:
    """A pass that runs during lowering (per batch size), not on the graph; it can be disabled."""
    PASSES[name] = PassInfo(name, None, 1, (), tuple(provides), doc=doc)


# ---------------------------------------------------------------------------- instruments

class Instrument:
    def before(self, info: PassInfo, graph: Graph) -> None: ...
    def after(self, info: PassInfo, before: Graph, after: Graph) -> None: ...


class VerifyInstrument(Instrument):
    """After each pass: the graph is well formed and its outputs keep their shapes."""

    def after(self, info, before, after):
        try:
            after.verify()
        except GraphError as e:
            raise GraphError(f"after pass {info.name!r}: {e}") from None
        if "training_graph" in info.provides:
            return  # builds a new graph with the loss as an extra output
        if len(before.outputs) != len(after.outputs):
            raise GraphError(f"pass {info.name!r} changed the number of graph outputs")
        for a, b in zip(before.outputs, after.outputs):
            sa, sb = before.values[a].shape, after.values[b].shape
            if tuple(sa) != tuple(sb):
                raise GraphError(f"pass {info.name!r} changed output {a!r} from "
                                 f"{fmt_shape(sa)} to {fmt_shape(sb)}")


class DumpInstrument(Instrument):
    """Writes ``00_input.txt/.dot`` then ``NN_<pass>.txt/.dot`` after every pass that changed."""

    def __init__(self, directory: str):
        self.dir = directory
        self.count = 0
        os.makedirs(directory, exist_ok=True)

    def write(self, stem: str, graph: Graph) -> None:
        with open(os.path.join(self.dir, f"{stem}.txt"), "w") as f:
            f.write(graph.to_text() + "\n")
        with open(os.path.join(self.dir, f"{stem}.dot"), "w") as f:
            f.write(graph.to_dot() + "\n")

    def before(self, info, graph):
        if self.count == 0:
            self.write("00_input", graph)

    def after(self, info, before, after):
        self.count += 1
        if after is not before:
            self.write(f"{self.count:02d}_{info.name}", after)


@dataclass
class PassRecord:
    name: str
    changed: bool
    seconds: float
    nodes_before: int
    nodes_after: int


# ---------------------------------------------------------------------------- manager

@dataclass
class PassManager:
    """Runs a list of registered passes in order, checking requires/provides up front."""
    names: list[str]
    ctx: PassContext = field(default_factory=PassContext)
    instruments: list[Instrument] = field(default_factory=list)

    def __post_init__(self):
        have: set[str] = set()
        for name in self.names:
            if name not in PASSES:
                raise ValueError(f"unknown pass {name!r}; known passes: {', '.join(PASSES)}")
            info = PASSES[name]
            missing = [r for r in info.requires if r not in have]
            if missing:
                raise ValueError(f"pass {name!r} requires {missing}, which no earlier pass in "
                                 f"{self.names} provides")
            have.update(info.provides)

    def run(self, graph: Graph) -> tuple[Graph, list[PassRecord]]:
        records = []
        for name in self.names:
            info = PASSES[name]
            if info.fn is None:
                continue
            for ins in self.instruments:
                ins.before(info, graph)
            t0 = time.perf_counter()
            new = info.fn(graph, self.ctx)
            dt = time.perf_counter() - t0
            for ins in self.instruments:
                ins.after(info, graph, new)
            records.append(PassRecord(name, new is not graph, dt, len(graph.nodes),
                                      len(new.nodes)))
            graph = new
        return graph, records


def _load_builtin_passes() -> None:
    from . import (differentiate, eliminate_dead_code, fold_batch_norm,  # noqa: F401
                   fold_constants, fuse_epilogues, insert_allreduce, plan_memory,
                   select_layout, use_winograd)  # (register on import)


def default_pipeline(*, fuse: bool = True, training: bool = False, opt_level: int = 2,
                     disable: Iterable[str] = (), distributed: bool = False) -> list[str]:
    """The ordered pass names for a compile, honouring fuse=False and ``disable``."""
    _load_builtin_passes()
    disable = list(disable)
    unknown = [d for d in disable if d not in PASSES]
    if unknown:
        raise ValueError(f"cannot disable unknown pass(es) {unknown}; known passes: "
                         f"{', '.join(PASSES)}")
    order = ["differentiate"] if training else []
    order += ["insert_allreduce"] if training and distributed else []
    order += ["eliminate_dead_code", "fold_constants", "fold_batch_norm", "fuse_epilogues",
             "use_winograd", "select_layout", "plan_memory"]  # (layouts timed with it)
    names = []
    for name in order:
        info = PASSES.get(name)
        if info is None or name in disable or info.opt_level > opt_level:
            continue
        if info.fusion and not fuse:
            continue
        if info.inference_only and training:
            continue
        names.append(name)
    return names
