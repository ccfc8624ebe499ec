"""Per-backend glue between `mmkeras.ops` and the compiled kernels.

One module per (framework, op family), named `{backend}_{family}` (e.g.
`torch_attention`), each imported lazily so that a framework that is not
installed only disables its own adapters. Each exposes:

- the op functions, taking float32 tensors of the framework, differentiable;
- `unavailable_reason(x)`: why the native kernel cannot take a call on
  tensor `x` (device, build), or None;
- `status()`: a list of `(name, usable, detail)` for `mmkeras info`.
"""

import importlib
import sys

BACKENDS = ("tensorflow", "jax", "torch")
FAMILIES = ("attention", "fusion")


class BuildFailure(str):
    """A reason (a `str`) why a native kernel that should run here does not:
    its adapter failed to build, load or import. Unlike a reason such as an
    unsupported dtype or device, this is a bug the user must hear about, so
    auto mode warns once per process (`mmkeras.kernels.select_native`)."""


def glue(backend_name, family="attention"):
    """Returns the glue module of an op family on a Keras backend, or None
    when that backend has no native kernels."""
    if backend_name not in BACKENDS:
        return None
    if family not in FAMILIES:
        raise ValueError(f"unknown op family {family!r}; known: {FAMILIES}")
    module = f"mmkeras.backend.{backend_name}_{family}"
    # sys.modules first: torch.compile cannot trace importlib.
    return sys.modules.get(module) or importlib.import_module(module)
