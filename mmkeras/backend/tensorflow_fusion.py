"""TensorFlow glue of the fusion family: custom ops from `tf.load_op_library`
with gradients (`tf.custom_gradient`) for `gated_fusion` and
`low_rank_fusion` (contract in kernels/cpu/fusion.h).

Differentiable eagerly and inside `tf.function` (what `model.fit` runs).
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
        "mmkeras_tf_ops_fusion",
        ["bindings/tf_ops_fusion.cc"],
        "the TensorFlow fusion ops",
    )


def _ops():
    return loaded_ops(_load)


def _mask_operand(mask):
    # The ops always take a mask; `has_mask=False` ignores it.
    return tf.ones((1, 1), tf.bool) if mask is None else mask


def unavailable_reason(x):
    return cpu_only_reason(x, _load, "the TensorFlow fusion kernels run")


def gated_fusion(projections, gate_logits, modality_mask):
    ops = _ops()
    mask = _mask_operand(modality_mask)
    has_mask = modality_mask is not None

    @tf.custom_gradient
    def run(h, g):
        out = ops.mmkeras_gated_fusion_forward(h, g, mask, has_mask=has_mask)

        def grad(dout):
            return ops.mmkeras_gated_fusion_backward(
                h, g, mask, dout, has_mask=has_mask
            )

        return out, grad

    return run(projections, gate_logits)


def low_rank_fusion(factors, modality_mask):
    ops = _ops()
    mask = _mask_operand(modality_mask)
    has_mask = modality_mask is not None

    @tf.custom_gradient
    def run(f):
        out = ops.mmkeras_low_rank_fusion_forward(f, mask, has_mask=has_mask)

        def grad(dout):
            return ops.mmkeras_low_rank_fusion_backward(
                f, mask, dout, has_mask=has_mask
            )

        return out, grad

    return run(factors)


def status():
    reason = _load()[1]
    return [("tensorflow CPU fusion (custom ops)", reason is None,
             reason)]
