"""Classic model-zoo architectures written in PyTorch (no torchvision), for ONNX import
tests: each is exported with torch.onnx.export and must import, compile with fusion and
match ONNX Runtime. Layer structure follows the papers / torchvision; input sizes and a
few widths are small so the tests stay quick (every architecture still has all its
layers: ResNet-50 has 16 bottlenecks, DenseNet-121 58 dense layers).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (eval mode)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.rand(c, generator=g) * 0.2 - 0.1)
    return model.eval()


class AlexNet(nn.Module):
    """Krizhevsky et al. 2012 (torchvision's single-tower version, LRN omitted)."""

    def __init__(self, classes: int = 100, hidden: int = 512):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(256 * 1 * 1, hidden), nn.ReLU(inplace=True),
            nn.Dropout(), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class VGG(nn.Module):
    """Simonyan & Zisserman 2014, configuration D (VGG-16) with BatchNorm."""
    CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
           512, 512, 512, "M"]

    def __init__(self, classes: int = 10):
        super().__init__()
        layers, c = [], 3
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(512, 512), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(512, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(h + (x if self.down is None else self.down(x)))


class ResNet50(nn.Module):
    """He et al. 2015: bottlenecks [3, 4, 6, 3]."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(True), nn.MaxPool2d(3, 2, 1))
        blocks, c = [], 64
        for width, n, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
            for i in range(n):
                blocks.append(Bottleneck(c, width, stride if i == 0 else 1))
                c = width * 4
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(2048, classes)

    def forward(self, x):
        h = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


class _BasicConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, **kw):
        super().__init__(nn.Conv2d(cin, cout, k, bias=False, **kw), nn.BatchNorm2d(cout),
                         nn.ReLU(True))


class Inception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pool):
        super().__init__()
        self.b1 = _BasicConv(cin, c1, 1)
        self.b2 = nn.Sequential(_BasicConv(cin, c3r, 1), _BasicConv(c3r, c3, 3, padding=1))
        self.b3 = nn.Sequential(_BasicConv(cin, c5r, 1), _BasicConv(c5r, c5, 5, padding=2))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), _BasicConv(cin, pool, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    """Szegedy et al. 2014 (Inception v1), with torchvision's BatchNorm convs."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(
            _BasicConv(3, 64, 7, stride=2, padding=3), nn.MaxPool2d(3, 2, ceil_mode=True),
            _BasicConv(64, 64, 1), _BasicConv(64, 192, 3, padding=1),
            nn.MaxPool2d(3, 2, ceil_mode=True))
        self.i3 = nn.Sequential(Inception(192, 64, 96, 128, 16, 32, 32),
                                Inception(256, 128, 128, 192, 32, 96, 64),
                                nn.MaxPool2d(3, 2, ceil_mode=True))
        self.i4 = nn.Sequential(Inception(480, 192, 96, 208, 16, 48, 64),
                                Inception(512, 160, 112, 224, 24, 64, 64),
                                Inception(512, 128, 128, 256, 24, 64, 64),
                                Inception(512, 112, 144, 288, 32, 64, 64),
                                Inception(528, 256, 160, 320, 32, 128, 128),
                                nn.MaxPool2d(2, 2, ceil_mode=True))
        self.i5 = nn.Sequential(Inception(832, 256, 160, 320, 32, 128, 128),
                                Inception(832, 384, 192, 384, 48, 128, 128))
        self.fc = nn.Linear(1024, classes)

    def forward(self, x):
        h = self.i5(self.i4(self.i3(self.stem(x))))
        h = torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)
        return self.fc(F.dropout(h, 0.2, self.training))


class Fire(nn.Module):
    def __init__(self, cin, s, e1, e3):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, s, 1)
        self.e1, self.e3 = nn.Conv2d(s, e1, 1), nn.Conv2d(s, e3, 3, padding=1)

    def forward(self, x):
        h = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.e1(h)), F.relu(self.e3(h))], 1)


