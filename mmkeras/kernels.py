"""Which kernel implementation runs, and which are built and usable here.

`implementation` (argument of every fused op) or the environment variable
`MMKERAS_KERNELS` picks the policy:

- `"auto"` (default): the native kernel (C++ on the CPU, Triton on NVIDIA
  GPUs) where it can take the call, else the `keras.ops` reference.
- `"native"`: the native kernel, or a `ValueError` that says why it cannot run.
- `"reference"`: always the `keras.ops` reference.
"""

import importlib.util
import os

import keras

from mmkeras.backend import glue

IMPLEMENTATIONS = ("auto", "native", "reference")
BACKENDS = ("tensorflow", "jax", "torch")


def default_implementation():
    """The policy set by `MMKERAS_KERNELS` (default `"auto"`)."""
    value = os.environ.get("MMKERAS_KERNELS", "auto").strip().lower()
    if value not in IMPLEMENTATIONS:
        raise ValueError(
            "Environment variable `MMKERAS_KERNELS` must be one of "
            f"{', '.join(IMPLEMENTATIONS)}. Received: MMKERAS_KERNELS={value!r}"
        )
    return value


def resolve_implementation(implementation):
    """Validates an `implementation` argument; None means the default."""
    if implementation is None:
        return default_implementation()
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            "Argument `implementation` must be None, 'auto', 'native' or "
            f"'reference'. Received: implementation={implementation!r}"
        )
    return implementation


def backend_glue(backend_name=None):
    """`(glue_module, None)` for a backend, or `(None, reason)`."""
    backend_name = backend_name or keras.backend.backend()
    try:
        module = glue(backend_name)
    except ImportError as e:
        return None, f"the {backend_name} glue cannot be imported: {e}"
    if module is None:
        return None, f"no native kernels for the {backend_name!r} backend"
    return module, None


def native_unavailable_reason(query):
    """Why the native kernel cannot take a call on `query`, or None."""
    module, reason = backend_glue()
    return reason if module is None else module.unavailable_reason(query)


def available(backend=None):
    """Reports which native kernels are built and usable on this machine.

    Checking an adapter builds it if needed (once; see `mmkeras.backend.build`)
    and imports its framework.

    Args:
        backend: a Keras backend name, `"all"` for every installed backend, or
            None for the current one.

    Returns:
        A list of dicts with keys `backend`, `kernel`, `usable` (bool) and
        `detail` (why it is not usable, or None).
    """
    if backend == "all":
        names = BACKENDS
    elif backend is None or backend in BACKENDS:
        names = (backend or keras.backend.backend(),)
    else:
        raise ValueError(
            f"Argument `backend` must be None, 'all' or one of {BACKENDS}. "
            f"Received: backend={backend!r}"
        )
    rows = []
    for name in names:
        if importlib.util.find_spec(name) is None:
            rows.append(
                dict(backend=name, kernel="-", usable=False,
                     detail=f"{name} is not installed")
            )
            continue
        module, reason = backend_glue(name)
        if module is None:
            rows.append(dict(backend=name, kernel="-", usable=False,
                             detail=reason))
            continue
        for kernel, usable, detail in module.status():
            rows.append(dict(backend=name, kernel=kernel, usable=usable,
                             detail=detail))
    return rows
