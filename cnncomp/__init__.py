"""cnncomp: compile CNNs defined in the DSL (or imported) to fast CPU/CUDA executables.

    import frontend as fe, cnncomp
    model = cnncomp.compile(net, target="cpu")         # all optimizations
    plain = cnncomp.compile(net, fuse=False)           # the unfused baseline
    y = model(x)                                       # float32 NCHW in, ndarray out
"""

from __future__ import annotations
import runtime  # noqa: F401  (first: sets OpenBLAS's thread policy before numpy loads)

from . import optim
from .api import compile, load
from .export_onnx import export_onnx
from .compiled import CompiledModel, KernelInfo
from .errors import (CnnCompError, FormatError, GraphError, InputError, NonFiniteError,
                     ParameterError, ShapeError)
from .ir import Graph, Node, Value
from .ops import Op
from .trainer import Trainer, load_trainer
from . import distributed  # noqa: E402  (data-parallel training; mpi4py imported when used)

__version__ = "0.1.0"

__all__ = ["CnnCompError", "CompiledModel", "FormatError", "Graph", "GraphError", "InputError",
           "KernelInfo", "Node", "NonFiniteError", "Op", "ParameterError", "ShapeError", "Trainer",
           "Value", "compile", "distributed", "export_onnx", "load", "load_trainer", "optim"]
