"""Imports Triton just before TensorFlow, in every process of this env.

TensorFlow >= 2.20 loads its library with RTLD_GLOBAL; Triton imported after
it aborts the interpreter ("LLVM ERROR: inconsistency in registered
CommandLine options", tensorflow/tensorflow#124205). With Keras 3 installed,
`import tensorflow` itself imports Keras, and on the torch backend Keras
imports torch._dynamo, which imports Triton: the abort happens inside
`import tensorflow`, before any user code (or mmkeras) can act.

mmkeras installs `_mmkeras_import_order.pth`, which imports this module at
interpreter start-up. It only adds a finder to `sys.meta_path` (no cost
until TensorFlow is imported); when `tensorflow` is first imported, the
finder imports Triton first and removes itself. Importing Triton first is
safe. Nothing happens when Triton or TensorFlow is not installed.
"""

import importlib.util
import sys


class _TritonBeforeTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        self.remove()
        if "triton" not in sys.modules and importlib.util.find_spec("triton"):
            try:
                import triton  # noqa: F401
            except Exception:  # a broken triton must not break tensorflow
                pass
        return None  # let the normal finders import tensorflow

    def remove(self):
        if self in sys.meta_path:
            sys.meta_path.remove(self)


if "tensorflow" not in sys.modules and not any(
    isinstance(f, _TritonBeforeTensorFlow) for f in sys.meta_path
):
    sys.meta_path.insert(0, _TritonBeforeTensorFlow())
