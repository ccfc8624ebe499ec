"""Pallas kernels for mmkeras' fused ops under JAX on NVIDIA GPUs.

Modules:
    attention: the JAX GPU path of fused attention (Pallas lowers it to Triton
        through XLA; `interpret=True` runs it on the CPU for tests).

The algorithm and the contract are those of the Triton kernels in
`mmkeras.triton_kernels`; the framework-free input checks are shared with
them (`mmkeras.triton_kernels.attention_checks`, which imports no Triton).
"""
