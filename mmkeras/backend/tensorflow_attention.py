"""TensorFlow glue: custom ops from `tf.load_op_library` with a gradient.

The gradient is attached with `tf.custom_gradient`, so the op is
differentiable eagerly and inside `tf.function` (what `model.fit` runs).
"""

import functools

import tensorflow as tf

from mmkeras.backend.tensorflow_common import cpu_only_reason
from mmkeras.backend.tensorflow_common import load_op_library
from mmkeras.backend.tensorflow_common import loaded_ops


@functools.cache
def _load():
    """Returns `(ops_module, None)` or `(None, reason)`."""
    return load_op_library(
        "mmkeras_tf_ops_attention",
        ["bindings/tf_ops_attention.cc"],
        "the TensorFlow op",
    )


def unavailable_reason(query):
    return cpu_only_reason(query, _load, "the TensorFlow native kernel runs")


def fused_attention(query, key, value, mask, is_causal, scale, bf16_products=False):
    ops = loaded_ops(_load)
    attrs = dict(has_mask=mask is not None, causal=bool(is_causal), scale=scale,
                 bf16_products=bool(bf16_products))
    mask_operand = tf.ones((1, 1, 1, 1), tf.bool) if mask is None else mask

    @tf.custom_gradient
    def run(q, k, v):
        out, lse = ops.mmkeras_attention_forward(q, k, v, mask_operand, **attrs)

        def grad(dout):
            return ops.mmkeras_attention_backward(
                q, k, v, mask_operand, out, lse, dout, **attrs
            )

        return out, grad

    return run(query, key, value)


def status():
    reason = _load()[1]
    return [("tensorflow CPU (custom op)", reason is None, reason)]
