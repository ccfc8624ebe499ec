"""TensorFlow glue: custom ops from `tf.load_op_library` with a gradient.

The gradient is attached with `tf.custom_gradient`, so the op is
differentiable eagerly and inside `tf.function` (what `model.fit` runs).
"""

import functools

import tensorflow as tf

from mmkeras.backend import build


@functools.cache
def _load():
    """Returns `(ops_module, None)` or `(None, reason)`."""
    try:
        path = build.build_library(
            "mmkeras_tf_ops",
            ["bindings/tf_ops.cc", "cpu/flash_attention.cc"],
            cflags=tf.sysconfig.get_compile_flags(),
            ldflags=tf.sysconfig.get_link_flags(),
            tag=f"tensorflow-{tf.__version__}",
        )
        return tf.load_op_library(str(path)), None
    except Exception as e:  # noqa: BLE001  any failure disables the adapter
        return None, f"could not build or load the TensorFlow op: {e}"


def unavailable_reason(query):
    device = getattr(query, "device", "") or ""
    if "GPU" in device.upper():
        return (
            "the TensorFlow native kernel runs on the CPU; on GPUs TensorFlow "
            "uses the reference path (XLA)"
        )
    return _load()[1]


def attention(query, key, value, mask, is_causal, scale):
    ops, reason = _load()
    if ops is None:
        raise RuntimeError(reason)
    attrs = dict(has_mask=mask is not None, causal=bool(is_causal), scale=scale)
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
