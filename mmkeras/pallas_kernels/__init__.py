"""Pallas kernels for mmkeras' fused ops under JAX on NVIDIA GPUs.

Modules:
    attention: the JAX GPU path of fused attention (Pallas lowers it to Triton
        through XLA; `interpret=True` runs it on the CPU for tests).
    attention_tuning: the tile configs of those kernels.

The algorithm and the contract are those of the Triton kernels in
`mmkeras.triton_kernels`; the framework-free input checks are shared with
them (`mmkeras.triton_kernels.attention_checks`, which imports no Triton),
and so are the constants (`attention_constants`, framework-free too).
"""
