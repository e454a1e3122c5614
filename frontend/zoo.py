"""Ready-made networks, written in the DSL, as DESIGN.md defines them for tests/benchmarks.

    from frontend import zoo
    net = zoo.resnet18_cifar()          # or zoo.get("resnet18")
    zoo.randomize_bn_stats(net, seed=0) # non-trivial BatchNorm, as benchmarks use

Layer names use underscores ("l2_0_conv1"): names cannot contain dots, which separate
a layer from its parameter ("l2_0_conv1.weight").
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from . import layers as L
from .layers import SymbolicTensor
from .model import Model, Sequential


def conv_bn_relu(h: SymbolicTensor, out: int, k: int, stride: int = 1, pad: int = 0,
                 name: str = "", relu: bool = True, groups: int = 1) -> SymbolicTensor:
    """Conv2d (no bias) -> BatchNorm2d [-> ReLU], the block every modern CNN repeats."""
    h = L.Conv2d(out, k, stride=stride, padding=pad, groups=groups, bias=False,
                 name=f"{name}_conv")(h)
    h = L.BatchNorm2d(name=f"{name}_bn")(h)
    return L.ReLU(name=f"{name}_relu")(h) if relu else h


# --------------------------------------------------------------------------- LeNet / AlexNet

def lenet5(seed: int = 0, name: str = "lenet5") -> Model:
    """LeNet-5 on 1x28x28: conv5x5(6, pad 2)-ReLU-pool, conv5x5(16)-ReLU-pool, 120-84-10."""
    return Sequential(
        L.Conv2d(6, 5, padding=2, name="c1"), L.ReLU(name="r1"), L.MaxPool2d(2, name="p1"),
        L.Conv2d(16, 5, name="c2"), L.ReLU(name="r2"), L.MaxPool2d(2, name="p2"),
        L.Flatten(name="flat"), L.Linear(120, name="f3"), L.ReLU(name="r3"),
        L.Linear(84, name="f4"), L.ReLU(name="r4"), L.Linear(10, name="f5"),
        input_shape=(1, 28, 28), name=name, seed=seed)


def alexnet_cifar(num_classes: int = 10, seed: int = 0, name: str = "alexnet") -> Model:
    """AlexNet's structure (5 convs, LRN after the first two, 3 FC with dropout) at 32x32."""
    return Sequential(
        L.Conv2d(64, 5, padding=2, name="c1"), L.ReLU(name="r1"),
        L.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0, name="n1"),
        L.MaxPool2d(3, 2, name="p1"),
        L.Conv2d(128, 5, padding=2, name="c2"), L.ReLU(name="r2"),
        L.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0, name="n2"),
        L.MaxPool2d(3, 2, name="p2"),
        L.Conv2d(192, 3, padding=1, name="c3"), L.ReLU(name="r3"),
        L.Conv2d(192, 3, padding=1, name="c4"), L.ReLU(name="r4"),
        L.Conv2d(128, 3, padding=1, name="c5"), L.ReLU(name="r5"),
        L.MaxPool2d(3, 2, name="p5"), L.Flatten(name="flat"),
        L.Dropout(0.5, name="d6"), L.Linear(512, name="f6"), L.ReLU(name="r6"),
        L.Dropout(0.5, name="d7"), L.Linear(256, name="f7"), L.ReLU(name="r7"),
        L.Linear(num_classes, name="f8"),
        input_shape=(3, 32, 32), name=name, seed=seed)


# --------------------------------------------------------------------------- VGG

VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"]


def _vgg(cfg: list, num_classes: int, seed: int, name: str) -> Model:
    x = L.Input((3, 32, 32), name="x")
    h, i = x, 0
    for v in cfg:
        if v == "M":
            h = L.MaxPool2d(2, name=f"pool{i}")(h)
        else:
            i += 1
            h = conv_bn_relu(h, v, 3, pad=1, name=f"b{i}")
    h = L.Flatten(name="flat")(h)
    return Model(x, L.Linear(num_classes, name="fc")(h), name=name, seed=seed)


def vgg11_bn_cifar(num_classes: int = 10, seed: int = 0, name: str = "vgg11") -> Model:
    """VGG-11 with BN at 32x32: each conv3x3 (pad 1, no bias)-BN-ReLU; Linear(512, 10)."""
    return _vgg(VGG11, num_classes, seed, name)


