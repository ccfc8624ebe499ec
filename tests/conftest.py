import glob
import os

# Native kernels fill their outputs with NaN before writing them, so a test
# sees any element a kernel forgets to write. Read once by the kernels.
os.environ.setdefault("MMKERAS_POISON_OUTPUTS", "1")

# Without an NVIDIA GPU the Triton kernels are tested in Triton's
# interpreter, which must be chosen before triton is first imported (and
# `import mmkeras` imports it: see mmkeras/_import_guard.py).
if not glob.glob("/dev/nvidia[0-9]*"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import mmkeras  # noqa: E402,F401  import order: see mmkeras/_import_guard.py
