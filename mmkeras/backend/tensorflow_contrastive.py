"""TensorFlow glue of the contrastive family: custom ops from
`tf.load_op_library` with gradients (`tf.custom_gradient`) for
`contrastive_loss` (contract in kernels/cpu/contrastive.h).

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
        "mmkeras_tf_ops_contrastive",
        ["bindings/tf_ops_contrastive.cc"],
        "the TensorFlow contrastive ops",
    )


def unavailable_reason(x):
    return cpu_only_reason(x, _load, "the TensorFlow contrastive kernels run")


def contrastive_loss(a, b, logit_scale, logit_bias, kind):
    ops = loaded_ops(_load)
    attrs = dict(has_bias=logit_bias is not None, sigmoid=kind == "sigmoid")

    @tf.custom_gradient
    def run(a, b, scale, *bias):
        bias_operand = bias[0] if bias else tf.zeros((), tf.float32)
        loss, lse = ops.mmkeras_contrastive_forward(
            a, b, scale, bias_operand, **attrs
        )

        def grad(dloss):
            da, db, dscale, dbias = ops.mmkeras_contrastive_backward(
                a, b, scale, bias_operand, lse, dloss, **attrs
            )
            return (da, db, dscale, dbias)[: 3 + len(bias)]

        return loss, grad

    args = (a, b, logit_scale) + (() if logit_bias is None else (logit_bias,))
    return run(*args)


def status():
    reason = _load()[1]
    return [("tensorflow CPU contrastive (custom ops)", reason is None,
             reason)]