def vgg16_cifar(num_classes: int = 10, seed: int = 0, name: str = "vgg16") -> Model:
    """VGG-16 with BN at 32x32."""
    return _vgg(VGG16, num_classes, seed, name)


# --------------------------------------------------------------------------- ResNet

def basic_block_on(h: SymbolicTensor, out: int, stride: int, name: str) -> SymbolicTensor:
    """ResNet BasicBlock: two 3x3 conv-BN, a 1x1 conv-BN projection when the shape changes."""
    y = conv_bn_relu(h, out, 3, stride, 1, name=f"{name}_1")
    y = conv_bn_relu(y, out, 3, 1, 1, name=f"{name}_2", relu=False)
    if stride != 1 or h.shape[1] != out:
        h = conv_bn_relu(h, out, 1, stride, 0, name=f"{name}_proj", relu=False)
    return L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")(h, y))


def _resnet18(x: SymbolicTensor, h: SymbolicTensor, num_classes: int, seed: int,
              name: str) -> Model:
    for stage, width in enumerate([64, 128, 256, 512], start=1):
        for b in range(2):
            stride = 2 if stage > 1 and b == 0 else 1
            h = basic_block_on(h, width, stride, f"l{stage}_{b}")
    h = L.GlobalAvgPool2d(name="gap")(h)
    return Model(x, L.Linear(num_classes, name="fc")(h), name=name, seed=seed)


def resnet18_cifar(num_classes: int = 10, seed: int = 0, name: str = "resnet18") -> Model:
    """CIFAR ResNet-18: 3x3 stem (no max-pool), BasicBlocks [2,2,2,2] x [64..512]."""
    x = L.Input((3, 32, 32), name="x")
    return _resnet18(x, conv_bn_relu(x, 64, 3, 1, 1, name="stem"), num_classes, seed, name)


def resnet18_224(num_classes: int = 1000, seed: int = 0, name: str = "resnet18_224") -> Model:
    """ImageNet ResNet-18 at 224x224: 7x7/2 stem conv-BN-ReLU and a 3x3/2 max-pool."""
    x = L.Input((3, 224, 224), name="x")
    h = L.MaxPool2d(3, 2, padding=1, name="stem_pool")(conv_bn_relu(x, 64, 7, 2, 3, name="stem"))
    return _resnet18(x, h, num_classes, seed, name)


def basic_block(channels: int = 16, hw: int = 8, seed: int = 0,
                name: str = "basic_block") -> Model:
    """One ResNet BasicBlock with an identity shortcut, for tests."""
    x = L.Input((channels, hw, hw), name="x")
    return Model(x, basic_block_on(x, channels, 1, "b"), name=name, seed=seed)


# --------------------------------------------------------------------------- MobileNet

MOBILENET_V1 = [64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512,
                (1024, 2), 1024]


def mobilenet_v1_cifar(num_classes: int = 10, seed: int = 0, name: str = "mobilenet") -> Model:
    """MobileNetV1 at 32x32: stem conv3x3(32), 13 depthwise-separable blocks, GAP, Linear."""
    x = L.Input((3, 32, 32), name="x")
    h = conv_bn_relu(x, 32, 3, 1, 1, name="stem")
    for i, spec in enumerate(MOBILENET_V1, start=1):
        out, stride = spec if isinstance(spec, tuple) else (spec, 1)
        c = h.shape[1]
        h = conv_bn_relu(h, c, 3, stride, 1, groups=c, name=f"dw{i}")
        h = conv_bn_relu(h, out, 1, name=f"pw{i}")
    h = L.GlobalAvgPool2d(name="gap")(h)
    return Model(x, L.Linear(num_classes, name="fc")(h), name=name, seed=seed)


# --------------------------------------------------------------------------- Inception

def inception_module(h: SymbolicTensor, c1: int, c3r: int, c3: int, c5r: int, c5: int,
                     cp: int, name: str) -> SymbolicTensor:
    """GoogLeNet module: 1x1 | 1x1->3x3 | 1x1->5x5 | maxpool3x3->1x1, concatenated."""
    a = conv_bn_relu(h, c1, 1, name=f"{name}_1x1")
    b = conv_bn_relu(conv_bn_relu(h, c3r, 1, name=f"{name}_3x3r"), c3, 3, pad=1,
                     name=f"{name}_3x3")
    c = conv_bn_relu(conv_bn_relu(h, c5r, 1, name=f"{name}_5x5r"), c5, 5, pad=2,
                     name=f"{name}_5x5")
    d = conv_bn_relu(L.MaxPool2d(3, 1, padding=1, name=f"{name}_pool")(h), cp, 1,
                     name=f"{name}_poolproj")
    return L.Concat(name=f"{name}_cat")(a, b, c, d)


