"""Runs the Triton kernel tests on the CPU with the Triton interpreter.

`TRITON_INTERPRET=1` must be in the environment before a `@triton.jit` kernel
is decorated, i.e. before `mmkeras.triton_kernels.flash_attention` (or
`mmkeras`, which may import triton first) is imported. pytest imports this
conftest before the test modules of this directory, so setting it here is
early enough unless another test directory imported the kernels already; the
tests then skip and say so.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"
