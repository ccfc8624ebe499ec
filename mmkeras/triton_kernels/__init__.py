"""Triton kernels for mmkeras' fused ops (NVIDIA GPUs).

Modules:
    flash_attention: FlashAttention-2 style forward/backward kernels and their
        plain Python launchers (`forward`, `backward`).
    torch_ops: the kernels registered as `torch.library.triton_op` custom ops
        (`mmkeras::triton_attention_fwd` / `mmkeras::triton_attention_bwd`)
        with autograd, and the differentiable `attention` function.

Nothing is imported here eagerly: importing triton must stay an explicit choice
of the caller (see the TensorFlow/Triton import-order hazard in DESIGN.md).
"""
