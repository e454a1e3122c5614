"""Layers of the DSL. Calling a layer on symbolic tensors shapes it immediately.

Constructor arguments follow PyTorch's names; input channels/features are inferred
from the tensor a layer is applied to. An impossible layer fails right where it is
applied, with an error naming the layer, the shapes and a fix.
"""
from __future__ import annotations

import itertools
import math
import os
import sys
from typing import Any, ClassVar, Optional, Sequence, Union

import numpy as np

from cnncomp import ops
from cnncomp.errors import ShapeError, fmt_shape
from cnncomp.ops import Op

IntOrPair = Union[int, Sequence[int]]
_call_counter = itertools.count()
_FRONTEND_DIR = os.path.dirname(os.path.abspath(__file__))


def _pair(v: IntOrPair, what: str, layer: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (int(v), int(v))
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(
            isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in v):
        return (int(v[0]), int(v[1]))
    raise TypeError(f"{layer}: {what} must be an int or a pair of ints, got {v!r}")


def _caller_source() -> str:
    """file:line of the first stack frame outside the frontend package (the user's code)."""
    f = sys._getframe(1)
    while f is not None and os.path.dirname(os.path.abspath(f.f_code.co_filename)) \
            == _FRONTEND_DIR:
        f = f.f_back
    if f is None:
        return ""
    return f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}"


class SymbolicTensor:
    """A tensor of a network being defined: a shape and the layer call that makes it.

    ``shape`` includes the batch dimension as ``None`` (any batch size).
    """
    __slots__ = ("shape", "layer", "inputs", "attrs", "param_shapes", "input_name", "order")

    def __init__(self, shape: tuple, layer: Optional["Layer"], inputs: tuple,
                 attrs: Any = None, param_shapes: Optional[dict] = None,
                 input_name: Optional[str] = None):
        self.shape = tuple(shape)
        self.layer = layer
        self.inputs = inputs
        self.attrs = attrs
        self.param_shapes = param_shapes or {}
        self.input_name = input_name
        self.order = next(_call_counter)

    @property
    def is_input(self) -> bool:
        return self.layer is None

    def __repr__(self) -> str:
        src = f"Input {self.input_name!r}" if self.is_input else self.layer.label()
        return f"<SymbolicTensor {fmt_shape(self.shape)} from {src}>"


def Input(shape: Sequence[int], name: Optional[str] = None) -> SymbolicTensor:
    """A network input of per-sample ``shape``: (C, H, W) for images, (F,) for features."""
    shape = tuple(shape)
    if len(shape) not in (1, 3) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1
            for d in shape):
        raise ShapeError(f"Input {name or ''}: shape must be (C, H, W) or (features,) of "
                         f"positive ints without the batch dimension, got {shape!r}")
    return SymbolicTensor((None, *map(int, shape)), None, (), input_name=name)


