"""Triton kernels for mmkeras' fused ops (NVIDIA GPUs).

Modules:
    flash_attention: FlashAttention-2 style forward/backward kernels and their
        plain Python launchers (`forward`, `backward`).
    torch_ops: the kernels registered as `torch.library.triton_op` custom ops
        (`mmkeras::triton_attention_fwd` / `mmkeras::triton_attention_bwd`)
        with autograd, and the differentiable `attention` function.
    fusion, contrastive: kernels of `gated_fusion`, `low_rank_fusion` and the
        blockwise `contrastive_loss`.
    torch_fusion_ops: those kernels as torch custom ops with autograd.
    pallas_attention: the JAX GPU path of fused attention, in Pallas (lowers
        to Triton through XLA; `interpret=True` runs it on the CPU).
    attention_checks: the input checks both attention paths share
        (framework-free).

Nothing is imported here eagerly: importing triton must stay an explicit choice
of the caller (see the TensorFlow/Triton import-order hazard in DESIGN.md).
"""
