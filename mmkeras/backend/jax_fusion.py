"""JAX glue of the fusion family: XLA FFI custom calls under `jax.custom_vjp`
for `gated_fusion` and `low_rank_fusion` (contract in kernels/cpu/fusion.h).

Works eagerly and inside `jax.jit`; under `jax.vmap` the calls run once per
mapped element (`vmap_method="sequential"`). Under `jax.jit` with sharded
inputs the gated and low-rank kernels run on each device's (batch, feature)
shard (`jax_sharding`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mmkeras.backend import jax_sharding
from mmkeras.backend.jax_common import cpu_only_reason
from mmkeras.backend.jax_common import float32_call
from mmkeras.backend.jax_common import register_cpu_targets
from mmkeras.backend.jax_common import require_registered

_TARGETS = {
    "mmkeras_gated_fusion_fwd": "MmkerasGatedFusionForward",
    "mmkeras_gated_fusion_bwd": "MmkerasGatedFusionBackward",
    "mmkeras_low_rank_fusion_fwd": "MmkerasLowRankFusionForward",
    "mmkeras_low_rank_fusion_bwd": "MmkerasLowRankFusionBackward",
}


@functools.cache
def _register():
    """Builds and registers the CPU targets; returns None or the reason."""
    return register_cpu_targets(
        "mmkeras_xla_ffi_fusion",
        ["bindings/xla_ffi_fusion.cc"],
        _TARGETS,
        "the XLA FFI fusion adapter",
    )


def _mask_operand(mask):
    # The handlers always take a mask; `has_mask=0` ignores it.
    return jnp.ones((1, 1), jnp.bool_) if mask is None else mask


# ---------------------------------------------------------------- gated fusion


@functools.cache
def _fusion_calls(has_mask):
    """The gated and low-rank kernel calls on (local) arrays, partitioned
    by `jax_sharding`; `mask` is the placeholder when `has_mask` is 0."""
    flag = np.int64(has_mask)

    def gated_forward(h, g, mask):
        return float32_call("mmkeras_gated_fusion_fwd", h.shape[1:])(
            h, g, mask, has_mask=flag)

    def gated_backward(h, g, mask, dout):
        return float32_call("mmkeras_gated_fusion_bwd", h.shape, g.shape)(
            h, g, mask, dout, has_mask=flag)

    def low_rank_forward(f, mask):
        return float32_call("mmkeras_low_rank_fusion_fwd", f.shape[2:])(
            f, mask, has_mask=flag)

    def low_rank_backward(f, mask, dout):
        return float32_call("mmkeras_low_rank_fusion_bwd", f.shape)(
            f, mask, dout, has_mask=flag)

    return {
        "gated": jax_sharding.partitioned_gated(gated_forward),
        "gated_bwd": jax_sharding.partitioned_gated(gated_backward, True),
        "low_rank": jax_sharding.partitioned_low_rank(low_rank_forward),
        "low_rank_bwd": jax_sharding.partitioned_low_rank(low_rank_backward,
                                                          True),
    }


@jax.custom_vjp
def _gated(h, g, mask):
    (out,) = _fusion_calls(mask is not None)["gated"](
        h, g, _mask_operand(mask))
    return out


def _gated_fwd(h, g, mask):
    return _gated(h, g, mask), (h, g, mask)


def _gated_bwd(residuals, dout):
    h, g, mask = residuals
    dh, dg = _fusion_calls(mask is not None)["gated_bwd"](
        h, g, _mask_operand(mask), dout)
    return dh, dg, None


_gated.defvjp(_gated_fwd, _gated_bwd)


# ------------------------------------------------------------- low-rank fusion


@jax.custom_vjp
def _low_rank(f, mask):
    (out,) = _fusion_calls(mask is not None)["low_rank"](
        f, _mask_operand(mask))
    return out


def _low_rank_fwd(f, mask):
    return _low_rank(f, mask), (f, mask)


def _low_rank_bwd(residuals, dout):
    f, mask = residuals
    (df,) = _fusion_calls(mask is not None)["low_rank_bwd"](
        f, _mask_operand(mask), dout)
    return df, None


_low_rank.defvjp(_low_rank_fwd, _low_rank_bwd)


# ------------------------------------------------------------ public functions


def unavailable_reason(x):
    return cpu_only_reason(x, _register, "the JAX fusion kernels")


def gated_fusion(projections, gate_logits, modality_mask):
    require_registered(_register)
    return _gated(projections, gate_logits, modality_mask)


def low_rank_fusion(factors, modality_mask):
    require_registered(_register)
    return _low_rank(factors, modality_mask)


def status():
    reason = _register()
    return [("jax CPU fusion (XLA FFI)", reason is None, reason)]
