"""TensorFlow-then-Triton import order must never take down the process.

Each case runs in a fresh interpreter (the hazard is about what a process
imported first): see mmkeras/_import_guard.py.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

if os.environ.get("KERAS_BACKEND", "tensorflow") != "torch":
    pytest.skip(
        "each case starts its own interpreters with their own backends; they "
        "run once, in the torch backend's pass",
        allow_module_level=True,
    )

CALL_AND_TRAIN = """
import numpy as np
import mmkeras
x = np.random.rand(1, 9, 2, 8).astype("float32")
out = mmkeras.ops.fused_attention(x, x, x)
assert out.shape == (1, 9, 2, 8)
for row in mmkeras.kernels.available():
    print("KERNEL", row["kernel"], row["usable"], row["detail"])
print("BLOCKED", mmkeras._import_guard.TRITON_BLOCKED_REASON)
import torch
p = torch.zeros(3, requires_grad=True)
opt = torch.optim.Adam([p])  # imports triton lazily in torch
(p * 2).sum().backward()
opt.step()
print("OK")
"""


def _run(prelude, backend="torch"):
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-c", prelude + CALL_AND_TRAIN],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout
    return proc.stdout


needs_triton_and_tf = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None
    or importlib.util.find_spec("tensorflow") is None,
    reason="needs both triton and tensorflow installed for the hazard to occur",
)

# Removes the start-up hook of _mmkeras_import_order.pth, to exercise
# mmkeras' own guard as in an environment without the hook.
WITHOUT_HOOK = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path
                    if type(f).__name__ != "_TritonBeforeTensorFlow"]
"""


@needs_triton_and_tf
def test_tensorflow_imported_first_on_torch_backend():
    # With Keras 3 installed, `import tensorflow` imports Keras, which on the
    # torch backend imports torch._dynamo and Triton: the start-up hook
    # imports Triton first, so this works and Triton stays usable.
    out = _run("import tensorflow\n")
    assert "BLOCKED None" in out


@needs_triton_and_tf
def test_guard_without_hook_blocks_triton_and_reports_why():
    out = _run(WITHOUT_HOOK + "import tensorflow\n", backend="jax")
    blocked = [line for line in out.splitlines() if line.startswith("BLOCKED")]
    assert "tensorflow/tensorflow#124205" in blocked[0]


def test_keras_hub_imported_before_mmkeras():
    # keras-hub imports TensorFlow: the hazard's most common way in.
    assert importlib.util.find_spec("keras_hub") is not None, (
        "keras_hub is not installed: scripts/setup.sh installs it (without "
        "tensorflow-text, which would pull the full tensorflow package)")
    _run("import keras_hub\n")


@needs_triton_and_tf
def test_mmkeras_first_keeps_triton_usable():
    out = _run(WITHOUT_HOOK + "import mmkeras\nimport tensorflow\n")
    assert "BLOCKED None" in out
