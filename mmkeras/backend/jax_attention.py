"""JAX glue: one `jax.custom_vjp` over two kernel implementations.

- CPU: XLA FFI custom calls into the C++ kernel. Works eagerly, inside
  `jax.jit` and under `jax.vmap` (leading dims are folded into the batch by
  the handler).
- GPU: Pallas kernels (`mmkeras.pallas_kernels.attention`), which
  Pallas lowers to Triton on NVIDIA GPUs. `interpret` runs the same kernels
  in Pallas' interpreter on any platform (tests on CPU-only machines).

The implementation is chosen from the query's platform when the op is
called or traced (`jax.default_backend()` for tracers).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mmkeras.backend import jax_sharding
from mmkeras.backend.jax_common import float32_call
from mmkeras.backend.jax_common import platforms
from mmkeras.backend.jax_common import register_cpu_targets

_FWD = "mmkeras_attention_fwd"
_BWD = "mmkeras_attention_bwd"


@functools.cache
def _register():
    """Builds and registers the CPU targets; returns None or the reason."""
    return register_cpu_targets(
        "mmkeras_xla_ffi_attention",
        ["bindings/xla_ffi_attention.cc"],
        {_FWD: "MmkerasAttentionForward", _BWD: "MmkerasAttentionBackward"},
        "the XLA FFI adapter",
    )


def _attrs(has_mask, is_causal, scale):
    return dict(
        has_mask=np.int64(has_mask),
        causal=np.int64(bool(is_causal)),
        scale=np.float32(scale),
    )


# Implementations ("path", a static argument of the custom_vjp):
_CPU = "cpu"  # XLA FFI -> C++
# The same, told that the inputs hold bfloat16 values: the C++ kernels may
# multiply in bfloat16 (AttentionProblem::bf16_products).
_CPU_BF16 = "cpu-bf16"
_GPU = "gpu"  # Pallas compiled for the GPU (Triton)
_INTERPRET = "interpret"  # the Pallas kernels in Pallas' interpreter
_GPU_PLATFORMS = frozenset({"gpu", "cuda", "rocm"})


def _mask_operand(mask):
    # The handler signature always takes a mask; `has_mask=0` ignores it.
    return jnp.ones((1, 1, 1, 1), jnp.bool_) if mask is None else mask


def _forward_call(q, k, v, mask, has_mask, is_causal, scale, bf16_products):
    # `mask` is always an array: the placeholder of `_mask_operand` when
    # `has_mask` is False.
    lse_shape = q.shape[:-3] + (q.shape[-2], q.shape[-3])
    call = float32_call(_FWD, q.shape, lse_shape, vmap_method="broadcast_all")
    return call(q, k, v, mask, bf16_products=np.int64(bf16_products),
                **_attrs(has_mask, is_causal, scale))


def _backward_call(q, k, v, mask, out, lse, dout, has_mask, is_causal,
                   scale, bf16_products):
    call = float32_call(_BWD, q.shape, k.shape, v.shape,
                        vmap_method="broadcast_all")
    return call(q, k, v, mask, out, lse, dout,
                bf16_products=np.int64(bf16_products),
                **_attrs(has_mask, is_causal, scale))


# Test hook: a path that replaces the platform's choice (e.g. "interpret" to
# run the GPU kernels through the op layer on a CPU-only machine).
_FORCE_PATH = None


def _pallas():
    """(pallas_attention module, None) or (None, why it is not usable)."""
    try:
        from mmkeras.pallas_kernels import attention as pallas_attention
    except ImportError as e:
        return None, f"the Pallas kernels cannot be imported: {e}"
    reason = pallas_attention.unavailable_reason()
    return (None, reason) if reason else (pallas_attention, None)


@functools.cache
def _local_calls(path, has_mask, is_causal, scale):
    """The kernel calls of one configuration on (local) arrays:
    forward(q, k, v, mask) -> (out, lse) and
    backward(q, k, v, mask, out, lse, dout) -> (dq, dk, dv); `mask` is the
    placeholder of `_mask_operand` when `has_mask` is False. Cached, so each
    configuration gets one partitioned wrapper (`jax_sharding`)."""

    if path in (_CPU, _CPU_BF16):
        def forward(q, k, v, mask):
            return _forward_call(q, k, v, mask, has_mask, is_causal, scale,
                                 path == _CPU_BF16)

        def backward(q, k, v, mask, out, lse, dout):
            return _backward_call(q, k, v, mask, out, lse, dout, has_mask,
                                  is_causal, scale, path == _CPU_BF16)
        return forward, backward

    def mask_of(mask):  # the Pallas kernels take None for "no mask"
        return mask if has_mask else None

    module, reason = _pallas()
    if module is None:
        raise RuntimeError(reason)
    interpret = path == _INTERPRET

    def forward(q, k, v, mask):
        return module.forward(q, k, v, mask_of(mask), is_causal, scale,
                              interpret=interpret)

    def backward(q, k, v, mask, out, lse, dout):
        return module.backward(q, k, v, out, lse, dout, mask_of(mask),
                               is_causal, scale, interpret=interpret)
    return forward, backward


def _forward_impl(path, q, k, v, mask, is_causal, scale):
    forward, _ = _local_calls(path, mask is not None, is_causal, scale)
    return jax_sharding.partitioned_forward(forward)(
        q, k, v, _mask_operand(mask))


def _backward_impl(path, q, k, v, mask, out, lse, dout, is_causal, scale):
    _, backward = _local_calls(path, mask is not None, is_causal, scale)
    return jax_sharding.partitioned_backward(backward)(
        q, k, v, _mask_operand(mask), out, lse, dout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _attention(q, k, v, mask, is_causal, scale, path):
    return _forward_impl(path, q, k, v, mask, is_causal, scale)[0]


def _attention_fwd(q, k, v, mask, is_causal, scale, path):
    out, lse = _forward_impl(path, q, k, v, mask, is_causal, scale)
    return out, (q, k, v, mask, out, lse)


def _attention_bwd(is_causal, scale, path, residuals, dout):
    q, k, v, mask, out, lse = residuals
    dq, dk, dv = _backward_impl(
        path, q, k, v, mask, out, lse, dout, is_causal, scale
    )
    return dq, dk, dv, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def _path(query):
    """(path, None), or (None, why no native kernel takes this array)."""
    if _FORCE_PATH is not None:
        return _FORCE_PATH, None
    where = platforms(query)
    if where == {"cpu"}:
        return _CPU, None
    if where and where <= _GPU_PLATFORMS:
        return _GPU, None
    return None, (
        "the JAX native kernels run on the CPU (XLA FFI) and on GPUs "
        f"(Pallas); the array is on {sorted(where)}"
    )


def _path_reason(path):
    return _register() if path == _CPU else _pallas()[1]


def unavailable_reason(query):
    path, reason = _path(query)
    return reason if path is None else _path_reason(path)


def fused_attention(query, key, value, mask, is_causal, scale, bf16_products=False):
    path, reason = _path(query)
    reason = reason or _path_reason(path)
    if reason:
        raise RuntimeError(reason)
    if path == _CPU and bf16_products:
        path = _CPU_BF16
    return _attention(
        query, key, value, mask, bool(is_causal), float(scale), path
    )


def _gpu_reason():
    try:
        jax.devices("gpu")
    except RuntimeError:
        return "no GPU"
    return _pallas()[1]


def status():
    reason = _register()
    gpu_reason = _gpu_reason()
    return [
        ("jax CPU (XLA FFI)", reason is None, reason),
        ("jax GPU (Pallas)", gpu_reason is None, gpu_reason),
    ]