def inception_cifar(num_classes: int = 10, seed: int = 0, name: str = "inception") -> Model:
    """Stem conv3x3(64), modules 3a (at 32x32) and 3b (after a 3x3/2 max-pool), GAP, Linear."""
    x = L.Input((3, 32, 32), name="x")
    h = conv_bn_relu(x, 64, 3, 1, 1, name="stem")
    h = inception_module(h, 64, 96, 128, 16, 32, 32, "i3a")
    h = L.MaxPool2d(3, 2, padding=1, name="pool3")(h)
    h = inception_module(h, 128, 128, 192, 32, 96, 64, "i3b")
    h = L.GlobalAvgPool2d(name="gap")(h)
    return Model(x, L.Linear(num_classes, name="fc")(h), name=name, seed=seed)


def inception_block(channels: int = 16, hw: int = 8, seed: int = 0,
                    name: str = "inception_block") -> Model:
    """One small Inception module, for tests."""
    x = L.Input((channels, hw, hw), name="x")
    return Model(x, inception_module(x, 8, 6, 8, 2, 4, 4, "m"), name=name, seed=seed)


# --------------------------------------------------------------------------- lookup

def digits_cnn(seed: int = 0) -> Model:
    """A LeNet-style CNN for scikit-learn's 8x8 digits (examples/train_digits.py):
    conv-BN-ReLU x2, max-pool, conv-ReLU, max-pool, Linear-ReLU-Dropout, Linear."""
    return Sequential(
        L.Conv2d(32, 3, padding=1, bias=False, name="c1"), L.BatchNorm2d(name="bn1"), L.ReLU(),
        L.Conv2d(64, 3, padding=1, bias=False, name="c2"), L.BatchNorm2d(name="bn2"), L.ReLU(),
        L.MaxPool2d(2),                                                    # 8x8 -> 4x4
        L.Conv2d(64, 3, padding=1, name="c3"), L.ReLU(), L.MaxPool2d(2),   # -> 2x2
        L.Flatten(), L.Linear(128, name="fc1"), L.ReLU(), L.Dropout(0.25),
        L.Linear(10, name="fc2"), input_shape=(1, 8, 8), name="digits_cnn", seed=seed)


BUILTIN: dict[str, Callable[..., Model]] = {
    "lenet5": lenet5, "alexnet": alexnet_cifar, "vgg11": vgg11_bn_cifar, "vgg16": vgg16_cifar,
    "resnet18": resnet18_cifar, "resnet18_224": resnet18_224,
    "mobilenet": mobilenet_v1_cifar, "inception": inception_cifar, "digits_cnn": digits_cnn,
}


def get(name: str, **kwargs) -> Model:
    """A built-in network by name (see BUILTIN)."""
    try:
        return BUILTIN[name](**kwargs)
    except KeyError:
        raise KeyError(f"unknown network {name!r}; built-in networks: "
                       f"{', '.join(BUILTIN)} (or pass a .py file defining `net`)") from None


def randomize_bn_stats(net: Model, seed: int = 0, spread: float = 0.1,
                       gain: Optional[float] = None) -> Model:
    """Give every BatchNorm non-trivial statistics and affine parameters (in place).

    running_mean ~ N(0, spread), running_var ~ U(0.5, 1.5), weight ~ N(1, spread) (or
    ``gain`` * N(1, spread)), bias ~ N(0, spread): like a trained network, unlike init.
    """
    rng = np.random.default_rng(seed)
    p = net.parameters()
    bns = sorted({k.rsplit(".", 1)[0] for k in p if k.endswith(".running_var")})
    for layer in bns:
        c = p[f"{layer}.running_var"].shape
        p[f"{layer}.running_mean"] = rng.normal(0, spread, c).astype(np.float32)
        p[f"{layer}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        p[f"{layer}.weight"] = (rng.normal(1, spread, c) * (gain or 1.0)).astype(np.float32)
        p[f"{layer}.bias"] = rng.normal(0, spread, c).astype(np.float32)
    net.load_parameters(p)
    return net
