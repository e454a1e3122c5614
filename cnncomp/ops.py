"""Op definitions: one ``OpDef`` per op holds every fact the compiler needs about it.

Shapes here are tuples whose first entry is the batch dimension; it is ``None``
while the batch size is symbolic (a network is compiled once for every batch size)
and an int once a program is planned for a concrete batch. Shape rules never look
at the batch entry except to pass it through.

Node inputs are ordered: activation inputs first, then the op's parameters in the
order ``OpDef.params`` returns them, then (for ops with a fused residual epilogue)
the residual tensor. Kernels receive the same order.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Optional

from .errors import ShapeError, fmt_shape

Shape = tuple  # tuple[int | None, ...]
Pair = tuple[int, int]
Pads = tuple[int, int, int, int]  # (top, left, bottom, right), as ONNX orders (begin..., end...)


class Op(str, Enum):
    CONV2D = "conv2d"
    BATCH_NORM = "batch_norm"
    RELU = "relu"
    LEAKY_RELU = "leaky_relu"
    SIGMOID = "sigmoid"
    TANH = "tanh"
    MAX_POOL2D = "max_pool2d"
    AVG_POOL2D = "avg_pool2d"
    LP_POOL2D = "lp_pool2d"
    GLOBAL_AVG_POOL2D = "global_avg_pool2d"
    LOCAL_RESPONSE_NORM = "local_response_norm"
    FLATTEN = "flatten"
    LINEAR = "linear"
    DROPOUT = "dropout"
    SOFTMAX = "softmax"
    ADD = "add"
    CONCAT = "concat"
    LAYOUT_TRANSFORM = "layout_transform"
    # training: forward ops in training mode, the loss, gradients and optimizer updates
    BATCH_NORM_TRAIN = "batch_norm_train"
    DROPOUT_TRAIN = "dropout_train"
    SOFTMAX_CROSS_ENTROPY = "softmax_cross_entropy"
    SOFTMAX_CROSS_ENTROPY_GRAD = "softmax_cross_entropy_grad"
    CONV2D_GRAD_INPUT = "conv2d_grad_input"
    CONV2D_GRAD_WEIGHT = "conv2d_grad_weight"
    LINEAR_GRAD_INPUT = "linear_grad_input"
    LINEAR_GRAD_WEIGHT = "linear_grad_weight"
    BIAS_GRAD = "bias_grad"
    ACTIVATION_GRAD = "activation_grad"
    BATCH_NORM_GRAD = "batch_norm_grad"
    MAX_POOL2D_GRAD = "max_pool2d_grad"
    AVG_POOL2D_GRAD = "avg_pool2d_grad"
    LP_POOL2D_GRAD = "lp_pool2d_grad"
    GLOBAL_AVG_POOL2D_GRAD = "global_avg_pool2d_grad"
    LOCAL_RESPONSE_NORM_GRAD = "local_response_norm_grad"
    SOFTMAX_GRAD = "softmax_grad"
    DROPOUT_GRAD = "dropout_grad"
    RESHAPE = "reshape"
    SPLIT = "split"
    SGD_UPDATE = "sgd_update"
    ADAM_UPDATE = "adam_update"
    ADAGRAD_UPDATE = "adagrad_update"
    # data-parallel training (inserted by the insert_allreduce pass)
    ALLREDUCE_START = "allreduce_start"
    ALLREDUCE_WAIT = "allreduce_wait"
    # imported models (frontend/onnx_import.py): ops without a DSL layer
    TRANSPOSE = "transpose"
    PAD = "pad"
    BINARY = "binary"
    CLIP = "clip"
    LOG_SOFTMAX = "log_softmax"

    def __str__(self) -> str:
        return self.value


class FusionClass(Enum):
    """How an op may join a fused kernel (TVM's pattern kinds, simplified).

    ANCHOR ops (conv, linear) absorb a chain of ELEMENTWISE ops after them as an
    epilogue; REDUCTION and INJECTIVE ops end a fusion group; OPAQUE never fuses.
    """
    ELEMENTWISE = 0
    INJECTIVE = 1
    REDUCTION = 2
    ANCHOR = 3
    OPAQUE = 4


ACTIVATIONS = ("none", "relu", "leaky_relu", "sigmoid", "tanh")


# --------------------------------------------------------------------------- attrs
# One small frozen dataclass per op. ``activation``/``alpha``/``residual`` fields are
# the fused epilogue: an unfused graph leaves them at their defaults.

@dataclass(frozen=True)
class NoAttrs:
    pass


@dataclass(frozen=True)
class Conv2dAttrs:
    out_channels: int
    kernel_size: Pair
    stride: Pair = (1, 1)
    padding: Pads = (0, 0, 0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1
    bias: bool = True
    activation: str = "none"
    alpha: float = 0.0
    residual: bool = False
    # "winograd": F(2x2, 3x3) requested for this 3x3 stride-1 conv (the use_winograd pass)
    algorithm: str = "direct"


@dataclass(frozen=True)
class BatchNormAttrs:
    eps: float = 1e-5
    momentum: float = 0.1
    activation: str = "none"
    alpha: float = 0.0


@dataclass(frozen=True)
class LeakyReluAttrs:
    negative_slope: float = 0.01


@dataclass(frozen=True)
class MaxPoolAttrs:
    kernel_size: Pair
    stride: Pair
    padding: Pads = (0, 0, 0, 0)
    dilation: Pair = (1, 1)
    ceil_mode: bool = False


@dataclass(frozen=True)
class AvgPoolAttrs:
    kernel_size: Pair
    stride: Pair
    padding: Pads = (0, 0, 0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True


@dataclass(frozen=True)
class LPPoolAttrs:
    norm_type: float
    kernel_size: Pair
    stride: Pair
    ceil_mode: bool = False


@dataclass(frozen=True)
class LRNAttrs:
    size: int
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0


@dataclass(frozen=True)
class LinearAttrs:
    out_features: int
    bias: bool = True
    activation: str = "none"
    alpha: float = 0.0
    residual: bool = False


@dataclass(frozen=True)
class DropoutAttrs:
    p: float = 0.5


@dataclass(frozen=True)
class SoftmaxAttrs:
    axis: int = 1


@dataclass(frozen=True)
class AddAttrs:
    activation: str = "none"
    alpha: float = 0.0


@dataclass(frozen=True)
class ConcatAttrs:
    axis: int = 1


@dataclass(frozen=True)
class LayoutTransformAttrs:
    """Convert between physical layouts; the logical (NCHW) shape is unchanged."""
    src: str
    dst: str


# training-only ops

@dataclass(frozen=True)
class DropoutTrainAttrs:
    """Dropout while training: the mask comes from a counter-based RNG keyed by
    (seed, step), so a resumed run draws exactly the masks the first run would have."""
    p: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class GradAttrs:
    """A gradient op: the forward op's attrs and the forward input's shape (no batch)."""
    fwd: Any
    shape: tuple


@dataclass(frozen=True)
class ActivationGradAttrs:
    activation: str
    alpha: float = 0.0


@dataclass(frozen=True)
class ReshapeAttrs:
    shape: tuple  # without the batch entry


@dataclass(frozen=True)
class SplitAttrs:
    axis: int
    sizes: tuple


@dataclass(frozen=True)
class SgdAttrs:
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False


@dataclass(frozen=True)
class AdamAttrs:
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass(frozen=True)
class AdagradAttrs:
    eps: float = 1e-10
    weight_decay: float = 0.0
    lr_decay: float = 0.0


@dataclass(frozen=True)
class BatchNormTrainAttrs(BatchNormAttrs):
    """Training BatchNorm (and its gradient) of a distributed graph; ``sync``: statistics
    over the global batch of all ranks instead of this rank's shard."""
    sync: bool = False


@dataclass(frozen=True)
class AllreduceAttrs:
    """One gradient bucket: ``allreduce_start`` packs it, ``allreduce_wait`` (outputs of
    ``shapes``) unpacks the batch-weighted mean over ranks (runtime/cpu/comm.py)."""
    bucket: int = 0
    shapes: tuple = ()


def attrs_to_dict(attrs: Any) -> dict[str, Any]:
    """Plain dict of an attrs dataclass (what kernels and the JSON format receive)."""
    return dataclasses.asdict(attrs)


def attrs_from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Inverse of ``attrs_to_dict``; JSON lists become tuples again."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown attributes {sorted(unknown)} for {cls.__name__}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# --------------------------------------------------------------------------- helpers

def _numel(shape: Shape) -> int:
    return math.prod(shape)


def _require_rank(shape: Shape, ranks: tuple[int, ...], what: str) -> None:
    if len(shape) not in ranks:
        want = " or ".join(f"rank {r}" for r in ranks)
        raise ShapeError(f"{what} expects a {want} input, got {fmt_shape(shape)}")


def _window_out(size: int, k: int, s: int, pad_lo: int, pad_hi: int, dil: int,
                ceil_mode: bool, axis: str, what: str) -> int:
    """Output extent of a sliding window along one axis (PyTorch's formula)."""
    eff = dil * (k - 1) + 1
    padded = size + pad_lo + pad_hi
    if padded < eff:
        raise ShapeError(
            f"{what}: kernel {k} along {axis}"
            + (f" (dilated to {eff})" if dil > 1 else "")
            + f" is larger than the padded input {padded} (input {size} + padding "
            f"{pad_lo}+{pad_hi}); use a smaller kernel, more padding, or a larger input")
    span = padded - eff
    if ceil_mode:
        out = -(-span // s) + 1
        # the last window must start inside the input or the leading padding
        if (out - 1) * s >= size + pad_lo:
            out -= 1
    else:
        out = span // s + 1
    return out


def _spatial_out(shape: Shape, kernel: Pair, stride: Pair, pads: Pads, dilation: Pair,
                 ceil_mode: bool, what: str) -> tuple[int, int]:
    oh = _window_out(shape[2], kernel[0], stride[0], pads[0], pads[2], dilation[0],
                     ceil_mode, "height", what)
    ow = _window_out(shape[3], kernel[1], stride[1], pads[1], pads[3], dilation[1],
                     ceil_mode, "width", what)
    return oh, ow


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ShapeError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")


# --------------------------------------------------------------------------- shape rules

def _conv2d_infer(a: Conv2dAttrs, xs: list[Shape]) -> Shape:
    (x,) = xs[:1]
    _require_rank(x, (4,), "Conv2d")
    n, c, _, _ = x
    _check_activation(a.activation)
    if min(a.kernel_size) < 1 or min(a.stride) < 1 or min(a.dilation) < 1 or min(a.padding) < 0:
        raise ShapeError(f"Conv2d: kernel_size {a.kernel_size}, stride {a.stride} and "
                         f"dilation {a.dilation} must be >= 1 and padding {a.padding} >= 0")
    if a.groups < 1 or c % a.groups or a.out_channels % a.groups:
        raise ShapeError(
            f"Conv2d: groups={a.groups} must divide both the input channels ({c}) and "
            f"out_channels ({a.out_channels}); input {fmt_shape(x)}")
    oh, ow = _spatial_out(x, a.kernel_size, a.stride, a.padding, a.dilation, False,
                          f"Conv2d on input {fmt_shape(x)}")
    out = (n, a.out_channels, oh, ow)
    if a.algorithm not in ("direct", "winograd"):
        raise ShapeError(f"Conv2d: algorithm {a.algorithm!r} is not 'direct' or 'winograd'")
    if a.algorithm == "winograd" and not winograd_computes(a):
        raise ShapeError(f"Conv2d: Winograd F(2x2, 3x3) needs a dense 3x3 kernel of stride 1 "
                         f"without dilation, got kernel_size {a.kernel_size}, stride "
                         f"{a.stride}, dilation {a.dilation}, groups {a.groups}; use "
                         "algorithm='direct'")
    if a.residual:
        _same_shapes([out, xs[-1]], "Conv2d residual")
    return out


def winograd_computes(a: Conv2dAttrs) -> bool:
    """Whether Winograd's F(2x2, 3x3) computes this conv: dense, 3x3, stride 1, no
    dilation (what ``algorithm="winograd"`` may be set on)."""
    return (tuple(a.kernel_size) == (3, 3) and tuple(a.stride) == (1, 1)
            and tuple(a.dilation) == (1, 1) and a.groups == 1)


def _conv2d_params(a: Conv2dAttrs, xs: list[Shape]) -> dict[str, Shape]:
    c = xs[0][1]
    p = {"weight": (a.out_channels, c // a.groups, *a.kernel_size)}
    if a.bias:
        p["bias"] = (a.out_channels,)
    return p


def _conv2d_flops(a: Conv2dAttrs, xs: list[Shape], out: Shape) -> int:
    macs = _numel(out) * (xs[0][1] // a.groups) * a.kernel_size[0] * a.kernel_size[1]
    return 2 * macs + _numel(out) * (int(a.bias) + int(a.residual) + int(a.activation != "none"))


def _batch_norm_infer(a: BatchNormAttrs, xs: list[Shape]) -> Shape:
    (x,) = xs
    _require_rank(x, (2, 4), "BatchNorm")
    _check_activation(a.activation)
    if a.eps <= 0:
        raise ShapeError(f"BatchNorm: eps must be > 0, got {a.eps}")
    return x


def _batch_norm_params(a: BatchNormAttrs, xs: list[Shape]) -> dict[str, Shape]:
    c = (xs[0][1],)
    return {"weight": c, "bias": c, "running_mean": c, "running_var": c}


def _same(a: Any, xs: list[Shape]) -> Shape:
    return xs[0]


def _pool_common(what: str, a: Any, x: Shape, dilation: Pair) -> Shape:
    _require_rank(x, (4,), what)
    if min(a.kernel_size) < 1 or min(a.stride) < 1 or min(a.padding) < 0:
        raise ShapeError(f"{what}: kernel_size {a.kernel_size} and stride {a.stride} must "
                         f"be >= 1 and padding {a.padding} >= 0")
    oh, ow = _spatial_out(x, a.kernel_size, a.stride, a.padding, dilation, a.ceil_mode,
                          f"{what} on input {fmt_shape(x)}")
    return (x[0], x[1], oh, ow)


def _max_pool_infer(a: MaxPoolAttrs, xs: list[Shape]) -> Shape:
    return _pool_common("MaxPool2d", a, xs[0], a.dilation)


def _avg_pool_infer(a: AvgPoolAttrs, xs: list[Shape]) -> Shape:
    return _pool_common("AvgPool2d", a, xs[0], (1, 1))


def _lp_pool_infer(a: LPPoolAttrs, xs: list[Shape]) -> Shape:
    if not a.norm_type > 0:
        raise ShapeError(f"LPPool2d: norm_type must be > 0, got {a.norm_type}")
    x = xs[0]
    _require_rank(x, (4,), "LPPool2d")
    oh, ow = _spatial_out(x, a.kernel_size, a.stride, (0, 0, 0, 0), (1, 1), a.ceil_mode,
                          f"LPPool2d on input {fmt_shape(x)}")
    return (x[0], x[1], oh, ow)


def _pool_flops(a: Any, xs: list[Shape], out: Shape) -> int:
    return _numel(out) * a.kernel_size[0] * a.kernel_size[1]


def _gap_infer(a: NoAttrs, xs: list[Shape]) -> Shape:
    (x,) = xs
    _require_rank(x, (4,), "GlobalAvgPool2d")
    return (x[0], x[1])


def _lrn_infer(a: LRNAttrs, xs: list[Shape]) -> Shape:
    (x,) = xs
    _require_rank(x, (4,), "LocalResponseNorm")
    if a.size < 1:
        raise ShapeError(f"LocalResponseNorm: size must be >= 1, got {a.size}")
    return x


def _flatten_infer(a: NoAttrs, xs: list[Shape]) -> Shape:
    (x,) = xs
    if len(x) < 2:
        raise ShapeError(f"Flatten expects at least a rank 2 input, got {fmt_shape(x)}")
    return (x[0], _numel(x[1:]))


def _linear_infer(a: LinearAttrs, xs: list[Shape]) -> Shape:
    x = xs[0]
    _check_activation(a.activation)
    if len(x) != 2:
        hint = (" add Flatten() (keeps every value) or GlobalAvgPool2d() (averages each "
                "channel) before it") if len(x) == 4 else ""
        raise ShapeError(f"Linear takes (N, features), got {fmt_shape(x)};{hint}")
    if a.out_features < 1:
        raise ShapeError(f"Linear: out_features must be >= 1, got {a.out_features}")
    out = (x[0], a.out_features)
    if a.residual:
        _same_shapes([out, xs[-1]], "Linear residual")
    return out


def _linear_params(a: LinearAttrs, xs: list[Shape]) -> dict[str, Shape]:
    p = {"weight": (a.out_features, xs[0][1])}
    if a.bias:
        p["bias"] = (a.out_features,)
    return p


def _linear_flops(a: LinearAttrs, xs: list[Shape], out: Shape) -> int:
    return 2 * _numel(out) * xs[0][1] + _numel(out) * (int(a.bias) + int(a.residual))


def _dropout_infer(a: DropoutAttrs, xs: list[Shape]) -> Shape:
    if not 0.0 <= a.p <= 1.0:
        raise ShapeError(f"Dropout: p must be in [0, 1], got {a.p}")
    return xs[0]


def _softmax_infer(a: SoftmaxAttrs, xs: list[Shape]) -> Shape:
    (x,) = xs
    _require_rank(x, (2, 4), "Softmax")
    if a.axis != 1:
        raise ShapeError(f"Softmax works over the channel axis (1), got axis={a.axis}")
    return x


def _same_shapes(xs: list[Shape], what: str) -> Shape:
    first = xs[0]
    for i, s in enumerate(xs[1:], 1):
        if tuple(s) != tuple(first):
            shapes = ", ".join(fmt_shape(t) for t in xs)
            raise ShapeError(f"{what} needs inputs of one shape, got {shapes} (input {i} "
                             f"differs); add a 1x1 Conv2d or pooling so they match")
    return first


def _add_infer(a: AddAttrs, xs: list[Shape]) -> Shape:
    if len(xs) < 2:
        raise ShapeError(f"Add needs at least 2 inputs, got {len(xs)}")
    _check_activation(a.activation)
    return _same_shapes(xs, "Add")


def _concat_infer(a: ConcatAttrs, xs: list[Shape]) -> Shape:
    if len(xs) < 1:
        raise ShapeError("Concat needs at least 1 input")
    rank = len(xs[0])
    if not 1 <= a.axis < rank:
        raise ShapeError(f"Concat: axis {a.axis} is out of range for rank {rank} inputs "
                         f"(the batch axis 0 cannot be concatenated; use 1..{rank - 1})")
    for i, s in enumerate(xs):
        if len(s) != rank or any(d != e for j, (d, e) in enumerate(zip(s, xs[0])) if j != a.axis):
            shapes = ", ".join(fmt_shape(t) for t in xs)
            raise ShapeError(f"Concat(axis={a.axis}) needs inputs equal in every other axis, "
                             f"got {shapes} (input {i} differs)")
    out = list(xs[0])
    out[a.axis] = sum(s[a.axis] for s in xs)
    return tuple(out)


def _elementwise_flops(per_element: int) -> Callable[[Any, list[Shape], Shape], int]:
    return lambda a, xs, out: per_element * _numel(out)


def _no_params(a: Any, xs: list[Shape]) -> dict[str, Shape]:
    return {}


# --------------------------------------------------------------------------- training ops
# Shape rules of the ops a training graph adds. Multi-output ops return a list of shapes
# (one per output); optimizer updates return [] (they write their parameter in place).

def _bn_train_infer(a: BatchNormAttrs, xs: list[Shape]) -> list[Shape]:
    x = _batch_norm_infer(a, xs[:1])
    return [x, (x[1],), (x[1],)]  # y, batch mean, 1/sqrt(batch var + eps)


def _dropout_train_infer(a: DropoutTrainAttrs, xs: list[Shape]) -> list[Shape]:
    _dropout_infer(DropoutAttrs(a.p), xs)
    return [xs[0], xs[0]]  # y, mask (0 or 1/(1-p))


def _sce_infer(a: NoAttrs, xs: list[Shape]) -> list[Shape]:
    logits, labels = xs
    if len(logits) != 2:
        raise ShapeError(f"cross_entropy takes logits (N, classes), got {fmt_shape(logits)}; "
                         "end the network with Linear (after Flatten or GlobalAvgPool2d)")
    if len(labels) != 1:
        raise ShapeError(f"cross_entropy takes integer labels of shape (N,), got "
                         f"{fmt_shape(labels)}")
    return [(1,), logits]  # mean loss, softmax probabilities


def _sce_grad_infer(a: NoAttrs, xs: list[Shape]) -> Shape:
    return xs[0]


def _grad_input_infer(a: GradAttrs, xs: list[Shape]) -> Shape:
    return (xs[0][0], *a.shape)


def _param_grad_infer(a: GradAttrs, xs: list[Shape]) -> Shape:
    return tuple(a.shape)


def _bias_grad_infer(a: NoAttrs, xs: list[Shape]) -> Shape:
    return (xs[0][1],)


def _activation_grad_infer(a: ActivationGradAttrs, xs: list[Shape]) -> Shape:
    _check_activation(a.activation)
    return _same_shapes(xs, "activation gradient")


def _bn_grad_infer(a: BatchNormAttrs, xs: list[Shape]) -> list[Shape]:
    gy = xs[0]
    return [gy, (gy[1],), (gy[1],)]  # dx, dgamma, dbeta


def _reshape_infer(a: ReshapeAttrs, xs: list[Shape]) -> Shape:
    if _numel(xs[0][1:]) != _numel(a.shape):
        raise ShapeError(f"reshape of {fmt_shape(xs[0])} to (N, {a.shape}) changes the size")
    return (xs[0][0], *a.shape)


def _split_infer(a: SplitAttrs, xs: list[Shape]) -> list[Shape]:
    x = xs[0]
    if sum(a.sizes) != x[a.axis]:
        raise ShapeError(f"split of {fmt_shape(x)} into {a.sizes} along axis {a.axis}")
    outs = []
    for k in a.sizes:
        s = list(x)
        s[a.axis] = k
        outs.append(tuple(s))
    return outs


def _update_infer(a: Any, xs: list[Shape]) -> list[Shape]:
    param, grad = xs[0], xs[1]
    if tuple(param) != tuple(grad):
        raise ShapeError(f"optimizer update: parameter {fmt_shape(param)} and gradient "
                         f"{fmt_shape(grad)} differ")
    return []


def _allreduce_start_infer(a: AllreduceAttrs, xs: list[Shape]) -> Shape:
    # inputs: the labels (their length is this rank's batch), then the tensors to average
    if any(d is None for s in xs[1:] for d in s):
        raise ShapeError("allreduce_start averages fixed-shape tensors (gradients, the loss, "
                         f"running statistics), got {[fmt_shape(s) for s in xs[1:]]}")
    return (sum(_numel(s) for s in xs[1:]) + 1,)  # + the batch weight


def _allreduce_wait_infer(a: AllreduceAttrs, xs: list[Shape]) -> list[Shape]:
    flat, inplace = xs[0], xs[1:]
    n = sum(_numel(s) for s in a.shapes) + sum(_numel(s) for s in inplace) + 1
    if tuple(flat) != (n,):
        raise ShapeError(f"allreduce_wait: buffer {fmt_shape(flat)} does not hold outputs "
                         f"{list(a.shapes)} and in-place tensors {inplace} (+1)")
    return [tuple(s) for s in a.shapes]


def _grad_flops(factor: int) -> Callable[[Any, list[Shape], Shape], int]:
    """A gradient op's FLOPs: ``factor`` times its larger operand's element count."""
    return lambda a, xs, out: factor * max([_numel(s) for s in xs] + [_numel(out)])


def _conv_grad_flops(a: GradAttrs, xs: list[Shape], out: Shape) -> int:
    f = a.fwd  # as many multiply-adds as the forward conv
    gy = xs[0] if len(xs[0]) == 4 and xs[0][1] == f.out_channels else xs[1]
    cin = a.shape[0] if len(a.shape) == 3 else a.shape[1] * f.groups
    return 2 * _numel(gy) * (cin // f.groups) * f.kernel_size[0] * f.kernel_size[1]


def _linear_grad_flops(a: GradAttrs, xs: list[Shape], out: Shape) -> int:
    return 2 * _numel(xs[0]) * (xs[1][-1] if len(xs) > 1 else 1)


# --------------------------------------------------------------------------- gradient rules
# ``grad(b, node, gy, needs) -> [gradient value or None per node input]``: the reverse-mode
# rule of each op, emitting gradient ops through the builder ``b`` (``b.emit(op, inputs,
# attrs) -> output names``, ``b.shape(value)``). ``gy`` is the gradient of the node's first
# output; ``needs[i]`` says whether input i needs a gradient (graph inputs and running
# statistics do not). The differentiate pass calls these in reverse graph order.

def _forward_only(what: str) -> None:
    raise ShapeError(f"{what}: autodiff runs on the unfused source graph; this node already "
                     "carries a fused epilogue")


def _conv2d_grad(b: Any, n: Any, gy: str, needs: list[bool]) -> list[Optional[str]]:
    a = n.attrs
    if a.activation != "none" or a.residual:
        _forward_only(n.name)
    x, w = n.inputs[0], n.inputs[1]
    gx = b.emit(Op.CONV2D_GRAD_INPUT, [gy, w], GradAttrs(a, b.shape(x)[1:]))[0] \
        if needs[0] else None
    gw = b.emit(Op.CONV2D_GRAD_WEIGHT, [x, gy], GradAttrs(a, b.shape(w)))[0] \
        if needs[1] else None
    grads = [gx, gw]
    if a.bias:
        grads.append(b.emit(Op.BIAS_GRAD, [gy], NoAttrs())[0] if needs[2] else None)
    return grads


def _linear_grad(b: Any, n: Any, gy: str, needs: list[bool]) -> list[Optional[str]]:
    a = n.attrs
    if a.activation != "none" or a.residual:
        _forward_only(n.name)
    x, w = n.inputs[0], n.inputs[1]
    gx = b.emit(Op.LINEAR_GRAD_INPUT, [gy, w], GradAttrs(a, b.shape(x)[1:]))[0] \
        if needs[0] else None
    gw = b.emit(Op.LINEAR_GRAD_WEIGHT, [x, gy], GradAttrs(a, b.shape(w)))[0] \
        if needs[1] else None
    grads = [gx, gw]
    if a.bias:
        grads.append(b.emit(Op.BIAS_GRAD, [gy], NoAttrs())[0] if needs[2] else None)
    return grads


def _bn_train_grad(b: Any, n: Any, gy: str, needs: list[bool]) -> list[Optional[str]]:
    if n.attrs.activation != "none":
        _forward_only(n.name)
    x, gamma = n.inputs[0], n.inputs[1]
    _, mean, invstd = n.outputs
    gx, ggamma, gbeta = b.emit(Op.BATCH_NORM_GRAD, [gy, x, gamma, mean, invstd], n.attrs)
    return [gx if needs[0] else None, ggamma, gbeta, None, None]


def _activation_grad(name: str, use_input: bool = False) -> Callable[..., list]:
    """Activations differentiate through their output (relu, sigmoid, tanh) or, for
    leaky_relu (whose slope may be negative), through their input."""
    def rule(b: Any, n: Any, gy: str, needs: list[bool]) -> list[Optional[str]]:
        alpha = getattr(n.attrs, "negative_slope", 0.0)
        saved = n.inputs[0] if use_input else n.outputs[0]
        return [b.emit(Op.ACTIVATION_GRAD, [gy, saved], ActivationGradAttrs(name, alpha))[0]]
    return rule


def _pool_grad(op: "Op", saved: str) -> Callable[..., list]:
    """Pooling gradients; ``saved`` says which forward tensors the backward reads:
    '' (only shapes: avg/global pooling), 'x' (max, recomputes the argmax), 'xy' (LP)."""
    def rule(b: Any, n: Any, gy: str, needs: list[bool]) -> list[Optional[str]]:
        x = n.inputs[0]
        extra = {"": [], "x": [x], "xy": [x, n.outputs[0]]}[saved]
        return [b.emit(op, [gy, *extra], GradAttrs(n.attrs, b.shape(x)[1:]))[0]]
    return rule


def _flatten_grad(b: Any, n: Any, gy: str, needs: list[bool]) -> list[Optional[str]]:
    return [b.emit(Op.RESHAPE, [gy], ReshapeAttrs(tuple(b.shape(n.inputs[0])[1:])))[0]]


def _dropout_train_grad(b: Any, n: Any, gy: str, needs: list[bool]) -> list[Optional[str]]:
    return [b.emit(Op.DROPOUT_GRAD, [gy, n.outputs[1]], NoAttrs())[0]]


def _softmax_grad(b: Any, n: Any, gy: str, needs: list[bool]) -> list[Optional[str]]:
    return [b.emit(Op.SOFTMAX_GRAD, [gy, n.outputs[0]], NoAttrs())[0]]


def _add_grad(b: Any, n: Any, gy: str, needs: list[bool]) -> list[Optional[str]]:
    if n.attrs.activation != "none":
        _forward_only(n.name)
    return [gy] * len(n.inputs)


def _concat_grad(b: Any, n: Any, gy: str, needs: list[bool]) -> list[Optional[str]]:
    a = n.attrs
    sizes = tuple(b.shape(i)[a.axis] for i in n.inputs)
    if len(sizes) == 1:
        return [gy]
    return list(b.emit(Op.SPLIT, [gy], SplitAttrs(a.axis, sizes)))


# --------------------------------------------------------------------------- imported ops
# Ops that ONNX models need and the DSL has no layer for. Every shape keeps the batch
# axis first and untouched; their CPU kernels live in runtime/cpu/onnx_ops.py.

PAD_MODES = ("constant", "reflect", "edge", "wrap")
BINARY_FNS = ("add", "sub", "mul", "div", "max", "min")


@dataclass(frozen=True)
class TransposeAttrs:
    """Permute the axes; ``perm`` covers every axis and keeps the batch first (perm[0] 0)."""
    perm: tuple


@dataclass(frozen=True)
class PadAttrs:
    """``pads``: (begin..., end...) for each non-batch axis, as ONNX orders them; a
    negative entry crops. ``mode``: constant (fill ``value``), reflect, edge or wrap."""
    pads: tuple
    mode: str = "constant"
    value: float = 0.0


@dataclass(frozen=True)
class BinaryAttrs:
    """Elementwise ``fn`` of two activations with numpy broadcasting over the non-batch
    axes (both operands have the same rank and batch)."""
    fn: str = "mul"


@dataclass(frozen=True)
class ClipAttrs:
    """min(max(x, min), max) elementwise (ONNX Clip: min > max gives max everywhere)."""
    min: float = -math.inf
    max: float = math.inf


def _transpose_infer(a: TransposeAttrs, xs: list[Shape]) -> Shape:
    (x,) = xs
    perm = tuple(a.perm)
    if sorted(perm) != list(range(len(x))):
        raise ShapeError(f"Transpose: perm {perm} is not a permutation of the {len(x)} axes "
                         f"of {fmt_shape(x)}")
    if perm[0] != 0:
        raise ShapeError(f"Transpose: perm {perm} moves the batch axis 0; the batch stays "
                         "first")
    return tuple(x[p] for p in perm)


def _pad_infer(a: PadAttrs, xs: list[Shape]) -> Shape:
    (x,) = xs
    k = len(x) - 1
    if len(a.pads) != 2 * k:
        raise ShapeError(f"Pad: {len(a.pads)} pads for the {k} non-batch axes of "
                         f"{fmt_shape(x)}; give begin and end for each ({2 * k} values)")
    if a.mode not in PAD_MODES:
        raise ShapeError(f"Pad: unknown mode {a.mode!r}; known: {', '.join(PAD_MODES)}")
    out = [x[0]]
    for i in range(k):
        d, b, e = x[i + 1], a.pads[i], a.pads[i + k]
        cropped = d - max(-b, 0) - max(-e, 0)
        if cropped < 1 or d + b + e < 1:
            raise ShapeError(f"Pad: pads ({b}, {e}) leave nothing of axis {i + 1} (size {d}) "
                             f"of {fmt_shape(x)}")
        if a.mode in ("reflect", "wrap") and max(b, e) > cropped - (a.mode == "reflect"):
            raise ShapeError(f"Pad: {a.mode} padding ({b}, {e}) of axis {i + 1} needs pads "
                             f"below its size {cropped}")
        out.append(d + b + e)
    return tuple(out)


def _binary_infer(a: BinaryAttrs, xs: list[Shape]) -> Shape:
    if a.fn not in BINARY_FNS:
        raise ShapeError(f"binary: unknown fn {a.fn!r}; known: {', '.join(BINARY_FNS)}")
    x, y = xs
    if len(x) != len(y) or x[0] != y[0]:
        raise ShapeError(f"binary {a.fn}: operands {fmt_shape(x)} and {fmt_shape(y)} need the "
                         "same rank and batch (broadcasting is over the other axes)")
    out = [x[0]]
    for d, e in zip(x[1:], y[1:]):
        if d != e and 1 not in (d, e):
            raise ShapeError(f"binary {a.fn}: shapes {fmt_shape(x)} and {fmt_shape(y)} do not "
                             "broadcast (each axis must match or be 1)")
        out.append(max(d, e))
    return tuple(out)


def _clip_infer(a: ClipAttrs, xs: list[Shape]) -> Shape:
    if math.isnan(a.min) or math.isnan(a.max):
        raise ShapeError(f"Clip: bounds must not be NaN, got min={a.min}, max={a.max}")
    return xs[0]


def _log_softmax_infer(a: SoftmaxAttrs, xs: list[Shape]) -> Shape:
    try:
        return _softmax_infer(a, xs)
    except ShapeError as e:
        raise ShapeError(f"Log{e}") from None


# --------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class OpDef:
    """Everything the compiler knows about one op.

    ``arity`` is the number of activation inputs (``None``: variadic, >= 1).
    ``infer(attrs, activation_shapes) -> shape`` raises ShapeError on impossible input.
    ``params(attrs, activation_shapes) -> {suffix: shape}`` in node-input order.
    ``grad`` is the reverse-mode rule (see "gradient rules"); ops without one cannot be
    trained through. ``infer`` of a multi-output op returns a list of shapes.
    """
    op: Op
    attrs: type
    fusion: FusionClass
    arity: Optional[int]
    infer: Callable[[Any, list[Shape]], Shape]
    flops: Callable[[Any, list[Shape], Shape], int]
    params: Callable[[Any, list[Shape]], dict[str, Shape]] = _no_params
    layouts: tuple[str, ...] = ("NCHW",)
    grad: Optional[Callable[..., Any]] = None
    mode: str = "forward"   # kernel mode: forward, backward or update
    effects: bool = False   # writes a parameter in place (running stats, optimizer steps)

    def activation_arity(self, attrs: Any, n_inputs: int) -> int:
        """How many of a node's inputs are activations (the rest: params, residual)."""
        if self.arity is not None:
            return self.arity
        return n_inputs


_E, _I, _R, _A = (FusionClass.ELEMENTWISE, FusionClass.INJECTIVE, FusionClass.REDUCTION,
                  FusionClass.ANCHOR)

_O = FusionClass.OPAQUE

OP_DEFS: dict[Op, OpDef] = {d.op: d for d in [
    OpDef(Op.CONV2D, Conv2dAttrs, _A, 1, _conv2d_infer, _conv2d_flops, _conv2d_params,
          grad=_conv2d_grad),
    OpDef(Op.BATCH_NORM, BatchNormAttrs, _E, 1, _batch_norm_infer, _elementwise_flops(2),
          _batch_norm_params),  # trains as batch_norm_train
    OpDef(Op.RELU, NoAttrs, _E, 1, _same, _elementwise_flops(1),
          grad=_activation_grad("relu")),
    OpDef(Op.LEAKY_RELU, LeakyReluAttrs, _E, 1, _same, _elementwise_flops(2),
          grad=_activation_grad("leaky_relu", use_input=True)),
    OpDef(Op.SIGMOID, NoAttrs, _E, 1, _same, _elementwise_flops(4),
          grad=_activation_grad("sigmoid")),
    OpDef(Op.TANH, NoAttrs, _E, 1, _same, _elementwise_flops(4),
          grad=_activation_grad("tanh")),
    OpDef(Op.MAX_POOL2D, MaxPoolAttrs, _R, 1, _max_pool_infer, _pool_flops,
          grad=_pool_grad(Op.MAX_POOL2D_GRAD, "x")),
    OpDef(Op.AVG_POOL2D, AvgPoolAttrs, _R, 1, _avg_pool_infer, _pool_flops,
          grad=_pool_grad(Op.AVG_POOL2D_GRAD, "")),
    OpDef(Op.LP_POOL2D, LPPoolAttrs, _R, 1, _lp_pool_infer,
          lambda a, xs, o: 2 * _pool_flops(a, xs, o), grad=_pool_grad(Op.LP_POOL2D_GRAD, "xy")),
    OpDef(Op.GLOBAL_AVG_POOL2D, NoAttrs, _R, 1, _gap_infer,
          lambda a, xs, o: _numel(xs[0][1:]) * xs[0][0],
          grad=_pool_grad(Op.GLOBAL_AVG_POOL2D_GRAD, "")),
    OpDef(Op.LOCAL_RESPONSE_NORM, LRNAttrs, _R, 1, _lrn_infer,
          lambda a, xs, o: (a.size + 4) * _numel(o),
          grad=_pool_grad(Op.LOCAL_RESPONSE_NORM_GRAD, "x")),
    OpDef(Op.FLATTEN, NoAttrs, _I, 1, _flatten_infer, _elementwise_flops(0),
          grad=_flatten_grad),
    OpDef(Op.LINEAR, LinearAttrs, _A, 1, _linear_infer, _linear_flops, _linear_params,
          grad=_linear_grad),
    OpDef(Op.DROPOUT, DropoutAttrs, _E, 1, _dropout_infer, _elementwise_flops(0)),
    OpDef(Op.SOFTMAX, SoftmaxAttrs, _R, 1, _softmax_infer, _elementwise_flops(4),
          grad=_softmax_grad),
    OpDef(Op.ADD, AddAttrs, _E, None, _add_infer,
          lambda a, xs, o: (len(xs) - 1) * _numel(o), grad=_add_grad),
    OpDef(Op.CONCAT, ConcatAttrs, _I, None, _concat_infer, _elementwise_flops(0),
          grad=_concat_grad),
    OpDef(Op.LAYOUT_TRANSFORM, LayoutTransformAttrs, _I, 1, _same, _elementwise_flops(0)),
    # ---- training
    OpDef(Op.BATCH_NORM_TRAIN, BatchNormAttrs, _O, 1, _bn_train_infer, _elementwise_flops(6),
          _batch_norm_params, grad=_bn_train_grad, effects=True),
    OpDef(Op.DROPOUT_TRAIN, DropoutTrainAttrs, _O, None, _dropout_train_infer,
          _elementwise_flops(2), grad=_dropout_train_grad),
    OpDef(Op.SOFTMAX_CROSS_ENTROPY, NoAttrs, _O, 2, _sce_infer,
          lambda a, xs, o: 5 * _numel(xs[0])),
    OpDef(Op.SOFTMAX_CROSS_ENTROPY_GRAD, NoAttrs, _O, 2, _sce_grad_infer, _elementwise_flops(2),
          mode="backward"),
    OpDef(Op.CONV2D_GRAD_INPUT, GradAttrs, _O, None, _grad_input_infer, _conv_grad_flops,
          mode="backward"),
    OpDef(Op.CONV2D_GRAD_WEIGHT, GradAttrs, _O, None, _param_grad_infer, _conv_grad_flops,
          mode="backward"),
    OpDef(Op.LINEAR_GRAD_INPUT, GradAttrs, _O, None, _grad_input_infer, _linear_grad_flops,
          mode="backward"),
    OpDef(Op.LINEAR_GRAD_WEIGHT, GradAttrs, _O, None, _param_grad_infer, _linear_grad_flops,
          mode="backward"),
    OpDef(Op.BIAS_GRAD, NoAttrs, _R, None, _bias_grad_infer, _grad_flops(1), mode="backward"),
    OpDef(Op.ACTIVATION_GRAD, ActivationGradAttrs, _E, None, _activation_grad_infer,
          _grad_flops(2), mode="backward"),
    OpDef(Op.BATCH_NORM_GRAD, BatchNormAttrs, _O, None, _bn_grad_infer, _grad_flops(8),
          mode="backward"),
    OpDef(Op.MAX_POOL2D_GRAD, GradAttrs, _O, None, _grad_input_infer, _grad_flops(2),
          mode="backward"),
    OpDef(Op.AVG_POOL2D_GRAD, GradAttrs, _O, None, _grad_input_infer, _grad_flops(2),
          mode="backward"),
    OpDef(Op.LP_POOL2D_GRAD, GradAttrs, _O, None, _grad_input_infer, _grad_flops(4),
          mode="backward"),
    OpDef(Op.GLOBAL_AVG_POOL2D_GRAD, GradAttrs, _O, None, _grad_input_infer, _grad_flops(1),
          mode="backward"),
    OpDef(Op.LOCAL_RESPONSE_NORM_GRAD, GradAttrs, _O, None, _grad_input_infer, _grad_flops(8),
          mode="backward"),
    OpDef(Op.SOFTMAX_GRAD, NoAttrs, _O, None, lambda a, xs: _same_shapes(xs, "softmax grad"),
          _grad_flops(3), mode="backward"),
    OpDef(Op.DROPOUT_GRAD, NoAttrs, _E, None, lambda a, xs: _same_shapes(xs, "dropout gradient"),
          _grad_flops(1), mode="backward"),
    OpDef(Op.RESHAPE, ReshapeAttrs, _I, 1, _reshape_infer, _elementwise_flops(0),
          mode="backward"),
    OpDef(Op.SPLIT, SplitAttrs, _I, 1, _split_infer, _elementwise_flops(0), mode="backward"),
    OpDef(Op.SGD_UPDATE, SgdAttrs, _O, None, _update_infer, _grad_flops(4), mode="update",
          effects=True),
    OpDef(Op.ADAM_UPDATE, AdamAttrs, _O, None, _update_infer, _grad_flops(10), mode="update",
          effects=True),
    OpDef(Op.ADAGRAD_UPDATE, AdagradAttrs, _O, None, _update_infer, _grad_flops(5),
          mode="update", effects=True),
    OpDef(Op.ALLREDUCE_START, AllreduceAttrs, _O, None, _allreduce_start_infer,
          lambda a, xs, o: 2 * _numel(o), mode="comm", effects=True),
    OpDef(Op.ALLREDUCE_WAIT, AllreduceAttrs, _O, None, _allreduce_wait_infer,
          lambda a, xs, o: 2 * _numel(xs[0]), mode="comm", effects=True),
    # ---- imported models (ONNX)
    OpDef(Op.TRANSPOSE, TransposeAttrs, _I, 1, _transpose_infer, _elementwise_flops(0)),
    OpDef(Op.PAD, PadAttrs, _I, 1, _pad_infer, _elementwise_flops(0)),
    OpDef(Op.BINARY, BinaryAttrs, _E, 2, _binary_infer, _elementwise_flops(1)),
    OpDef(Op.CLIP, ClipAttrs, _E, 1, _clip_infer, _elementwise_flops(2)),
    OpDef(Op.LOG_SOFTMAX, SoftmaxAttrs, _R, 1, _log_softmax_infer, _elementwise_flops(5)),
]}


def output_shapes(op: Op, attrs: Any, xs: list[Shape]) -> list[Shape]:
    """Every output's shape (the shape rule of a single-output op returns one tuple)."""
    out = OP_DEFS[op].infer(attrs, xs)
    return [tuple(s) for s in out] if isinstance(out, list) else [tuple(out)]


def op_def(op: Op | str) -> OpDef:
    """The OpDef of an op (by enum or snake_case name)."""
    try:
        return OP_DEFS[Op(op)]
    except ValueError:
        known = ", ".join(o.value for o in Op)
        raise KeyError(f"unknown op {op!r}; known ops: {known}") from None


def split_inputs(op: Op, attrs: Any, inputs: tuple[str, ...], n_params: int
                 ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Split a node's input names into (activations, params, residual)."""
    n_res = 1 if getattr(attrs, "residual", False) else 0
    n_act = len(inputs) - n_params - n_res
    return inputs[:n_act], inputs[n_act:n_act + n_params], inputs[n_act + n_params:]