class Layer:
    """Base class: subclasses set ``op`` and build their attrs from the input shapes."""
    op: ClassVar[Op]
    auto_prefix: ClassVar[str] = ""

    def __init__(self, name: Optional[str] = None):
        if name is not None and (not isinstance(name, str) or not name
                                 or any(c in name for c in " .%@/\\\"'")):
            raise ValueError(f"{type(self).__name__}: name must be a non-empty string without "
                             f"spaces, dots, quotes or slashes, got {name!r}")
        self.name = name
        self.source = _caller_source()
        self._applied_to: Optional[SymbolicTensor] = None
        self._auto_name: Optional[str] = None  # set by Sequential before applying

    # -- subclass hooks -------------------------------------------------------
    def build_attrs(self, shapes: list[tuple]) -> Any:
        return ops.NoAttrs()

    def init_params(self, shapes: dict[str, tuple], rng: np.random.Generator
                    ) -> dict[str, np.ndarray]:
        """PyTorch's default initialization for this layer's parameters."""
        return {}

    def arity(self) -> Optional[int]:
        return 1

    def config(self) -> dict[str, Any]:
        return {}

    # -- applying -------------------------------------------------------------
    def label(self) -> str:
        name = self.name or self._auto_name
        where = f" defined at {self.source}" if self.source else ""
        if name:
            return f"layer {name!r} ({type(self).__name__}){where}"
        return f"{type(self).__name__} layer{where}"

    def __call__(self, *inputs: SymbolicTensor) -> SymbolicTensor:
        cls = type(self).__name__
        for t in inputs:
            if not isinstance(t, SymbolicTensor):
                raise TypeError(
                    f"{self.label()} is applied to symbolic tensors (from fe.Input or another "
                    f"layer), got {type(t).__name__}; to run a network on data, compile it: "
                    f"cnncomp.compile(net)(x)")
        n = self.arity()
        if n is not None and len(inputs) != n:
            raise TypeError(f"{self.label()} takes {n} input(s), got {len(inputs)}")
        if n is None and len(inputs) < 2 and cls == "Add":
            raise TypeError(f"{self.label()} takes at least 2 inputs, got {len(inputs)}")
        if self._applied_to is not None:
            raise ValueError(
                f"{self.label()} is already applied; every layer is used once per network, "
                f"so create a new {cls}(...) for each place it appears")
        shapes = [t.shape for t in inputs]
        try:
            attrs = self.build_attrs(shapes)
            out_shape = ops.op_def(self.op).infer(attrs, shapes)
            param_shapes = ops.op_def(self.op).params(attrs, shapes)
        except ShapeError as e:
            ins = ", ".join(fmt_shape(s) for s in shapes)
            raise ShapeError(f"{self.label()} on input {ins}: {e}") from None
        out = SymbolicTensor(out_shape, self, tuple(inputs), attrs, param_shapes)
        self._applied_to = out
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        if self.name:
            args = f"{args}, name={self.name!r}" if args else f"name={self.name!r}"
        return f"{type(self).__name__}({args})"


def _uniform(rng: np.random.Generator, shape: tuple, bound: float) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


