"""Triton kernels for mmkeras' fused ops (NVIDIA GPUs), one module per family.

Modules:
    flash_attention: FlashAttention-2 style forward/backward kernels and their
        plain Python launchers (`forward`, `backward`).
    flash_attention_tuning: their autotune spaces and launch heuristics.
    fusion: kernels of `gated_fusion` and `low_rank_fusion`.
    contrastive: kernels of the blockwise `contrastive_loss`.
    attention_checks: the input checks the Triton and Pallas attention
        kernels share (framework-free: imports neither triton nor jax).
    attention_constants: constants the Triton and Pallas attention kernels
        share (framework-free too).

The kernels know nothing of Keras. The torch glue registers them as custom
ops with autograd (`mmkeras/backend/torch_<family>_triton.py`); the JAX GPU
path of attention is in Pallas (`mmkeras.pallas_kernels`).

Nothing is imported here eagerly: importing triton must stay an explicit choice
of the caller (see the TensorFlow/Triton import-order hazard in
docs/architecture.md).
"""
