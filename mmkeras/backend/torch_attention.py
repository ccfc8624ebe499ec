"""PyTorch glue: `torch.library` custom ops with registered autograd.

CPU tensors run the C++ kernel through zero-copy numpy views; CUDA tensors run
the Triton kernels (`mmkeras.triton_kernels`).
"""

from typing import Optional

import torch

from mmkeras.backend import cpu_module
from mmkeras.backend.torch_common import as_numpy
from mmkeras.backend.torch_common import triton_reason


@torch.library.custom_op("mmkeras::attention_fwd", mutates_args=())
def attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor],
    is_causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    kernels, reason = cpu_module.load()
    if kernels is None:
        raise RuntimeError(reason)
    out, lse = kernels.attention_forward(
        as_numpy(q),
        as_numpy(k),
        as_numpy(v),
        None if mask is None else as_numpy(mask),
        is_causal,
        scale,
    )
    return torch.from_numpy(out), torch.from_numpy(lse)


@attention_fwd.register_fake
def _(q, k, v, mask, is_causal, scale):
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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    kernels, reason = cpu_module.load()
    if kernels is None:
        raise RuntimeError(reason)
    grads = kernels.attention_backward(
        as_numpy(q),
        as_numpy(k),
        as_numpy(v),
        as_numpy(out),
        as_numpy(lse),
        as_numpy(dout),
        None if mask is None else as_numpy(mask),
        is_causal,
        scale,
    )
    return tuple(torch.from_numpy(g) for g in grads)


@attention_bwd.register_fake
def _(q, k, v, out, lse, dout, mask, is_causal, scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, mask, is_causal, scale = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, mask, out, lse)
    ctx.is_causal, ctx.scale = is_causal, scale


def _backward(ctx, dout, _dlse):
    q, k, v, mask, out, lse = ctx.saved_tensors
    dq, dk, dv = attention_bwd(
        q, k, v, out, lse, dout, mask, ctx.is_causal, ctx.scale
    )
    return dq, dk, dv, None, None, None


attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def _triton_reason():
    return triton_reason("torch_ops")


def unavailable_reason(query):
    if query.device.type == "cuda":
        return _triton_reason()
    # "meta": Keras infers shapes on meta tensors; the custom ops' fake
    # kernels answer that, so the symbolic pass takes the native path too.
    if query.device.type not in ("cpu", "meta"):
        return f"no native kernel for device type {query.device.type!r}"
    return cpu_module.load()[1]


def attention(query, key, value, mask, is_causal, scale):
    if query.device.type == "cuda":
        from mmkeras.triton_kernels import torch_ops

        return torch_ops.attention(query, key, value, mask, is_causal, scale)
    out, _ = attention_fwd(query, key, value, mask, is_causal, float(scale))
    return out


def status():
    cpu_reason = cpu_module.load()[1]
    rows = [("torch CPU (C++ custom op)", cpu_reason is None, cpu_reason)]
    if not torch.cuda.is_available():
        rows.append(("torch CUDA (Triton)", False, "no CUDA device"))
    else:
        reason = _triton_reason()
        rows.append(("torch CUDA (Triton)", reason is None, reason))
    return rows
