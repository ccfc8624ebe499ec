"""JAX glue of the contrastive family: XLA FFI custom calls under
`jax.custom_vjp` for `contrastive_loss` (contract in
kernels/cpu/contrastive.h).

Works eagerly and inside `jax.jit`; under `jax.vmap` the calls run once per
mapped element (`vmap_method="sequential"`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mmkeras.backend.jax_common import cpu_only_reason
from mmkeras.backend.jax_common import float32_call
from mmkeras.backend.jax_common import register_cpu_targets
from mmkeras.backend.jax_common import require_registered

_TARGETS = {
    "mmkeras_contrastive_fwd": "MmkerasContrastiveForward",
    "mmkeras_contrastive_bwd": "MmkerasContrastiveBackward",
}


@functools.cache
def _register():
    """Builds and registers the CPU targets; returns None or the reason."""
    return register_cpu_targets(
        "mmkeras_xla_ffi_contrastive",
        ["bindings/xla_ffi_contrastive.cc"],
        _TARGETS,
        "the XLA FFI contrastive adapter",
    )


def _has(x):
    return np.int64(x is not None)


# ------------------------------------------------------------ contrastive loss


def _contrastive_call(a, b, scale, bias, sigmoid):
    bias_operand = jnp.zeros((), jnp.float32) if bias is None else bias
    return float32_call("mmkeras_contrastive_fwd", (), (2, a.shape[0]))(
        a, b, scale, bias_operand, has_bias=_has(bias),
        sigmoid=np.int64(sigmoid),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _contrastive(a, b, scale, bias, sigmoid):
    return _contrastive_call(a, b, scale, bias, sigmoid)[0]


def _contrastive_fwd(a, b, scale, bias, sigmoid):
    loss, lse = _contrastive_call(a, b, scale, bias, sigmoid)
    return loss, (a, b, scale, bias, lse)


def _contrastive_bwd(sigmoid, residuals, dloss):
    a, b, scale, bias, lse = residuals
    bias_operand = jnp.zeros((), jnp.float32) if bias is None else bias
    da, db, dscale, dbias = float32_call(
        "mmkeras_contrastive_bwd", a.shape, b.shape, (), ()
    )(
        a, b, scale, bias_operand, lse, dloss, has_bias=_has(bias),
        sigmoid=np.int64(sigmoid),
    )
    return da, db, dscale, (None if bias is None else dbias)


_contrastive.defvjp(_contrastive_fwd, _contrastive_bwd)


# ------------------------------------------------------------ public functions


def unavailable_reason(x):
    return cpu_only_reason(x, _register, "the JAX contrastive kernels")


def contrastive_loss(a, b, logit_scale, logit_bias, kind):
    require_registered(_register)
    return _contrastive(a, b, logit_scale, logit_bias, kind == "sigmoid")


def status():
    reason = _register()
    return [("jax CPU contrastive (XLA FFI)", reason is None, reason)]
