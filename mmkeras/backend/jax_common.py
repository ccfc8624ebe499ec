"""Helpers shared by the JAX glue modules of every op family."""

import ctypes

import jax
import jax.numpy as jnp

from mmkeras.backend import BuildFailure
from mmkeras.backend import build


def platforms(array):
    """The platforms an array lives on; a tracer is placed where the trace
    runs (the default backend)."""
    if isinstance(array, jax.core.Tracer):
        return {jax.default_backend()}
    return {d.platform for d in array.devices()}


def cpu_only_reason(x, register, kernels):
    """`unavailable_reason` of CPU-only XLA FFI targets: why `kernels` ("the
    JAX ... kernels") cannot take a call on array `x`, or `register()`'s
    reason (None once the targets are registered)."""
    where = platforms(x)
    if where != {"cpu"}:
        return f"{kernels} run on the CPU; the array is on {sorted(where)}"
    return register()


def require_registered(register):
    """Raises `register()`'s reason, if any: the targets must be usable."""
    reason = register()
    if reason:
        raise RuntimeError(reason)


def float32_call(target, *shapes, vmap_method="sequential"):
    """`jax.ffi.ffi_call` of a CPU target whose results are float32 arrays
    of the given shapes."""
    return jax.ffi.ffi_call(
        target,
        tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes),
        vmap_method=vmap_method,
    )


def compile_flags():
    """Compiler flags of an XLA FFI handler library."""
    return [f"-I{jax.ffi.include_dir()}"]


def register_cpu_targets(library, sources, targets, what):
    """Builds the XLA FFI handlers of `sources` into `library` (once; cached
    by `build`) and registers them as CPU custom-call targets; `targets` maps
    each target name to its handler's symbol. Returns None, or why the
    adapter (`what`) cannot be used."""
    try:
        path = build.build_library(
            library,
            sources,
            cflags=compile_flags(),
            tag=f"jaxlib-{jax.__version__}",
        )
        lib = ctypes.CDLL(str(path))
        for name, symbol in targets.items():
            jax.ffi.register_ffi_target(
                name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu"
            )
    except Exception as e:  # noqa: BLE001  any failure disables the adapter
        return BuildFailure(f"could not build or load {what}: {e}")
    return None
