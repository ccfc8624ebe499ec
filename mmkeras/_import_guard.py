"""Keeps TensorFlow and Triton from aborting the process together.

TensorFlow >= 2.20 loads its library with RTLD_GLOBAL; importing Triton after
it aborts the interpreter with "LLVM ERROR: inconsistency in registered
CommandLine options" (tensorflow/tensorflow#124205). Importing Triton first is
safe. PyTorch imports Triton lazily (e.g. from `torch.optim`), so the crash can
hit users who never asked for Triton.

The fix lives in the start-up hook python/_mmkeras_import_order.py (a .pth
file runs it in every process of the environment): a finder that imports
Triton just before TensorFlow. This module runs before anything in mmkeras
imports Keras (which may load TensorFlow) and covers what the hook cannot:
- TensorFlow already loaded, Triton not (the hook was skipped, e.g. under
  `python -S`): importing Triton would abort, so it is marked unimportable
  (`sys.modules["triton"] = None`); PyTorch then treats Triton as absent and
  falls back, and mmkeras reports why.
- Neither loaded: make sure the hook's finder is in place (importing the hook
  module installs it once); without the hook module, import Triton now.
See docs/architecture.md, "Import order".
"""

import importlib.util
import sys

#: Why Triton cannot be used in this process, or None.
TRITON_BLOCKED_REASON = None


def _installed(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def guard():
    global TRITON_BLOCKED_REASON
    if "triton" in sys.modules or not _installed("triton"):
        return
    if "tensorflow" in sys.modules:
        TRITON_BLOCKED_REASON = (
            "TensorFlow was imported before Triton in this process; importing "
            "Triton now would abort it (tensorflow/tensorflow#124205). Import "
            "mmkeras (or triton) before tensorflow/keras_hub to use Triton."
        )
        sys.modules["triton"] = None
        return
    if _installed("tensorflow"):
        try:
            import _mmkeras_import_order  # noqa: F401  installs the finder
        except ImportError:
            import triton  # noqa: F401


guard()
