"""Helpers shared by the op tests: attention inputs, and compiling a function
the way the current Keras backend trains."""

import keras
import numpy as np


def attention_inputs(B, T, S, N, K, H, mask_kind, seed=0):
    """q (B, T, N, H), k and v (B, S, K, H), dout like q (float32) and a
    boolean mask of `mask_kind`: None, "padding" (B, 1, 1, S) where the last
    batch attends nothing, "full" (B, N, T, S) with fully masked rows,
    "heads" (1, N, T, S) shared by the batch, "rows" (B, 1, T, 1) with whole
    query rows on or off, "flags" (B, N, 1, 1) with whole heads on or off."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, T, N, H), dtype=np.float32)
    k = rng.standard_normal((B, S, K, H), dtype=np.float32)
    v = rng.standard_normal((B, S, K, H), dtype=np.float32)
    dout = rng.standard_normal((B, T, N, H), dtype=np.float32)
    mask = None
    if mask_kind == "padding":
        lengths = rng.integers(1, S + 1, B)
        lengths[-1] = 0 if B > 1 else lengths[-1]
        mask = (np.arange(S)[None, :] < lengths[:, None])[:, None, None, :]
    elif mask_kind == "full":
        mask = rng.random((B, N, T, S)) > 0.3
        mask[:, :, :: max(T // 3, 1), :] = False
    elif mask_kind == "heads":
        mask = rng.random((1, N, T, S)) > 0.5
    elif mask_kind == "rows":
        mask = rng.random((B, 1, T, 1)) > 0.3
    elif mask_kind == "flags":
        mask = rng.random((B, N, 1, 1)) > 0.3
        mask[0, 0] = False
    return q, k, v, mask, dout


def compile_fn(fn):
    """`fn` compiled as the backend compiles a training step: `jax.jit`,
    `tf.function`, or `torch.compile` (one graph, eager backend)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    import torch

    return torch.compile(fn, backend="eager", fullgraph=True)
