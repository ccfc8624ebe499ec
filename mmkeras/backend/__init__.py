"""Per-backend glue between `mmkeras.ops` and the compiled kernels.

One module per framework, each imported lazily, so that a framework that is
not installed only disables its own adapter. Each exposes:

- `attention(query, key, value, mask, is_causal, scale)`: float32 tensors in
  the framework's type, differentiable.
- `unavailable_reason(query)`: why the native kernel cannot take this call,
  or None.
- `status()`: a list of `(name, usable, detail)` for `mmkeras info`.
"""

import importlib
import sys

_MODULES = {
    "torch": "mmkeras.backend.torch_glue",
    "jax": "mmkeras.backend.jax_glue",
    "tensorflow": "mmkeras.backend.tensorflow_glue",
}


def glue(backend_name):
    """Returns the glue module for a Keras backend name, or None."""
    module = _MODULES.get(backend_name)
    if module is None:
        return None
    # sys.modules first: torch.compile cannot trace importlib.
    return sys.modules.get(module) or importlib.import_module(module)
