"""Helpers shared by the torch glue modules of every op family."""

import importlib

from mmkeras import _import_guard


def as_numpy(t):
    """A zero-copy numpy view of a CPU tensor (contiguous, detached)."""
    return t.detach().contiguous().numpy()


def triton_reason(module):
    """Why the Triton ops in `mmkeras.triton_kernels.<module>` cannot be
    used in this process, or None."""
    if _import_guard.TRITON_BLOCKED_REASON:
        return _import_guard.TRITON_BLOCKED_REASON
    try:
        importlib.import_module(f"mmkeras.triton_kernels.{module}")
    except ImportError as e:
        return f"Triton is not usable: {e}"
    return None
