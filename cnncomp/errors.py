"""Error types. Every user-facing error names the layer, the shapes and a fix."""
from __future__ import annotations


class CnnCompError(Exception):
    """Base class of every error cnncomp raises on purpose."""


class ShapeError(CnnCompError, ValueError):
    """A network cannot be shaped: raised when it is defined, naming the layer."""


class GraphError(CnnCompError, ValueError):
    """A graph is malformed (a pass bug or a bad import), found by the verifier."""


class InputError(CnnCompError, ValueError):
    """An array passed to a compiled model has the wrong shape, dtype or values."""


class ParameterError(CnnCompError, ValueError):
    """Parameters to load are missing, extra or mis-shaped."""


# A saved file is corrupt, truncated or from an incompatible version. Defined by the
# runtime (which reads the files) and re-exported here.
from runtime.serialization import FormatError  # noqa: E402,F401


class NonFiniteError(CnnCompError, FloatingPointError):
    """``check_finite=True`` found a NaN or Inf; names the kernel that made it."""


def fmt_shape(shape) -> str:
    """(None, 3, 32, 32) -> '(N, 3, 32, 32)': the batch dimension prints as N."""
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
