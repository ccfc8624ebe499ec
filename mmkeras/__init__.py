"""mmkeras: multimodal and cross-modal Keras 3 models with fused kernels.

Runs on the TensorFlow, JAX and PyTorch backends (`KERAS_BACKEND`). Fused ops
run a C++ kernel on the CPU, a Triton kernel on NVIDIA GPUs, and a pure
`keras.ops` reference everywhere else.
"""

import sys

# Must run before Keras is imported: see _import_guard.
from mmkeras import _import_guard  # noqa: F401  isort: skip
from mmkeras import _backend_check  # isort: skip

_backend_check.check()  # before Keras fails on a missing framework

# `mmkeras.kernels` is the public name of the kernel policy and report: the
# same module object, so `import mmkeras.kernels` and monkeypatching work.
from mmkeras import kernel_selection  # isort: skip

kernels = kernel_selection
sys.modules["mmkeras.kernels"] = kernel_selection

from mmkeras.acceleration import accelerate
from mmkeras import distribution
from mmkeras import layers
from mmkeras import losses
from mmkeras import models
from mmkeras import ops
from mmkeras.version import __version__

# Import the current backend's glue now (cheap; the C++ adapters are built
# lazily), so that its torch.library ops exist before any torch.compile trace.
for _family in kernel_selection.FAMILIES:
    kernel_selection.backend_glue(family=_family)
del _family

__all__ = ["accelerate", "distribution", "kernels", "layers", "losses", "models", "ops", "__version__"]
