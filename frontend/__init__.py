"""The cnncomp DSL: layers, symbolic tensors, Sequential/Model, and importers.

    import frontend as fe
    net = fe.Sequential(fe.Conv2d(6, 5, padding=2), fe.ReLU(), fe.MaxPool2d(2),
                        fe.Flatten(), fe.Linear(10), input_shape=(1, 28, 28))
"""
import runtime  # noqa: F401  (first: sets OpenBLAS's thread policy before numpy loads)

from .layers import (Add, AvgPool2d, BatchNorm2d, Concat, Conv2d, Dropout, Flatten,
                     GlobalAvgPool2d, Input, Layer, LeakyReLU, Linear, LocalResponseNorm,
                     LPPool2d, MaxPool2d, ReLU, Sigmoid, Softmax, SymbolicTensor, Tanh)
from .model import Model, Sequential, load
from .onnx_import import OnnxImportError, from_onnx

__all__ = ["Add", "AvgPool2d", "BatchNorm2d", "Concat", "Conv2d", "Dropout", "Flatten",
           "GlobalAvgPool2d", "Input", "Layer", "LeakyReLU", "Linear", "LocalResponseNorm",
           "LPPool2d", "MaxPool2d", "Model", "OnnxImportError", "ReLU", "Sequential", "Sigmoid",
           "Softmax", "SymbolicTensor", "Tanh", "from_onnx", "load"]
