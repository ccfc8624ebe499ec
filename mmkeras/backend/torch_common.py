"""Helpers shared by the torch glue modules of every op family."""

import importlib

import torch

from mmkeras import _import_guard
from mmkeras.backend import cpu_module


def as_numpy(t):
    """A zero-copy numpy view of a CPU tensor (contiguous, detached)."""
    return t.detach().contiguous().numpy()


def as_numpy_or_none(t):
    """`as_numpy` of an optional tensor (a mask, a bias): None stays None."""
    return None if t is None else as_numpy(t)


def cpu_kernels():
    """The pybind11 module of the C++ kernels, or a RuntimeError saying why
    it cannot be loaded."""
    kernels, reason = cpu_module.load()
    if kernels is None:
        raise RuntimeError(reason)
    return kernels


def save_with_lse(ctx, tensors, lse, **attrs):
    """For a `setup_context`: saves `tensors` (None allowed) and then `lse`,
    the statistics an op returns for its backward (not differentiable), and
    keeps the op's non-tensor arguments `attrs` on `ctx`."""
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(*tensors, lse)
    for name, value in attrs.items():
        setattr(ctx, name, value)


def define_triton_op():
    """The decorator that registers a Triton kernel's launcher as a torch op:
    `torch.library.triton_op`, or, under `TRITON_INTERPRET=1` (CPU tests),
    `torch.library.custom_op` (plus an allocation-only fake kernel that the
    caller registers). `wrap_triton` hands interpreted kernels back
    unwrapped, so torch cannot trace them, and `triton_op`'s fake/functional
    tracing would run the interpreter on fake tensors and fail. Eager
    behaviour, schemas and autograd are the same in both modes. Imports
    Triton: call it from the `torch_<family>_triton` modules only."""
    from mmkeras.triton_kernels.flash_attention_tuning import INTERPRET

    return torch.library.custom_op if INTERPRET else torch.library.triton_op


def triton_reason(module):
    """Why the Triton ops registered by `mmkeras.backend.<module>` cannot be
    used in this process, or None."""
    if _import_guard.TRITON_BLOCKED_REASON:
        return _import_guard.TRITON_BLOCKED_REASON
    try:
        importlib.import_module(f"mmkeras.backend.{module}")
    except ImportError as e:
        return f"Triton is not usable: {e}"
    return None


def unavailable_reason(x, triton_module, other_device):
    """Why the native kernels of a glue module cannot take a call on tensor
    `x`, or None: CUDA tensors run the Triton ops that
    `mmkeras.backend.<triton_module>` registers, CPU tensors the C++ kernels;
    `other_device`, formatted with the device type, says why no other device
    has them."""
    if x.device.type == "cuda":
        return triton_reason(triton_module)
    # "meta": Keras infers shapes on meta tensors; the custom ops' fake
    # kernels answer that, so the symbolic pass takes the native path too.
    if x.device.type not in ("cpu", "meta"):
        return other_device.format(x.device.type)
    return cpu_module.load()[1]


def status(cpu_name, cuda_name, triton_module):
    """`status()` rows of a glue module: its C++ CPU ops and its Triton CUDA
    ops (registered by `mmkeras.backend.<triton_module>`)."""
    reason = cpu_module.load()[1]
    rows = [(cpu_name, reason is None, reason)]
    if not torch.cuda.is_available():
        rows.append((cuda_name, False, "no CUDA device"))
    else:
        reason = triton_reason(triton_module)
        rows.append((cuda_name, reason is None, reason))
    return rows