class Conv2d(Layer):
    """2-D convolution; weight (out, in/groups, kh, kw) as in PyTorch."""
    op = Op.CONV2D

    def __init__(self, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: Union[IntOrPair, str] = 0, dilation: IntOrPair = 1, groups: int = 1,
                 bias: bool = True, name: Optional[str] = None):
        super().__init__(name)
        if not isinstance(out_channels, (int, np.integer)) or out_channels < 1:
            raise ValueError(f"Conv2d: out_channels must be a positive int, got {out_channels!r}")
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size", "Conv2d")
        self.stride = _pair(stride, "stride", "Conv2d")
        self.dilation = _pair(dilation, "dilation", "Conv2d")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Conv2d: padding must be an int, a pair, 'same' or 'valid', "
                                 f"got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("Conv2d: padding='same' is not supported for strided "
                                 f"convolutions (stride {self.stride}), as in PyTorch; give "
                                 "the padding explicitly")
            self.padding: Union[str, tuple[int, int]] = padding
        else:
            self.padding = _pair(padding, "padding", "Conv2d")
        self.groups = int(groups)
        self.bias = bool(bias)

    def _pads(self) -> tuple[int, int, int, int]:
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            # PyTorch: total = dilation*(k-1); the extra odd pixel goes bottom/right
            th = self.dilation[0] * (self.kernel_size[0] - 1)
            tw = self.dilation[1] * (self.kernel_size[1] - 1)
            return (th // 2, tw // 2, th - th // 2, tw - tw // 2)
        ph, pw = self.padding
        return (ph, pw, ph, pw)

    def build_attrs(self, shapes: list[tuple]) -> ops.Conv2dAttrs:
        return ops.Conv2dAttrs(self.out_channels, self.kernel_size, self.stride, self._pads(),
                               self.dilation, self.groups, self.bias)

    def init_params(self, shapes, rng):
        w = shapes["weight"]
        bound = 1.0 / math.sqrt(w[1] * w[2] * w[3])
        p = {"weight": _uniform(rng, w, bound)}
        if "bias" in shapes:
            p["bias"] = _uniform(rng, shapes["bias"], bound)
        return p

    def config(self):
        return dict(out_channels=self.out_channels, kernel_size=self.kernel_size,
                    stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, bias=self.bias)


class Linear(Layer):
    """Fully connected layer on (N, features); weight (out, in) as in PyTorch."""
    op = Op.LINEAR

    def __init__(self, out_features: int, bias: bool = True, name: Optional[str] = None):
        super().__init__(name)
        if not isinstance(out_features, (int, np.integer)) or out_features < 1:
            raise ValueError(f"Linear: out_features must be a positive int, got {out_features!r}")
        self.out_features = int(out_features)
        self.bias = bool(bias)

    def build_attrs(self, shapes):
        return ops.LinearAttrs(self.out_features, self.bias)

    def init_params(self, shapes, rng):
        bound = 1.0 / math.sqrt(shapes["weight"][1])
        p = {"weight": _uniform(rng, shapes["weight"], bound)}
        if "bias" in shapes:
            p["bias"] = _uniform(rng, shapes["bias"], bound)
        return p

    def config(self):
        return dict(out_features=self.out_features, bias=self.bias)


class BatchNorm2d(Layer):
    """Batch normalization over channels of an (N, C, H, W) tensor."""
    op = Op.BATCH_NORM

    def __init__(self, eps: float = 1e-5, momentum: float = 0.1, name: Optional[str] = None):
        super().__init__(name)
        self.eps, self.momentum = float(eps), float(momentum)

    def build_attrs(self, shapes):
        if len(shapes[0]) != 4:
            raise ShapeError(f"BatchNorm2d expects (N, C, H, W), got {fmt_shape(shapes[0])}")
        return ops.BatchNormAttrs(self.eps, self.momentum)

    def init_params(self, shapes, rng):
        c = shapes["weight"]
        return {"weight": np.ones(c, np.float32), "bias": np.zeros(c, np.float32),
                "running_mean": np.zeros(c, np.float32), "running_var": np.ones(c, np.float32)}

    def config(self):
        return dict(eps=self.eps, momentum=self.momentum)


class ReLU(Layer):
    op = Op.RELU


class Sigmoid(Layer):
    op = Op.SIGMOID


class Tanh(Layer):
    op = Op.TANH


class LeakyReLU(Layer):
    op = Op.LEAKY_RELU

    def __init__(self, negative_slope: float = 0.01, name: Optional[str] = None):
        super().__init__(name)
        self.negative_slope = float(negative_slope)

    def build_attrs(self, shapes):
        return ops.LeakyReluAttrs(self.negative_slope)

    def config(self):
        return dict(negative_slope=self.negative_slope)


class _Pool(Layer):
    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
                 padding: IntOrPair = 0, ceil_mode: bool = False, name: Optional[str] = None):
        super().__init__(name)
        cls = type(self).__name__
        self.kernel_size = _pair(kernel_size, "kernel_size", cls)
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", cls)
        self.padding = _pair(padding, "padding", cls)
        self.ceil_mode = bool(ceil_mode)

    def _check_padding(self, eff: tuple[int, int]) -> None:
        if self.padding[0] * 2 > eff[0] or self.padding[1] * 2 > eff[1]:
            raise ShapeError(f"padding {self.padding} must be at most half the kernel size "
                             f"{eff} (as in PyTorch); use a larger kernel or less padding")

    def _pads(self) -> tuple[int, int, int, int]:
        return (self.padding[0], self.padding[1], self.padding[0], self.padding[1])

    def config(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode)


class MaxPool2d(_Pool):
    op = Op.MAX_POOL2D

    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
                 padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
                 name: Optional[str] = None):
        super().__init__(kernel_size, stride, padding, ceil_mode, name)
        self.dilation = _pair(dilation, "dilation", "MaxPool2d")

    def build_attrs(self, shapes):
        eff = tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))
        self._check_padding(eff)
        return ops.MaxPoolAttrs(self.kernel_size, self.stride, self._pads(), self.dilation,
                                self.ceil_mode)

    def config(self):
        return dict(super().config(), dilation=self.dilation)


