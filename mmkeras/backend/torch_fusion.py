"""PyTorch glue of the fusion family: `torch.library` custom ops with
registered autograd for `gated_fusion` and `low_rank_fusion` (contract in
kernels/cpu/fusion.h).

CPU tensors run the C++ kernels through zero-copy numpy views; CUDA tensors
run the Triton kernels (torch_fusion_triton.py).
"""

from typing import Optional

import torch
from torch import Tensor

from mmkeras.backend import torch_common
from mmkeras.backend.torch_common import as_numpy
from mmkeras.backend.torch_common import as_numpy_or_none
from mmkeras.backend.torch_common import cpu_kernels


def _save_inputs(ctx, inputs, output):
    # setup_context of the fusion ops: their backward takes their inputs.
    ctx.save_for_backward(*inputs)


# ---------------------------------------------------------------- gated fusion


@torch.library.custom_op("mmkeras::gated_fusion_fwd", mutates_args=())
def gated_fusion_fwd(h: Tensor, g: Tensor, mask: Optional[Tensor]) -> Tensor:
    out = cpu_kernels().gated_fusion_forward(
        as_numpy(h), as_numpy(g), as_numpy_or_none(mask)
    )
    return torch.from_numpy(out)


@gated_fusion_fwd.register_fake
def _(h, g, mask):
    return h.new_empty(h.shape[1:])


@torch.library.custom_op("mmkeras::gated_fusion_bwd", mutates_args=())
def gated_fusion_bwd(
    h: Tensor, g: Tensor, mask: Optional[Tensor], dout: Tensor
) -> tuple[Tensor, Tensor]:
    dh, dg = cpu_kernels().gated_fusion_backward(
        as_numpy(h), as_numpy(g), as_numpy_or_none(mask), as_numpy(dout)
    )
    return torch.from_numpy(dh), torch.from_numpy(dg)


@gated_fusion_bwd.register_fake
def _(h, g, mask, dout):
    return torch.empty_like(h), torch.empty_like(g)


def _gated_backward(ctx, dout):
    h, g, mask = ctx.saved_tensors
    dh, dg = gated_fusion_bwd(h, g, mask, dout)
    return dh, dg, None


gated_fusion_fwd.register_autograd(_gated_backward, setup_context=_save_inputs)


# ------------------------------------------------------------- low-rank fusion


@torch.library.custom_op("mmkeras::low_rank_fusion_fwd", mutates_args=())
def low_rank_fusion_fwd(f: Tensor, mask: Optional[Tensor]) -> Tensor:
    out = cpu_kernels().low_rank_fusion_forward(
        as_numpy(f), as_numpy_or_none(mask)
    )
    return torch.from_numpy(out)


@low_rank_fusion_fwd.register_fake
def _(f, mask):
    return f.new_empty(f.shape[2:])


@torch.library.custom_op("mmkeras::low_rank_fusion_bwd", mutates_args=())
def low_rank_fusion_bwd(
    f: Tensor, mask: Optional[Tensor], dout: Tensor
) -> Tensor:
    df = cpu_kernels().low_rank_fusion_backward(
        as_numpy(f), as_numpy_or_none(mask), as_numpy(dout)
    )
    return torch.from_numpy(df)


@low_rank_fusion_bwd.register_fake
def _(f, mask, dout):
    return torch.empty_like(f)


def _low_rank_backward(ctx, dout):
    f, mask = ctx.saved_tensors
    return low_rank_fusion_bwd(f, mask, dout), None


low_rank_fusion_fwd.register_autograd(
    _low_rank_backward, setup_context=_save_inputs
)


# ------------------------------------------------------------ public functions


def _triton():
    from mmkeras.backend import torch_fusion_triton

    return torch_fusion_triton


def unavailable_reason(x):
    return torch_common.unavailable_reason(
        x,
        "torch_fusion_triton",
        "the fusion kernels have no implementation for device type {!r} "
        "(CPU and CUDA only)",
    )


def gated_fusion(projections, gate_logits, modality_mask):
    if projections.device.type == "cuda":
        return _triton().gated_fusion(projections, gate_logits, modality_mask)
    return gated_fusion_fwd(projections, gate_logits, modality_mask)


def low_rank_fusion(factors, modality_mask):
    if factors.device.type == "cuda":
        return _triton().low_rank_fusion(factors, modality_mask)
    return low_rank_fusion_fwd(factors, modality_mask)


def status():
    return torch_common.status(
        "torch CPU fusion (C++ custom ops)",
        "torch CUDA fusion (Triton)",
        "torch_fusion_triton",
    )