class SqueezeNet(nn.Module):
    """Iandola et al. 2016, SqueezeNet 1.0."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 7, stride=2), nn.ReLU(True), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(96, 16, 64, 64), Fire(128, 16, 64, 64), Fire(128, 32, 128, 128),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(256, 32, 128, 128), Fire(256, 48, 192, 192), Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(512, 64, 256, 256))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(512, classes, 1),
                                        nn.ReLU(True), nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int = 4):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, bn_size * growth, 1,
                                                              bias=False)
        self.bn2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        h = self.conv1(F.relu(self.bn1(x)))
        return torch.cat([x, self.conv2(F.relu(self.bn2(h)))], 1)


class DenseNet121(nn.Module):
    """Huang et al. 2016: dense blocks [6, 12, 24, 16], growth 32, compression 0.5."""

    def __init__(self, classes: int = 1000, growth: int = 32):
        super().__init__()
        layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
                  nn.MaxPool2d(3, 2, 1)]
        c = 64
        for i, n in enumerate([6, 12, 24, 16]):
            for _ in range(n):
                layers.append(DenseLayer(c, growth))
                c += growth
            if i < 3:
                layers += [nn.BatchNorm2d(c), nn.ReLU(True), nn.Conv2d(c, c // 2, 1, bias=False),
                           nn.AvgPool2d(2, 2)]
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU(True)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(n, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, stride: int, first: bool = False):
        super().__init__()
        self.stride, self.groups = stride, groups
        mid = cout // 4
        out = cout - cin if stride == 2 else cout
        self.g1 = nn.Conv2d(cin, mid, 1, groups=1 if first else groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.dw = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.g2 = nn.Conv2d(mid, out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out)

    def forward(self, x):
        h = F.relu(self.bn1(self.g1(x)))
        h = self.bn2(self.dw(channel_shuffle(h, self.groups)))
        h = self.bn3(self.g2(h))
        if self.stride == 2:
            return F.relu(torch.cat([F.avg_pool2d(x, 3, 2, 1), h], 1))
        return F.relu(x + h)


class ShuffleNet(nn.Module):
    """Zhang et al. 2017, ShuffleNet v1 with g = 3 (stages of 4, 8, 4 units)."""

    def __init__(self, classes: int = 1000, groups: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 3, 2, 1, bias=False), nn.BatchNorm2d(24),
                                  nn.ReLU(True), nn.MaxPool2d(3, 2, 1))
        units, c = [], 24
        for i, (cout, n) in enumerate([(240, 4), (480, 8), (960, 4)]):
            for j in range(n):
                units.append(ShuffleUnit(c, cout, groups, 2 if j == 0 else 1,
                                         first=(i == 0 and j == 0)))
                c = cout
        self.units = nn.Sequential(*units)
        self.fc = nn.Linear(960, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.units(self.stem(x)), 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU6(True), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.body(x) if self.use_res else self.body(x)


class MobileNetV2(nn.Module):
    """Sandler et al. 2018 (ReLU6 exports as Clip)."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1)]
        layers, c = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32),
                     nn.ReLU6(True)], 32
        for t, cout, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(c, cout, s if i == 0 else 1, t))
                c = cout
        layers += [nn.Conv2d(c, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(True)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(1280, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# name -> (constructor, input size)
ARCHITECTURES = {
    "alexnet": (AlexNet, 64),
    "vgg16_bn": (VGG, 32),
    "resnet50": (ResNet50, 64),
    "googlenet": (GoogLeNet, 64),
    "squeezenet": (SqueezeNet, 64),
    "densenet121": (DenseNet121, 64),
    "shufflenet": (ShuffleNet, 64),
    "mobilenet_v2": (MobileNetV2, 64),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, int]:
    ctor, size = ARCHITECTURES[name]
    torch.manual_seed(seed)
    return _randomize_bn(ctor(), seed), size
