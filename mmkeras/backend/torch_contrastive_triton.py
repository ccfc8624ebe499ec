"""The Triton contrastive-loss kernels as torch custom ops, with autograd:
the CUDA half of the torch glue of the contrastive family (the CPU half,
mmkeras/backend/torch_contrastive.py, registers C++ ops with the same
schemas; contract in kernels/cpu/contrastive.h).

Ops (visible to `torch.compile` on a GPU, whose tracer sees the kernels
through `torch.library.wrap_triton`):

* `mmkeras::triton_contrastive_fwd(a, b, scale, bias, sigmoid) -> (loss, lse)`
* `mmkeras::triton_contrastive_bwd(a, b, scale, bias, lse, dloss, sigmoid)
  -> (da, db, dscale, dbias)`

The differentiable entry point has the signature of the torch glue's:
`contrastive_loss(a, b, logit_scale, logit_bias, sigmoid)`.

Under `TRITON_INTERPRET=1` (CPU tests) the ops are registered with
`torch.library.custom_op` plus allocation-only fake kernels instead of
`triton_op` (`torch_common.define_triton_op` says why).
"""

from typing import Optional

import torch
from torch import Tensor

from mmkeras.backend.torch_common import define_triton_op
from mmkeras.triton_kernels import contrastive as _co
from mmkeras.triton_kernels.flash_attention_tuning import INTERPRET

__all__ = [
    "contrastive_loss",
    "triton_contrastive_fwd",
    "triton_contrastive_bwd",
]

_define_op = define_triton_op()

_wrap = torch.library.wrap_triton

# ------------------------------------------------------------ contrastive loss


@_define_op("mmkeras::triton_contrastive_fwd", mutates_args=())
def triton_contrastive_fwd(
    a: Tensor,
    b: Tensor,
    scale: Tensor,
    bias: Optional[Tensor],
    sigmoid: bool,
) -> tuple[Tensor, Tensor]:
    return _co._forward_impl(a, b, scale, bias, sigmoid, wrap=_wrap)


@_define_op("mmkeras::triton_contrastive_bwd", mutates_args=())
def triton_contrastive_bwd(
    a: Tensor,
    b: Tensor,
    scale: Tensor,
    bias: Optional[Tensor],
    lse: Tensor,
    dloss: Tensor,
    sigmoid: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _co._backward_impl(a, b, scale, bias, lse, dloss, sigmoid,
                              wrap=_wrap)


def _contrastive_setup(ctx, inputs, output):
    a, b, scale, bias, sigmoid = inputs
    _, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(a, b, scale, bias, lse)
    ctx.sigmoid = sigmoid


def _contrastive_backward(ctx, dloss, _dlse):
    a, b, scale, bias, lse = ctx.saved_tensors
    da, db, dscale, dbias = torch.ops.mmkeras.triton_contrastive_bwd(
        a, b, scale, bias, lse, dloss, ctx.sigmoid
    )
    dscale = dscale.reshape(scale.shape)
    dbias = None if bias is None else dbias.reshape(bias.shape)
    return da, db, dscale, dbias, None


torch.library.register_autograd(
    "mmkeras::triton_contrastive_fwd", _contrastive_backward,
    setup_context=_contrastive_setup,
)


# ---------------------------------------------- fake kernels (interpreter only)

if INTERPRET:

    @triton_contrastive_fwd.register_fake
    def _(a, b, scale, bias, sigmoid):
        return a.new_empty(()), a.new_empty((2, a.shape[0]))

    @triton_contrastive_bwd.register_fake
    def _(a, b, scale, bias, lse, dloss, sigmoid):
        return (
            a.new_empty(a.shape),
            b.new_empty(b.shape),
            a.new_empty(()),
            a.new_empty(()),
        )


# ------------------------------------------------------------ entry point


def contrastive_loss(a, b, logit_scale, logit_bias, sigmoid):
    """Differentiable fused contrastive loss: (B, D) float32 a and b, scalar
    float32 scale and optional bias tensors -> scalar float32 loss."""
    loss, _ = torch.ops.mmkeras.triton_contrastive_fwd(
        a, b, logit_scale, logit_bias, bool(sigmoid)
    )
    return loss
