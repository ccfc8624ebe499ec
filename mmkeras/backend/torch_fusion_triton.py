"""The Triton fusion kernels as torch custom ops, with autograd: the CUDA
half of the torch glue of the fusion family (the CPU half, mmkeras/backend/
torch_fusion.py, registers C++ ops with the same schemas; contract in
kernels/cpu/fusion.h).

Ops (visible to `torch.compile` on a GPU, whose tracer sees the kernels
through `torch.library.wrap_triton`):

* `mmkeras::triton_gated_fusion_fwd(h, g, mask) -> out`
* `mmkeras::triton_gated_fusion_bwd(h, g, mask, dout) -> (dh, dg)`
* `mmkeras::triton_low_rank_fusion_fwd(f, mask) -> out`
* `mmkeras::triton_low_rank_fusion_bwd(f, mask, dout) -> df`

Differentiable entry points with the signatures of the torch glue's public
functions: `gated_fusion(projections, gate_logits, modality_mask)` and
`low_rank_fusion(factors, modality_mask)`.

Under `TRITON_INTERPRET=1` (CPU tests) the ops are registered with
`torch.library.custom_op` plus allocation-only fake kernels instead of
`triton_op` (`torch_common.define_triton_op` says why).
"""

from typing import Optional

import torch
from torch import Tensor

from mmkeras.backend.torch_common import define_triton_op
from mmkeras.triton_kernels import fusion as _fu
from mmkeras.triton_kernels.flash_attention_tuning import INTERPRET

__all__ = [
    "gated_fusion",
    "low_rank_fusion",
    "triton_gated_fusion_fwd",
    "triton_gated_fusion_bwd",
    "triton_low_rank_fusion_fwd",
    "triton_low_rank_fusion_bwd",
]

_define_op = define_triton_op()

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


# ---------------------------------------------- fake kernels (interpreter only)

if INTERPRET:

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
