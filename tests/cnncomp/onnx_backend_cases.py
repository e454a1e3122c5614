"""Which cases of the official ONNX backend test suite (shipped inside the onnx package)
cnncomp runs, which operator each one tests, and why the known failures fail.

Used by tests/cnncomp/test_onnx_backend.py (CI: the known failures are excluded, every
other selected case must pass) and benchmarks/onnx_backend.py (runs every selected case,
known failures included, and writes the per-operator table
benchmarks/results/onnx_backend.md).
"""
from __future__ import annotations

import re
import warnings

# Node test cases (one operator each, generated in memory by onnx.backend.test.case):
# operator -> pattern over the test name (without the _cpu/_cuda suffix)
NODE_OPERATORS = [
    ("Conv", r"^test_(basic_conv|conv)_with"),
    ("BatchNormalization", r"^test_batchnorm_"),
    ("Relu", r"^test_relu"),
    ("LeakyRelu", r"^test_leakyrelu"),
    ("Sigmoid", r"^test_sigmoid"),
    ("Tanh", r"^test_tanh"),
    ("Softmax", r"^test_softmax_(?!cross)"),
    ("LogSoftmax", r"^test_logsoftmax_"),
    ("MaxPool", r"^test_maxpool_"),
    ("AveragePool", r"^test_averagepool_"),
    ("GlobalAveragePool", r"^test_globalaveragepool"),
    ("GlobalMaxPool", r"^test_globalmaxpool"),
    ("LpPool", r"^test_lppool_"),
    ("LRN", r"^test_lrn"),
    ("Gemm", r"^test_gemm_"),
    ("MatMul", r"^test_matmul_"),
    ("Flatten", r"^test_flatten_"),
    ("Reshape", r"^test_reshape_"),
    ("Concat", r"^test_concat_"),
    ("Add", r"^test_add(_|$)"),
    ("Sum", r"^test_sum_"),
    ("Mul", r"^test_mul(_|$)"),
    ("Dropout", r"^test_(training_)?dropout"),
    ("Pad", r"^test_(constant|edge|reflect|wrap)_pad"),
    ("Clip", r"^test_clip"),
    ("Identity", r"^test_identity"),
    ("Transpose", r"^test_transpose_"),
    ("Constant", r"^test_constant$"),
    ("ConstantOfShape", r"^test_constantofshape_"),
]

# Model test cases: PyTorch exports of single layers (pytorch-converted,
# pytorch-operator) and the model-zoo architectures of data/real, which read the small
# files in data/light (no download); operator -> pattern
MODEL_OPERATORS = [
    ("Conv", r"^test_(Conv[12]d|operator_conv$)"),
    ("BatchNormalization", r"^test_BatchNorm[12]d"),
    ("Relu", r"^test_ReLU$"),
    ("LeakyRelu", r"^test_LeakyReLU"),
    ("Sigmoid", r"^test_Sigmoid$"),
    ("Tanh", r"^test_Tanh$"),
    ("Softmax", r"^test_(Softmax$|softmax_)"),
    ("LogSoftmax", r"^test_(LogSoftmax$|log_softmax_)"),
    ("MaxPool", r"^test_(MaxPool[12]d|operator_maxpool$)"),
    ("AveragePool", r"^test_AvgPool[12]d"),
    ("Gemm", r"^test_(Linear|operator_addmm$|operator_mm$)"),
    ("Pad", r"^test_(ZeroPad2d|ConstantPad2d|ReflectionPad2d|ReplicationPad2d|operator_pad$)"),
    ("Add", r"^test_operator_add"),
    ("Clip", r"^test_operator_clip$"),
    ("Concat", r"^test_operator_concat2$"),
    ("Flatten", r"^test_operator_flatten$"),
    ("Transpose", r"^test_operator_permute2$"),
    ("Reshape", r"^test_operator_view$"),
    ("model zoo", r"^test_(bvlc_alexnet|densenet121|inception_v1|inception_v2|resnet50|"
                  r"shufflenet|squeezenet|vgg19|zfnet512)$"),
]

