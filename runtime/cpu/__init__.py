"""CPU kernels (Numba). Importing this package registers every CPU kernel."""
from . import conv, elementwise, linear, norm, pool  # noqa: F401  (register on import)
