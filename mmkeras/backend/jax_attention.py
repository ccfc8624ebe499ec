"""JAX glue: XLA FFI custom calls under `jax.custom_vjp`.

Works eagerly, inside `jax.jit` and under `jax.vmap` (leading dims are folded
into the batch by the handler).
"""

import ctypes
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mmkeras.backend import build

_FWD = "mmkeras_attention_fwd"
_BWD = "mmkeras_attention_bwd"


@functools.cache
def _register():
    """Builds and registers the CPU targets; returns None or the reason."""
    try:
        path = build.build_library(
            "mmkeras_xla_ffi",
            ["bindings/xla_ffi.cc", "cpu/flash_attention.cc"],
            cflags=[f"-I{jax.ffi.include_dir()}"],
            tag=f"jaxlib-{jax.__version__}",
        )
    except Exception as e:  # noqa: BLE001  any failure disables the adapter
        return f"could not build the XLA FFI adapter: {e}"
    lib = ctypes.CDLL(str(path))
    for name, symbol in (
        (_FWD, lib.MmkerasAttentionForward),
        (_BWD, lib.MmkerasAttentionBackward),
    ):
        jax.ffi.register_ffi_target(
            name, jax.ffi.pycapsule(symbol), platform="cpu"
        )
    return None


def _attrs(mask, is_causal, scale):
    return dict(
        has_mask=np.int64(mask is not None),
        causal=np.int64(bool(is_causal)),
        scale=np.float32(scale),
    )


def _mask_operand(mask):
    # The handler signature always takes a mask; `has_mask=0` ignores it.
    return jnp.ones((1, 1, 1, 1), jnp.bool_) if mask is None else mask


def _forward_call(q, k, v, mask, is_causal, scale):
    lse_shape = q.shape[:-3] + (q.shape[-2], q.shape[-3])
    call = jax.ffi.ffi_call(
        _FWD,
        (
            jax.ShapeDtypeStruct(q.shape, jnp.float32),
            jax.ShapeDtypeStruct(lse_shape, jnp.float32),
        ),
        vmap_method="broadcast_all",
    )
    return call(q, k, v, _mask_operand(mask), **_attrs(mask, is_causal, scale))


def _backward_call(q, k, v, mask, out, lse, dout, is_causal, scale):
    call = jax.ffi.ffi_call(
        _BWD,
        (
            jax.ShapeDtypeStruct(q.shape, jnp.float32),
            jax.ShapeDtypeStruct(k.shape, jnp.float32),
            jax.ShapeDtypeStruct(v.shape, jnp.float32),
        ),
        vmap_method="broadcast_all",
    )
    return call(
        q,
        k,
        v,
        _mask_operand(mask),
        out,
        lse,
        dout,
        **_attrs(mask, is_causal, scale),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention(q, k, v, mask, is_causal, scale):
    return _forward_call(q, k, v, mask, is_causal, scale)[0]


def _attention_fwd(q, k, v, mask, is_causal, scale):
    out, lse = _forward_call(q, k, v, mask, is_causal, scale)
    return out, (q, k, v, mask, out, lse)


def _attention_bwd(is_causal, scale, residuals, dout):
    q, k, v, mask, out, lse = residuals
    dq, dk, dv = _backward_call(q, k, v, mask, out, lse, dout, is_causal, scale)
    return dq, dk, dv, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def _platforms(array):
    if isinstance(array, jax.core.Tracer):  # placed where the trace runs
        return {jax.default_backend()}
    return {d.platform for d in array.devices()}


def unavailable_reason(query):
    platforms = _platforms(query)
    if platforms != {"cpu"}:
        return (
            f"the JAX native kernel runs on the CPU; the array is on "
            f"{sorted(platforms)}"
        )
    return _register()


def attention(query, key, value, mask, is_causal, scale):
    reason = _register()
    if reason:
        raise RuntimeError(reason)
    return _attention(query, key, value, mask, bool(is_causal), float(scale))


def status():
    reason = _register()
    return [("jax CPU (XLA FFI)", reason is None, reason)]
