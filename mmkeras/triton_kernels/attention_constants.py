"""Constants shared by the two GPU attention kernels (Triton under torch,
Pallas under JAX).

Framework-free like `attention_checks`, so that the Pallas kernels can import
it without pulling in triton or torch.
"""

# The kernels compute the softmax in base 2 (exp2/log2 are the GPU's native
# instructions): logits are scaled by log2(e) and the log-sum-exp, which the
# kernels return in base e, is converted back with ln(2) = 1 / log2(e).
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
