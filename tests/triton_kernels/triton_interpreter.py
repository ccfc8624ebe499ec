"""The module-level skips of the Triton kernel tests.

tests/conftest.py sets TRITON_INTERPRET=1 (on machines without an NVIDIA
GPU) before anything imports triton, so the kernels run in Triton's
interpreter on CPU torch tensors.
"""

import os

import pytest


def skip_unless_interpreted(gpu_check=None):
    """Skips the calling test module unless the Triton kernels run in Triton's
    interpreter here, in the torch backend's pass.

    Call it before importing torch: it imports triton first (the import-order
    hazard in docs/architecture.md).

    Args:
        gpu_check: the command that checks these kernels on a GPU machine
            instead, named in the skip reason; None when there is none.
    """
    try:
        import triton  # noqa: F401
    except ImportError as e:  # not installed, or blocked by the import guard
        pytest.skip(f"triton is not importable: {e}", allow_module_level=True)

    from mmkeras.triton_kernels import flash_attention as fa

    if fa._INTERPRET:
        reason = fa._interpreter_mismatch()
    else:
        reason = (
            "mmkeras.triton_kernels was imported without TRITON_INTERPRET=1 "
            "(a GPU machine): these tests run the kernels in Triton's "
            "interpreter"
        )
        if gpu_check is not None:
            reason += f"; run {gpu_check} on the GPU instead"
    if reason is not None:
        pytest.skip(reason, allow_module_level=True)
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "torch":
        pytest.skip(
            "the Triton kernels take torch tensors whatever KERAS_BACKEND is, "
            "so they are tested once, in the torch backend's pass",
            allow_module_level=True,
        )
