"""mmkeras: multimodal and cross-modal Keras 3 models with fused kernels.

Runs on the TensorFlow, JAX and PyTorch backends (`KERAS_BACKEND`). Fused ops
run a C++ kernel on the CPU, a Triton kernel on NVIDIA GPUs, and a pure
`keras.ops` reference everywhere else.
"""

# Must run before Keras is imported: see _import_guard.
from mmkeras import _import_guard  # noqa: F401  isort: skip
from mmkeras import _backend_check  # isort: skip

_backend_check.check()  # before Keras fails on a missing framework

from mmkeras.acceleration import accelerate
from mmkeras import distribution
from mmkeras import kernels
from mmkeras import layers
from mmkeras import losses
from mmkeras import models
from mmkeras import ops
from mmkeras.version import __version__

# Import the current backend's glue now (cheap; the C++ adapters are built
# lazily), so that its torch.library ops exist before any torch.compile trace.
for _family in kernels.FAMILIES:
    kernels.backend_glue(family=_family)
del _family

__all__ = ["accelerate", "distribution", "kernels", "layers", "losses", "models", "ops", "__version__"]
