"""Loads the pybind11 module of the C++ CPU kernels, if it was built, and
finds the kernel library beside it that the other adapters link."""

import functools
from pathlib import Path

from mmkeras.backend import BuildFailure


@functools.cache
def load():
    """Returns `(module, None)` or `(None, reason)`."""
    try:
        from mmkeras import _cpu_kernels
    except ImportError as e:
        return None, BuildFailure(
            "the C++ kernels are not built or do not load (install mmkeras "
            f"with pip, which runs CMake): {e}"
        )
    return _cpu_kernels, None


def library_dir():
    """The folder of `libmmkeras_kernels.so` (beside the pybind11 module).

    Raises:
        RuntimeError: the C++ kernels are not built.
    """
    module, reason = load()
    if module is None:
        raise RuntimeError(reason)
    return Path(module.__file__).parent
