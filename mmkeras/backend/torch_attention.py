"""PyTorch glue of the attention family: `torch.library` custom ops with
registered autograd.

CPU tensors run the C++ kernel through zero-copy numpy views; CUDA tensors run
the Triton kernels (torch_attention_triton.py registers them).
"""

from typing import Optional

import torch

from mmkeras.backend import torch_common
from mmkeras.backend.torch_common import as_numpy
from mmkeras.backend.torch_common import as_numpy_or_none
from mmkeras.backend.torch_common import cpu_kernels
from mmkeras.backend.torch_common import save_with_lse


@torch.library.custom_op("mmkeras::attention_fwd", mutates_args=())
def attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor],
    is_causal: bool,
    scale: float,
    bf16_products: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = cpu_kernels().attention_forward(
        as_numpy(q),
        as_numpy(k),
        as_numpy(v),
        as_numpy_or_none(mask),
        is_causal,
        scale,
        bf16_products,
    )
    return torch.from_numpy(out), torch.from_numpy(lse)


@attention_fwd.register_fake
def _(q, k, v, mask, is_causal, scale, bf16_products=False):
    B, T, N, _ = q.shape
    return torch.empty_like(q), q.new_empty((B, N, T), dtype=torch.float32)


@torch.library.custom_op("mmkeras::attention_bwd", mutates_args=())
def attention_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    dout: torch.Tensor,
    mask: Optional[torch.Tensor],
    is_causal: bool,
    scale: float,
    bf16_products: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = cpu_kernels().attention_backward(
        as_numpy(q),
        as_numpy(k),
        as_numpy(v),
        as_numpy(out),
        as_numpy(lse),
        as_numpy(dout),
        as_numpy_or_none(mask),
        is_causal,
        scale,
        bf16_products,
    )
    return tuple(torch.from_numpy(g) for g in grads)


@attention_bwd.register_fake
def _(q, k, v, out, lse, dout, mask, is_causal, scale, bf16_products=False):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, mask, is_causal, scale, bf16_products = inputs
    out, lse = output
    save_with_lse(ctx, (q, k, v, mask, out), lse, is_causal=is_causal,
                  scale=scale, bf16_products=bf16_products)


def _backward(ctx, dout, _dlse):
    q, k, v, mask, out, lse = ctx.saved_tensors
    dq, dk, dv = attention_bwd(
        q, k, v, out, lse, dout, mask, ctx.is_causal, ctx.scale,
        ctx.bf16_products
    )
    return dq, dk, dv, None, None, None, None


attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def unavailable_reason(query):
    return torch_common.unavailable_reason(
        query, "torch_attention_triton", "no native kernel for device type {!r}"
    )


def fused_attention(query, key, value, mask, is_causal, scale, bf16_products=False):
    if query.device.type == "cuda":
        from mmkeras.backend import torch_attention_triton

        return torch_attention_triton.attention(query, key, value, mask,
                                                is_causal, scale)
    out, _ = attention_fwd(query, key, value, mask, is_causal, float(scale),
                           bool(bf16_products))
    return out


def status():
    return torch_common.status(
        "torch CPU (C++ custom op)", "torch CUDA (Triton)", "torch_attention_triton"
    )