class AvgPool2d(_Pool):
    op = Op.AVG_POOL2D

    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
                 padding: IntOrPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                 name: Optional[str] = None):
        super().__init__(kernel_size, stride, padding, ceil_mode, name)
        self.count_include_pad = bool(count_include_pad)

    def build_attrs(self, shapes):
        self._check_padding(self.kernel_size)
        return ops.AvgPoolAttrs(self.kernel_size, self.stride, self._pads(), self.ceil_mode,
                                self.count_include_pad)

    def config(self):
        return dict(super().config(), count_include_pad=self.count_include_pad)


class LPPool2d(_Pool):
    """Power-average pooling: (sum x^p)^(1/p) over each window (norm_type 2: L2 pooling)."""
    op = Op.LP_POOL2D

    def __init__(self, norm_type: float, kernel_size: IntOrPair,
                 stride: Optional[IntOrPair] = None, ceil_mode: bool = False,
                 name: Optional[str] = None):
        super().__init__(kernel_size, stride, 0, ceil_mode, name)
        self.norm_type = float(norm_type)

    def build_attrs(self, shapes):
        return ops.LPPoolAttrs(self.norm_type, self.kernel_size, self.stride, self.ceil_mode)

    def config(self):
        return dict(norm_type=self.norm_type, kernel_size=self.kernel_size, stride=self.stride,
                    ceil_mode=self.ceil_mode)


class GlobalAvgPool2d(Layer):
    """Mean over H and W: (N, C, H, W) -> (N, C)."""
    op = Op.GLOBAL_AVG_POOL2D


class LocalResponseNorm(Layer):
    op = Op.LOCAL_RESPONSE_NORM

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
                 name: Optional[str] = None):
        super().__init__(name)
        self.size, self.alpha, self.beta, self.k = int(size), float(alpha), float(beta), float(k)

    def build_attrs(self, shapes):
        return ops.LRNAttrs(self.size, self.alpha, self.beta, self.k)

    def config(self):
        return dict(size=self.size, alpha=self.alpha, beta=self.beta, k=self.k)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in C, H, W order, whatever the physical layout."""
    op = Op.FLATTEN


class Dropout(Layer):
    """Zeroes elements with probability p in training (scaled by 1/(1-p)); identity otherwise."""
    op = Op.DROPOUT

    def __init__(self, p: float = 0.5, name: Optional[str] = None):
        super().__init__(name)
        self.p = float(p)

    def build_attrs(self, shapes):
        return ops.DropoutAttrs(self.p)

    def config(self):
        return dict(p=self.p)


class Softmax(Layer):
    """Softmax over the channel axis (axis 1)."""
    op = Op.SOFTMAX

    def build_attrs(self, shapes):
        return ops.SoftmaxAttrs(1)


class Add(Layer):
    """Elementwise sum of two or more tensors of one shape (residual connections)."""
    op = Op.ADD

    def arity(self):
        return None

    def build_attrs(self, shapes):
        return ops.AddAttrs()


class Concat(Layer):
    """Concatenation along ``axis`` (default 1: channels), in NCHW terms."""
    op = Op.CONCAT

    def __init__(self, axis: int = 1, name: Optional[str] = None):
        super().__init__(name)
        self.axis = int(axis)

    def arity(self):
        return None

    def build_attrs(self, shapes):
        rank = len(shapes[0])
        axis = self.axis + rank if self.axis < 0 else self.axis
        return ops.ConcatAttrs(axis)

    def config(self):
        return dict(axis=self.axis)


LAYER_TYPES: dict[Op, type] = {cls.op: cls for cls in [
    Conv2d, Linear, BatchNorm2d, ReLU, Sigmoid, Tanh, LeakyReLU, MaxPool2d, AvgPool2d,
    LPPool2d, GlobalAvgPool2d, LocalResponseNorm, Flatten, Dropout, Softmax, Add, Concat]}
