"""PyTorch glue of the fusion family: `torch.library` custom ops with
registered autograd for `gated_fusion`, `low_rank_fusion` and
`contrastive_loss` (contracts in kernels/cpu/fusion.h and contrastive.h).

CPU tensors run the C++ kernels through zero-copy numpy views; CUDA tensors
run the Triton kernels (mmkeras.triton_kernels.torch_fusion_ops).
"""

from typing import Optional

import torch

from mmkeras.backend import cpu_module
from mmkeras.backend.torch_common import as_numpy
from mmkeras.backend.torch_common import triton_reason


def _kernels():
    kernels, reason = cpu_module.load()
    if kernels is None:
        raise RuntimeError(reason)
    return kernels


def _optional(t):
    return None if t is None else as_numpy(t)


# ---------------------------------------------------------------- gated fusion


@torch.library.custom_op("mmkeras::gated_fusion_fwd", mutates_args=())
def gated_fusion_fwd(
    h: torch.Tensor, g: torch.Tensor, mask: Optional[torch.Tensor]
) -> torch.Tensor:
    out = _kernels().gated_fusion_forward(as_numpy(h), as_numpy(g), _optional(mask))
    return torch.from_numpy(out)


@gated_fusion_fwd.register_fake
def _(h, g, mask):
    return h.new_empty(h.shape[1:])


@torch.library.custom_op("mmkeras::gated_fusion_bwd", mutates_args=())
def gated_fusion_bwd(
    h: torch.Tensor,
    g: torch.Tensor,
    mask: Optional[torch.Tensor],
    dout: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    dh, dg = _kernels().gated_fusion_backward(
        as_numpy(h), as_numpy(g), _optional(mask), as_numpy(dout)
    )
    return torch.from_numpy(dh), torch.from_numpy(dg)


@gated_fusion_bwd.register_fake
def _(h, g, mask, dout):
    return torch.empty_like(h), torch.empty_like(g)


def _gated_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _gated_backward(ctx, dout):
    h, g, mask = ctx.saved_tensors
    dh, dg = gated_fusion_bwd(h, g, mask, dout)
    return dh, dg, None


gated_fusion_fwd.register_autograd(_gated_backward, setup_context=_gated_setup)


# ------------------------------------------------------------- low-rank fusion


@torch.library.custom_op("mmkeras::low_rank_fusion_fwd", mutates_args=())
def low_rank_fusion_fwd(
    f: torch.Tensor, mask: Optional[torch.Tensor]
) -> torch.Tensor:
    out = _kernels().low_rank_fusion_forward(as_numpy(f), _optional(mask))
    return torch.from_numpy(out)


@low_rank_fusion_fwd.register_fake
def _(f, mask):
    return f.new_empty(f.shape[2:])


@torch.library.custom_op("mmkeras::low_rank_fusion_bwd", mutates_args=())
def low_rank_fusion_bwd(
    f: torch.Tensor, mask: Optional[torch.Tensor], dout: torch.Tensor
) -> torch.Tensor:
    df = _kernels().low_rank_fusion_backward(
        as_numpy(f), _optional(mask), as_numpy(dout)
    )
    return torch.from_numpy(df)


@low_rank_fusion_bwd.register_fake
def _(f, mask, dout):
    return torch.empty_like(f)


def _low_rank_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _low_rank_backward(ctx, dout):
    f, mask = ctx.saved_tensors
    return low_rank_fusion_bwd(f, mask, dout), None


low_rank_fusion_fwd.register_autograd(
    _low_rank_backward, setup_context=_low_rank_setup
)


# ------------------------------------------------------------ contrastive loss


@torch.library.custom_op("mmkeras::contrastive_fwd", mutates_args=())
def contrastive_fwd(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    bias: Optional[torch.Tensor],
    sigmoid: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    loss, lse = _kernels().contrastive_forward(
        as_numpy(a), as_numpy(b), as_numpy(scale), _optional(bias), sigmoid
    )
    return torch.from_numpy(loss), torch.from_numpy(lse)


@contrastive_fwd.register_fake
def _(a, b, scale, bias, sigmoid):
    return a.new_empty(()), a.new_empty((2, a.shape[0]))


@torch.library.custom_op("mmkeras::contrastive_bwd", mutates_args=())
def contrastive_bwd(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    bias: Optional[torch.Tensor],
    lse: torch.Tensor,
    dloss: torch.Tensor,
    sigmoid: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = _kernels().contrastive_backward(
        as_numpy(a),
        as_numpy(b),
        as_numpy(scale),
        _optional(bias),
        as_numpy(lse),
        as_numpy(dloss),
        sigmoid,
    )
    return tuple(torch.from_numpy(g) for g in grads)


@contrastive_bwd.register_fake
def _(a, b, scale, bias, lse, dloss, sigmoid):
    return (
        torch.empty_like(a),
        torch.empty_like(b),
        a.new_empty(()),
        a.new_empty(()),
    )


def _contrastive_setup(ctx, inputs, output):
    a, b, scale, bias, sigmoid = inputs
    _, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(a, b, scale, bias, lse)
    ctx.sigmoid = sigmoid


def _contrastive_backward(ctx, dloss, _dlse):
    a, b, scale, bias, lse = ctx.saved_tensors
    da, db, dscale, dbias = contrastive_bwd(
        a, b, scale, bias, lse, dloss, ctx.sigmoid
    )
    return da, db, dscale, (None if bias is None else dbias), None


contrastive_fwd.register_autograd(
    _contrastive_backward, setup_context=_contrastive_setup
)


# ------------------------------------------------------------ public functions


def _triton():
    from mmkeras.triton_kernels import torch_fusion_ops

    return torch_fusion_ops


def _triton_reason():
    return triton_reason("torch_fusion_ops")


def unavailable_reason(x):
    if x.device.type == "cuda":
        return _triton_reason()
    # "meta": Keras infers shapes on meta tensors (the ops' fake kernels).
    if x.device.type not in ("cpu", "meta"):
        return (
            "the fusion and contrastive kernels have no implementation for "
            f"device type {x.device.type!r} (CPU and CUDA only)"
        )
    return cpu_module.load()[1]


def gated_fusion(projections, gate_logits, modality_mask):
    if projections.device.type == "cuda":
        return _triton().gated_fusion(projections, gate_logits, modality_mask)
    return gated_fusion_fwd(projections, gate_logits, modality_mask)


def low_rank_fusion(factors, modality_mask):
    if factors.device.type == "cuda":
        return _triton().low_rank_fusion(factors, modality_mask)
    return low_rank_fusion_fwd(factors, modality_mask)


def contrastive_loss(a, b, logit_scale, logit_bias, sigmoid):
    if a.device.type == "cuda":
        return _triton().contrastive_loss(a, b, logit_scale, logit_bias,
                                          sigmoid)
    loss, _ = contrastive_fwd(a, b, logit_scale, logit_bias, bool(sigmoid))
    return loss


def status():
    reason = cpu_module.load()[1]
    rows = [("torch CPU fusion + contrastive (C++ custom ops)", reason is None,
             reason)]
    if not torch.cuda.is_available():
        rows.append(("torch CUDA fusion + contrastive (Triton)", False,
                     "no CUDA device"))
    else:
        reason = _triton_reason()
        rows.append(("torch CUDA fusion + contrastive (Triton)",
                     reason is None, reason))
    return rows
