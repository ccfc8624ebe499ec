"""`import mmkeras` names the one command that fixes a missing framework
(a plain `pip install mmkeras` installs none), instead of Keras's bare
`No module named ...`."""

import os
import subprocess
import sys

# Hides one framework from importlib, as if it were not installed, then
# imports mmkeras the way a user would.
HIDE_AND_IMPORT = """
import importlib.util, sys
hidden = sys.argv[1]
real_find_spec = importlib.util.find_spec
def find_spec(name, *args, **kwargs):
    if name.split(".")[0] == hidden:
        return None
    return real_find_spec(name, *args, **kwargs)
importlib.util.find_spec = find_spec
try:
    import mmkeras
except ImportError as e:
    print("ERROR", e)
else:
    print("IMPORTED")
"""


def test_missing_framework_says_what_to_install():
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    env = dict(os.environ, KERAS_BACKEND=backend)
    proc = subprocess.run([sys.executable, "-c", HIDE_AND_IMPORT, backend],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    others = " or ".join(b for b in ("tensorflow", "jax", "torch")
                         if b != backend)
    assert proc.stdout.strip().splitlines()[-1] == (
        f"ERROR mmkeras: the Keras backend {backend!r} needs {backend}, which "
        f"is not installed: pip install 'mmkeras[{backend}]' or set "
        f"KERAS_BACKEND to {others}"
    )


def test_installed_framework_imports():
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    proc = subprocess.run([sys.executable, "-c", HIDE_AND_IMPORT, "nothing"],
                          env=dict(os.environ, KERAS_BACKEND=backend),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "IMPORTED"
