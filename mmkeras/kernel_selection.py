"""Which implementation of a fused op runs, and which kernels are built and
usable here. Also importable as `mmkeras.kernels`, its public name.

`implementation` (argument of every fused op) or the environment variable
`MMKERAS_KERNELS` picks the policy:

- `"auto"` (default): the native kernel (C++ on the CPU, Triton on NVIDIA
  GPUs) where it can take the call, else the `keras.ops` reference.
- `"native"`: the native kernel, or a `ValueError` that says why it cannot run.
- `"reference"`: always the `keras.ops` reference.
"""

import importlib.util
import os
import warnings

import keras

from mmkeras.backend import BACKENDS
from mmkeras.backend import BuildFailure
from mmkeras.backend import FAMILIES
from mmkeras.backend import OP_FAMILY
from mmkeras.backend import glue

IMPLEMENTATIONS = ("auto", "native", "reference")


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


NATIVE_DTYPES = ("float16", "bfloat16", "float32")


def backend_glue(backend_name=None, family="attention"):
    """`(glue_module, None)` for a backend and op family, or `(None, reason)`."""
    backend_name = backend_name or keras.backend.backend()
    try:
        module = glue(backend_name, family)
    except ImportError as e:
        return None, BuildFailure(
            f"the {backend_name} glue cannot be imported: {e}"
        )
    if module is None:
        return None, f"no native kernels for the {backend_name!r} backend"
    return module, None


def native_unavailable_reason(x, family="attention"):
    """Why the native kernel of `family` cannot take a call on tensor `x`."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype not in NATIVE_DTYPES:
        return (
            f"dtype {dtype} is not supported (native kernels take "
            f"{', '.join(NATIVE_DTYPES)})"
        )
    module, reason = backend_glue(family=family)
    return reason if module is None else module.unavailable_reason(x)


# First lines of the build failures already warned about in this process.
_WARNED = set()


def _warn_build_failure(op_name, reason):
    first_line = str(reason).strip().splitlines()[0]
    if first_line in _WARNED:
        return
    _WARNED.add(first_line)
    warnings.warn(
        f"mmkeras: the native kernel of {op_name} should run here but "
        f"cannot, so the slower keras.ops reference runs instead: "
        f"{first_line} (run `mmkeras info --all-backends` for the details)",
        RuntimeWarning,
        stacklevel=4,
    )


# Which implementation each op ran since the last reset (recorded when the op
# is called or traced), for reports such as `mmkeras train`'s.
_USAGE = {}


def reset_usage():
    _USAGE.clear()


def usage():
    """A dict op name -> set of implementations ("native", "reference")."""
    return {op: set(impls) for op, impls in _USAGE.items()}


def select_native(implementation, x, op_name):
    """Decides whether an op runs its native kernel.

    Args:
        implementation: a resolved policy ("auto", "native", "reference").
        x: the tensor whose dtype and device decide (e.g. the query).
        op_name: the public op (a key of `mmkeras.backend.OP_FAMILY`).

    Returns:
        The backend glue module to call, or None to run the reference.

    Raises:
        ValueError: `implementation="native"` and the native kernel cannot
            take this call; the message says why.
    """
    if implementation == "reference":
        _USAGE.setdefault(op_name, set()).add("reference")
        return None
    family = OP_FAMILY[op_name]
    reason = native_unavailable_reason(x, family)
    if reason is None:
        _USAGE.setdefault(op_name, set()).add("native")
        return backend_glue(family=family)[0]
    if isinstance(reason, BuildFailure):
        _warn_build_failure(op_name, reason)
    if implementation == "native":
        raise ValueError(
            f"{op_name}: implementation='native' was requested but the "
            f"native kernel cannot run this call: {reason}. Received: "
            f"shape={tuple(x.shape)}, dtype={x.dtype}, "
            f"backend={keras.backend.backend()}"
        )
    _USAGE.setdefault(op_name, set()).add("reference")
    return None


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
        for family in FAMILIES:
            module, reason = backend_glue(name, family)
            if module is None:
                rows.append(dict(backend=name, kernel=family, usable=False,
                                 detail=reason))
                continue
            for kernel, usable, detail in module.status():
                rows.append(dict(backend=name, kernel=kernel, usable=usable,
                                 detail=detail))
    return rows


def cpu_isa_summary():
    """One line naming the ISA level the C++ kernels run on this CPU (chosen
    at run time; `MMKERAS_CPU_ISA` overrides) and the levels it could run,
    or why the C++ kernels are not available."""
    from mmkeras.backend import cpu_module

    module, reason = cpu_module.load()
    if module is None:
        return f"not available: {reason}"
    try:
        active = module.isa()
    except RuntimeError as e:  # a bad MMKERAS_CPU_ISA
        active = f"none ({e})"
    return (f"{active} (this CPU runs {', '.join(module.supported_isa_levels())}"
            f"; the build has {', '.join(module.isa_levels())}; "
            "MMKERAS_CPU_ISA chooses)")
