"""Tile configs of the Pallas attention kernels (`attention.py`).

Kept apart from the kernels so that those read as the algorithm alone: a
config changes speed (and whether registers spill), never results.

(BLOCK_M, BLOCK_N, num_warps, num_stages) per head-dim class (the padded head
dim, at most 64 / 128 / 256), for 16-bit and for float32 inputs. They start
from the defaults of the torch Triton kernels
(`mmkeras/triton_kernels/flash_attention_tuning.py`), then were changed where
the code Pallas generates spilled registers: the Triton IR that jaxlib lowers
these kernels to was compiled for sm_90a with triton 3.9 and ptxas on a
CPU-only machine (`ptxas -v`): without spills, or a few bytes with some masks,
except for float32 at head dim 256 (dK/dV, dQ). They have not been timed on a
GPU yet. Under the interpreter one small config with BLOCK_M != BLOCK_N keeps
tests fast and exercises the causal block bookkeeping.
"""

import jax.numpy as jnp

GPU_CONFIGS = {
    # kind: {float32 inputs: {head class: config}}
    "fwd": {
        False: {64: (128, 64, 8, 3), 128: (128, 64, 8, 3), 256: (64, 64, 8, 2)},
        True: {64: (64, 32, 4, 2), 128: (16, 32, 4, 2), 256: (16, 32, 8, 2)},
    },
    "dkdv": {
        False: {64: (64, 128, 8, 3), 128: (32, 128, 8, 2), 256: (16, 32, 4, 2)},
        True: {64: (32, 32, 4, 2), 128: (16, 16, 4, 2), 256: (16, 16, 8, 1)},
    },
    "dq": {
        False: {64: (128, 64, 8, 3), 128: (128, 64, 8, 2), 256: (64, 32, 8, 2)},
        True: {64: (32, 32, 4, 2), 128: (16, 32, 4, 2), 256: (16, 32, 8, 2)},
    },
}
INTERPRET_CONFIGS = {
    "fwd": (32, 16, 4, 1),
    "dkdv": (16, 32, 4, 1),
    "dq": (32, 16, 4, 1),
}


def next_pow2(n):
    return 1 << max(0, (int(n) - 1).bit_length())


def config(kind, dtype, block_h, t_len, s_len, interpret):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of kernel `kind` ("fwd",
    "dkdv" or "dq") for one call."""
    if interpret:
        bm, bn, warps, stages = INTERPRET_CONFIGS[kind]
    else:
        head_class = next(c for c in (64, 128, 256) if block_h <= c)
        fp32 = jnp.dtype(dtype) == jnp.float32
        bm, bn, warps, stages = GPU_CONFIGS[kind][fp32][head_class]
    # Short sequences: no tile longer than the (padded) sequence. Triton's
    # dots need every tile dim >= 16.
    bm = min(bm, max(16, next_pow2(t_len)))
    bn = min(bn, max(16, next_pow2(s_len)))
    return bm, bn, warps, stages
