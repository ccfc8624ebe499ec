"""Loads the pybind11 module of the C++ CPU kernels, if it was built."""

import functools


@functools.cache
def load():
    """Returns `(module, None)` or `(None, reason)`."""
    try:
        from mmkeras import _cpu_kernels
    except ImportError as e:
        return None, (
            "the C++ kernels are not built (install mmkeras with pip, which "
            f"runs CMake): {e}"
        )
    return _cpu_kernels, None
