"""Framework glue between `mmkeras.ops` and the compiled kernels.

One module per (framework, op family), named `<framework>_<family>`, listed
in `GLUE` and imported lazily, so that a framework that is not installed only
disables its own glue. The torch modules hand CUDA tensors to a companion
module, `torch_<family>_triton`, that registers the Triton kernels as torch
custom ops; JAX runs its GPU attention in Pallas (`mmkeras.pallas_kernels`).
The layers, the dispatch and how the kernels are built: docs/architecture.md.
"""

import importlib
import sys
from typing import Protocol

BACKENDS = ("tensorflow", "jax", "torch")
FAMILIES = ("attention", "fusion", "contrastive")

# The public ops of each family. A glue module has one function per op, of
# the op's name.
FAMILY_OPS = {
    "attention": ("fused_attention",),
    "fusion": ("gated_fusion", "low_rank_fusion"),
    "contrastive": ("contrastive_loss",),
}
OP_FAMILY = {op: family for family, ops in FAMILY_OPS.items() for op in ops}

# (backend, family) -> the glue module that runs that family's native kernels.
GLUE = {
    ("tensorflow", "attention"): "mmkeras.backend.tensorflow_attention",
    ("tensorflow", "fusion"): "mmkeras.backend.tensorflow_fusion",
    ("tensorflow", "contrastive"): "mmkeras.backend.tensorflow_contrastive",
    ("jax", "attention"): "mmkeras.backend.jax_attention",
    ("jax", "fusion"): "mmkeras.backend.jax_fusion",
    ("jax", "contrastive"): "mmkeras.backend.jax_contrastive",
    ("torch", "attention"): "mmkeras.backend.torch_attention",
    ("torch", "fusion"): "mmkeras.backend.torch_fusion",
    ("torch", "contrastive"): "mmkeras.backend.torch_contrastive",
}


class Glue(Protocol):
    """What every glue module provides besides its ops: one function per op
    of its family (`FAMILY_OPS`), of the op's name, that takes float32 tensors
    of its framework and is differentiable (`mmkeras.ops._dispatch` calls
    it)."""

    def unavailable_reason(self, x) -> "str | None":
        """Why the native kernels cannot take a call on tensor `x` (device,
        build), or None. A `BuildFailure` when they should but cannot."""

    def status(self) -> "list[tuple[str, bool, str | None]]":
        """`(kernel name, usable, why not)` rows for `mmkeras info`."""


class BuildFailure(str):
    """A reason (a `str`) why a native kernel that should run here does not:
    its adapter failed to build, load or import. Unlike a reason such as an
    unsupported dtype or device, this is a bug the user must hear about, so
    auto mode warns once per process (`mmkeras.kernel_selection`)."""


def glue(backend_name, family="attention"):
    """Returns the glue module of an op family on a Keras backend, or None
    when that backend has no native kernels."""
    if family not in FAMILIES:
        raise ValueError(
            f"Argument `family` must be one of {FAMILIES}. "
            f"Received: family={family!r}"
        )
    name = GLUE.get((backend_name, family))
    if name is None:
        return None
    # sys.modules first: torch.compile cannot trace importlib.
    return sys.modules.get(name) or importlib.import_module(name)
