"""The Triton attention kernels as torch custom ops, with autograd: the CUDA
half of the torch glue of the attention family (torch_attention.py).

Ops (visible to `torch.compile`, whose tracer sees the kernels through
`torch.library.wrap_triton`):

* `torch.ops.mmkeras.triton_attention_fwd(q, k, v, mask, is_causal, scale)
  -> (out, lse)`
* `torch.ops.mmkeras.triton_attention_bwd(q, k, v, out, lse, dout, dlse, mask,
  is_causal, scale) -> (dq, dk, dv)`

`attention(q, k, v, mask=None, is_causal=False, scale=None)` is the
differentiable entry point. Shapes and semantics: see `flash_attention`.

Under `TRITON_INTERPRET=1` (CPU tests) the ops are registered with
`torch.library.custom_op` plus allocation-only fake kernels instead of
`triton_op` (`torch_common.define_triton_op` says why).
"""

import math
from typing import Optional

import torch
from torch import Tensor

from mmkeras.backend.torch_common import define_triton_op
from mmkeras.triton_kernels import flash_attention as _fa
from mmkeras.triton_kernels.flash_attention_tuning import INTERPRET

__all__ = ["attention", "triton_attention_fwd", "triton_attention_bwd"]


_define_op = define_triton_op()


@_define_op("mmkeras::triton_attention_fwd", mutates_args=())
def triton_attention_fwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Optional[Tensor],
    is_causal: bool,
    scale: float,
) -> tuple[Tensor, Tensor]:
    return _fa._forward_impl(
        q, k, v, mask, is_causal, scale, wrap=torch.library.wrap_triton
    )


@_define_op("mmkeras::triton_attention_bwd", mutates_args=())
def triton_attention_bwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    dout: Tensor,
    dlse: Optional[Tensor],
    mask: Optional[Tensor],
    is_causal: bool,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    return _fa._backward_impl(
        q, k, v, out, lse, dout, mask, is_causal, scale, dlse,
        wrap=torch.library.wrap_triton,
    )


if INTERPRET:

    @triton_attention_fwd.register_fake
    def _fwd_fake(q, k, v, mask, is_causal, scale):
        B, T, N, _ = q.shape
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        lse = q.new_empty((B, N, T), dtype=torch.float32)
        return out, lse

    @triton_attention_bwd.register_fake
    def _bwd_fake(q, k, v, out, lse, dout, dlse, mask, is_causal, scale):
        return (
            torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format),
        )


def _setup_context(ctx, inputs, output):
    q, k, v, mask, is_causal, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, mask)
    ctx.is_causal = is_causal
    ctx.scale = scale
    # Unused outputs (usually lse) then get None instead of a zero tensor.
    ctx.set_materialize_grads(False)


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, mask = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(out)
    if dlse is not None:
        dlse = dlse.to(torch.float32)
    dq, dk, dv = torch.ops.mmkeras.triton_attention_bwd(
        q, k, v, out, lse, dout, dlse, mask, ctx.is_causal, ctx.scale
    )
    return dq, dk, dv, None, None, None


torch.library.register_autograd(
    "mmkeras::triton_attention_fwd", _backward, setup_context=_setup_context
)


def attention(q, k, v, mask=None, is_causal=False, scale=None):
    """Differentiable fused attention (Triton kernels).

    Args:
        q: `(B, T, N, H)` query.
        k, v: `(B, S, K, H)` key and value, `N % K == 0`.
        mask: None or bool tensor of rank 4, each dim 1 or full `(B, N, T, S)`.
        is_causal: top-left aligned causal mask.
        scale: logit scale, default `1 / sqrt(H)`.

    Returns:
        The attention output, `(B, T, N, H)` in q's dtype.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    out, _ = torch.ops.mmkeras.triton_attention_fwd(
        q, k, v, mask, bool(is_causal), float(scale)
    )
    return out
