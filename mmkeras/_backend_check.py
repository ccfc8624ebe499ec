"""Says what to install when the framework of the Keras backend is missing.

Keras imports its backend's framework on `import keras` and fails with a bare
`No module named 'tensorflow'` when it is not installed (a plain
`pip install mmkeras` installs no framework). mmkeras checks first, without
importing Keras, and names the one command that fixes it.
"""

import importlib.util
import json
import os
import sys

# The framework module and the pip extra of each Keras backend.
FRAMEWORKS = {"tensorflow": ("tensorflow", "tensorflow"),
              "jax": ("jax", "jax"), "torch": ("torch", "torch")}


def keras_backend_name():
    """The backend Keras will load, read as Keras reads it (KERAS_BACKEND,
    else keras.json, else tensorflow) without importing Keras, which fails
    when that backend's framework is missing."""
    name = os.environ.get("KERAS_BACKEND")
    if not name:
        home = os.environ.get("KERAS_HOME") or os.path.join(
            os.path.expanduser("~"), ".keras")
        try:
            with open(os.path.join(home, "keras.json")) as f:
                name = json.load(f).get("backend")
        except (OSError, ValueError):
            name = None
    return name or "tensorflow"


def missing_framework_message():
    """One line saying what to install when the framework of the Keras
    backend is not installed, or None (also once Keras is imported: then
    its backend loaded)."""
    if "keras" in sys.modules:
        return None
    backend = keras_backend_name()
    if backend not in FRAMEWORKS:
        return None  # Keras itself explains an unknown backend
    module, extra = FRAMEWORKS[backend]
    if importlib.util.find_spec(module) is not None:
        return None
    others = [b for b in FRAMEWORKS if b != backend and
              importlib.util.find_spec(FRAMEWORKS[b][0]) is not None]
    hint = (f" or set KERAS_BACKEND to {' or '.join(others)}" if others
            else "")
    return (f"the Keras backend {backend!r} needs {module}, which is not "
            f"installed: pip install 'mmkeras[{extra}]'{hint}")


def check():
    """Raises ImportError with `missing_framework_message()`, if any."""
    message = missing_framework_message()
    if message:
        raise ImportError(f"mmkeras: {message}")
