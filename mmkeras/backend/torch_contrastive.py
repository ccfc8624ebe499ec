"""PyTorch glue of the contrastive family: a `torch.library` custom op with
registered autograd for `contrastive_loss` (contract in
kernels/cpu/contrastive.h).

CPU tensors run the C++ kernels through zero-copy numpy views; CUDA tensors
run the Triton kernels (torch_contrastive_triton.py).
"""

from typing import Optional

import torch
from torch import Tensor

from mmkeras.backend import torch_common
from mmkeras.backend.torch_common import as_numpy
from mmkeras.backend.torch_common import as_numpy_or_none
from mmkeras.backend.torch_common import cpu_kernels
from mmkeras.backend.torch_common import save_with_lse


# ------------------------------------------------------------ contrastive loss


@torch.library.custom_op("mmkeras::contrastive_fwd", mutates_args=())
def contrastive_fwd(
    a: Tensor, b: Tensor, scale: Tensor, bias: Optional[Tensor], sigmoid: bool
) -> tuple[Tensor, Tensor]:
    loss, lse = cpu_kernels().contrastive_forward(
        as_numpy(a), as_numpy(b), as_numpy(scale), as_numpy_or_none(bias),
        sigmoid,
    )
    return torch.from_numpy(loss), torch.from_numpy(lse)


@contrastive_fwd.register_fake
def _(a, b, scale, bias, sigmoid):
    return a.new_empty(()), a.new_empty((2, a.shape[0]))


@torch.library.custom_op("mmkeras::contrastive_bwd", mutates_args=())
def contrastive_bwd(
    a: Tensor, b: Tensor, scale: Tensor, bias: Optional[Tensor], lse: Tensor,
    dloss: Tensor, sigmoid: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    grads = cpu_kernels().contrastive_backward(
        as_numpy(a), as_numpy(b), as_numpy(scale), as_numpy_or_none(bias),
        as_numpy(lse), as_numpy(dloss), sigmoid,
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
    save_with_lse(ctx, (a, b, scale, bias), output[1], sigmoid=sigmoid)


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


def unavailable_reason(x):
    return torch_common.unavailable_reason(
        x,
        "torch_contrastive_triton",
        "the contrastive kernels have no implementation for device type {!r} "
        "(CPU and CUDA only)",
    )


def contrastive_loss(a, b, logit_scale, logit_bias, kind):
    sigmoid = kind == "sigmoid"
    if a.device.type == "cuda":
        from mmkeras.backend import torch_contrastive_triton

        return torch_contrastive_triton.contrastive_loss(
            a, b, logit_scale, logit_bias, sigmoid)
    loss, _ = contrastive_fwd(a, b, logit_scale, logit_bias, sigmoid)
    return loss


def status():
    return torch_common.status(
        "torch CPU contrastive (C++ custom op)",
        "torch CUDA contrastive (Triton)",
        "torch_contrastive_triton",
    )
