"""cnncomp runtime: kernels (per target), the kernel registry, the arena and the executor.

This package never imports ``cnncomp`` or ``frontend``: it runs an explicit program of
kernel calls over buffers that the compiler hands it.
"""
from .registry import KernelKey, KernelNotFoundError, get_kernel, register_kernel, registered

__all__ = ["KernelKey", "KernelNotFoundError", "get_kernel", "register_kernel", "registered"]
