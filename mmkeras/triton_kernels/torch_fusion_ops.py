"""The Triton fusion and contrastive kernels as torch custom ops, with
autograd: the CUDA counterpart of mmkeras/backend/torch_fusion.py (whose
C++ ops have the same schemas; contracts in kernels/cpu/fusion.h and
contrastive.h).

Ops (visible to `torch.compile` on a GPU, whose tracer sees the kernels
through `torch.library.wrap_triton`):

* `mmkeras::triton_gated_fusion_fwd(h, g, mask) -> out`
* `mmkeras::triton_gated_fusion_bwd(h, g, mask, dout) -> (dh, dg)`
* `mmkeras::triton_low_rank_fusion_fwd(f, mask) -> out`
* `mmkeras::triton_low_rank_fusion_bwd(f, mask, dout) -> df`
* `mmkeras::triton_contrastive_fwd(a, b, scale, bias, sigmoid) -> (loss, lse)`
* `mmkeras::triton_contrastive_bwd(a, b, scale, bias, lse, dloss, sigmoid)
  -> (da, db, dscale, dbias)`

Differentiable entry points with the signatures of the torch glue's public
functions: `gated_fusion(projections, gate_logits, modality_mask)`,
`low_rank_fusion(factors, modality_mask)` and
`contrastive_loss(a, b, logit_scale, logit_bias, sigmoid)`.

Under `TRITON_INTERPRET=1` (CPU tests) the ops are registered with
`torch.library.custom_op` plus allocation-only fake kernels instead of
`triton_op` (see torch_ops.py: torch cannot trace interpreted kernels).
Eager behaviour, schemas and autograd are identical in both modes.
"""

from typing import Optional

import torch
from torch import Tensor

from mmkeras.triton_kernels import contrastive as _co
from mmkeras.triton_kernels import flash_attention as _fa
from mmkeras.triton_kernels import fusion as _fu

__all__ = [
    "gated_fusion",
    "low_rank_fusion",
    "contrastive_loss",
    "triton_gated_fusion_fwd",
    "triton_gated_fusion_bwd",
    "triton_low_rank_fusion_fwd",
    "triton_low_rank_fusion_bwd",
    "triton_contrastive_fwd",
    "triton_contrastive_bwd",
]

if _fa._INTERPRET:
    _define_op = torch.library.custom_op
else:
    _define_op = torch.library.triton_op

_wrap = torch.library.wrap_triton


# ---------------------------------------------------------------- gated fusion


@_define_op("mmkeras::triton_gated_fusion_fwd", mutates_args=())
def triton_gated_fusion_fwd(
    h: Tensor, g: Tensor, mask: Optional[Tensor]
) -> Tensor:
    return _fu.gated_fusion_forward(h, g, mask, wrap=_wrap)


@_define_op("mmkeras::triton_gated_fusion_bwd", mutates_args=())
def triton_gated_fusion_bwd(
    h: Tensor, g: Tensor, mask: Optional[Tensor], dout: Tensor
) -> tuple[Tensor, Tensor]:
    return _fu.gated_fusion_backward(h, g, mask, dout, wrap=_wrap)


def _save_inputs(ctx, inputs, output):
    # Both fusion backwards recompute from the inputs alone.
    ctx.save_for_backward(*inputs)


def _gated_backward(ctx, dout):
    h, g, mask = ctx.saved_tensors
    dh, dg = torch.ops.mmkeras.triton_gated_fusion_bwd(h, g, mask, dout)
    return dh, dg, None


torch.library.register_autograd(
    "mmkeras::triton_gated_fusion_fwd", _gated_backward,
    setup_context=_save_inputs,
)


# ------------------------------------------------------------- low-rank fusion


@_define_op("mmkeras::triton_low_rank_fusion_fwd", mutates_args=())
def triton_low_rank_fusion_fwd(f: Tensor, mask: Optional[Tensor]) -> Tensor:
    return _fu.low_rank_fusion_forward(f, mask, wrap=_wrap)


@_define_op("mmkeras::triton_low_rank_fusion_bwd", mutates_args=())
def triton_low_rank_fusion_bwd(
    f: Tensor, mask: Optional[Tensor], dout: Tensor
) -> Tensor:
    return _fu.low_rank_fusion_backward(f, mask, dout, wrap=_wrap)


def _low_rank_backward(ctx, dout):
    f, mask = ctx.saved_tensors
    return torch.ops.mmkeras.triton_low_rank_fusion_bwd(f, mask, dout), None


torch.library.register_autograd(
    "mmkeras::triton_low_rank_fusion_fwd", _low_rank_backward,
    setup_context=_save_inputs,
)


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

if _fa._INTERPRET:

    @triton_gated_fusion_fwd.register_fake
    def _(h, g, mask):
        return h.new_empty(h.shape[1:])

    @triton_gated_fusion_bwd.register_fake
    def _(h, g, mask, dout):
        return h.new_empty(h.shape), g.new_empty(g.shape)

    @triton_low_rank_fusion_fwd.register_fake
    def _(f, mask):
        return f.new_empty(f.shape[2:])

    @triton_low_rank_fusion_bwd.register_fake
    def _(f, mask, dout):
        return f.new_empty(f.shape)

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


# ------------------------------------------------------------ entry points


def gated_fusion(projections, gate_logits, modality_mask):
    """Differentiable fused GMU core: (M, B, D) float32 projections and gate
    logits, optional (B, M) bool mask -> (B, D)."""
    return torch.ops.mmkeras.triton_gated_fusion_fwd(
        projections, gate_logits, modality_mask
    )


def low_rank_fusion(factors, modality_mask):
    """Differentiable fused LMF core: (M, R, B, O) float32 factors, optional
    (B, M) bool mask -> (B, O)."""
    return torch.ops.mmkeras.triton_low_rank_fusion_fwd(factors, modality_mask)


def contrastive_loss(a, b, logit_scale, logit_bias, sigmoid):
    """Differentiable fused contrastive loss: (B, D) float32 a and b, scalar
    float32 scale and optional bias tensors -> scalar float32 loss."""
    loss, _ = torch.ops.mmkeras.triton_contrastive_fwd(
        a, b, logit_scale, logit_bias, bool(sigmoid)
    )
    return loss