# Known failures: pattern over the test name -> why cnncomp does not pass it
KNOWN_FAILURES = {
    r"^test_(add|mul|clip_default|max|min)_u?int(8|16|32|64)|^test_maxpool_2d_uint8"
    r"|^test_(edge|reflect|wrap)_pad$":
        "integer data: cnncomp computes float32 activations (the int Pad cases are "
        "int32 data)",
    r"^test_(maxpool|averagepool|lppool)_3d_":
        "3-D pooling: cnncomp's windows are 1-D and 2-D",
    r"^test_(batchnorm_\w+_training_mode|training_dropout(_default)?(_mask)?$)":
        "training mode: BatchNormalization on batch statistics, Dropout with ratio > 0 "
        "(random); cnncomp imports inference graphs",
    r"^test_maxpool_with_argmax":
        "MaxPool's Indices (argmax) output is not computed",
    r"^test_(averagepool|lppool)_2d_dilations$":
        "dilated average / LP pooling: those kernels have no dilation (MaxPool has)",
    r"^test_gemm_(transposeA|all_attributes|default_matrix_bias)$":
        "transA=1 or a C that differs per row mixes ONNX axis 0, cnncomp's batch axis, "
        "into the computation (and the one-sample import needs a single row)",
    r"^test_matmul_(3d|4d|bcast|1d_3d|4d_1d|1d_1d)$":
        "batched or 1-D MatMul: cnncomp's linear is (N, K) @ constant (K, M)",
    r"^test_identity_(opt|sequence)$":
        "optional and sequence types: cnncomp's values are tensors",
    r"^test_(softmax|logsoftmax|leakyrelu)_\w*expanded"
    r"|^test_clip_(?!default_inbounds)(\w*_)?expanded":
        "function-body expansion into operators outside the CNN set (ReduceMax, ReduceSum, "
        "Exp, Less, Where on activations)",
    r"^test_operator_(add_broadcast|add_size1_right_broadcast|add_size1_singleton_broadcast"
    r"|addconstant)$":
        "the test data are uninitialized float64 values (up to 1e223), beyond float32",
}


def _name(test: str) -> str:
    return re.sub(r"_(cpu|cuda)$", "", test)


def operator_of(test: str) -> str:
    """The operator a selected test case exercises ('' if none is selected)."""
    name = _name(test)
    for op, pat in NODE_OPERATORS + MODEL_OPERATORS:
        if re.search(pat, name):
            return op
    return ""


def known_failure(test: str) -> str:
    """Why a test case is known to fail ('' if it is expected to pass)."""
    name = _name(test)
    for pat, why in KNOWN_FAILURES.items():
        if re.search(pat, name):
            return why
    return ""


def selected(test: str) -> bool:
    """Is this test case (a BackendTest method name) one cnncomp runs? CPU variants of
    the cases above."""
    return test.endswith("_cpu") and bool(operator_of(test))


def backend_test_cases(parent_module: str, with_known_failures: bool = False) -> dict:
    """unittest TestCase classes of onnx.backend.test.BackendTest over
    cnncomp.onnx_backend, holding only the selected cases; known failures are skipped
    with their reason unless ``with_known_failures``."""
    import unittest

    import onnx.backend.test

    import cnncomp.onnx_backend as backend
    with warnings.catch_warnings():  # the case generators divide by zero on purpose
        warnings.simplefilter("ignore")
        classes = onnx.backend.test.BackendTest(backend, parent_module).test_cases
    for cls in classes.values():
        for attr in [a for a in vars(cls) if a.startswith("test_")]:
            if not selected(attr):
                delattr(cls, attr)
            elif not with_known_failures and known_failure(attr):
                setattr(cls, attr, unittest.skip(f"known failure: {known_failure(attr)}")(
                    getattr(cls, attr)))
    return {k: c for k, c in classes.items() if any(a.startswith("test_") for a in vars(c))}
