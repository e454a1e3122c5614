"""CUDA kernels (numba-cuda) for NCHW inference, and the device executor.

Importing this package registers every CUDA kernel under target "cuda" (layout NCHW,
mode forward), with the attributes and semantics of the CPU kernels. It fails with a
clear ``CudaUnavailableError`` when numba-cuda is not installed, or when there is no GPU
and the CUDA simulator is off (NUMBA_ENABLE_CUDASIM=1, set before numba is imported).

Modules: ``conv`` (shared-memory tiled implicit-GEMM conv, direct depthwise conv),
``linear`` (tiled GEMM, concat), ``pool``, ``norm`` (batch norm, LRN, softmax),
``elementwise`` (activations, add, copies), ``executor`` (``CudaExecutor``: one device
arena), ``common`` (activation epilogue, launch records). Training: ``grad_conv``,
``grad_pool``, ``grad_norm`` (BN training/backward, loss), ``grad_elementwise``
(activation gradients, dropout, split) and ``optim`` (SGD, Adam, Adagrad updates), under
modes forward/backward/update.
"""
from ..cuda_status import CudaUnavailableError, require_cuda, simulator_enabled

require_cuda()
if simulator_enabled():
    from . import simulator
    simulator.install()  # shared arrays: one per block, even when threads race to make it

from . import conv, elementwise, linear, norm, pool  # noqa: E402,F401  (register kernels)
from . import grad_conv, grad_elementwise, grad_norm, grad_pool, optim  # noqa: E402,F401
from .common import LaunchConfig  # noqa: E402
from .executor import CudaExecutor  # noqa: E402

__all__ = ["CudaExecutor", "CudaUnavailableError", "LaunchConfig"]
