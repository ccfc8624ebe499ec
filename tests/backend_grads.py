"""Gradients on the current Keras backend, for tests: one helper per idea."""

import keras
import numpy as np


def vjp(fn, args, cotangent):
    """Returns (fn(*args), grads of sum(fn(*args) * cotangent) w.r.t. args)
    as numpy arrays in float32, on the current backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        out, pullback = jax.vjp(fn, *args)
        grads = pullback(keras.ops.cast(cotangent, out.dtype))
    elif backend == "tensorflow":
        import tensorflow as tf

        args = [tf.convert_to_tensor(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(args)
            out = fn(*args)
            loss = tf.reduce_sum(out * tf.cast(cotangent, out.dtype))
        grads = tape.gradient(loss, args)
    elif backend == "torch":
        import torch

        args = [torch.as_tensor(a).clone().requires_grad_(True) for a in args]
        out = fn(*args)
        loss = (out * torch.as_tensor(cotangent).to(out.dtype)).sum()
        grads = torch.autograd.grad(loss, args)
    else:
        raise ValueError(f"unsupported backend {backend}")
    to_np = lambda t: np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(t, "float32")))  # noqa: E731
    return to_np(out), [to_np(g) for g in grads]
