"""Losses of mmkeras: the contrastive losses of dual encoders (CLIP, SigLIP).

How a dual encoder passes its two embeddings to `ContrastiveLoss` (a
`keras.losses.Loss`, so `model.compile(loss=...)` and `model.fit` work on
every backend): the model has ONE output, `y_pred`, that packs them along
the last axis.

- Fixed temperature: `y_pred = concat([a, b], axis=-1)`, shape `(B, 2d)`
  (e.g. `keras.layers.Concatenate()([a, b])`), and
  `ContrastiveLoss(logit_scale=..., logit_bias=...)` holds the constants.
- Learned temperature (and bias): the scale is a weight of the model, held
  by the layer `LogitScale` (also exported as `mmkeras.layers.LogitScale`),
  which outputs `concat([a, b, scale, bias], axis=-1)`, shape
  `(B, 2d + 2)` (the scale and bias repeated on every row); compile with
  `ContrastiveLoss(learnable=True)`.

`y_true` is ignored: call `model.fit(x)` without targets (or with any
array of B rows). The positives are the pairs on the diagonal,
`(a_i, b_i)`. The loss couples every pair of the batch, so it returns one
scalar per batch and takes no `sample_weight`. The layout cannot be checked
beyond the width of `y_pred`, so build `y_pred` with `Concatenate` or
`LogitScale` as above.

Example (fixed temperature):

```python
image = keras.Input((64,)); text = keras.Input((32,))
a = keras.layers.UnitNormalization()(keras.layers.Dense(16)(image))
b = keras.layers.UnitNormalization()(keras.layers.Dense(16)(text))
model = keras.Model([image, text], keras.layers.Concatenate()([a, b]))
model.compile("adam", mmkeras.losses.ContrastiveLoss(logit_scale=10.0))
model.fit([images, texts], batch_size=32)
```
"""

import math

import keras
from keras import ops

from mmkeras import distribution
from mmkeras.ops.contrastive import contrastive_loss
from mmkeras.ops.contrastive import contrastive_loss_reference  # noqa: F401

_KINDS = ("softmax", "sigmoid")


def _check_kind(kind):
    if kind not in _KINDS:
        raise ValueError(
            f"Argument `kind` must be one of {_KINDS}. Received: kind={kind!r}"
        )


def _contrastive_loss(a, b, logit_scale, logit_bias, kind):
    """The loss computation of `ContrastiveLoss`: the fused op (blockwise,
    never storing the B x B logits), or its reference where no native
    kernel can run."""
    return contrastive_loss(a, b, logit_scale, logit_bias, kind=kind)


def _check_float(value, name, positive=False, allow_none=False):
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (positive and value <= 0)
    ):
        want = "a positive float" if positive else "a finite float"
        raise ValueError(
            f"Argument `{name}` must be {want}. Received: {name}={value!r}"
        )
    return float(value)


@keras.saving.register_keras_serializable(package="mmkeras")
class ContrastiveLoss(keras.losses.Loss):
    """Contrastive loss of a dual encoder: CLIP (softmax) or SigLIP (sigmoid).

    `y_pred` packs the two embeddings along its last axis (see the module
    docstring): `concat([a, b])` `(B, 2d)` with a fixed temperature, or the
    output of `LogitScale`, `concat([a, b, scale, bias])` `(B, 2d + 2)`,
    with `learnable=True`. `y_true` is ignored (may be None). The math is
    that of `contrastive_loss_reference`; the result is one scalar per
    batch.

    Args:
        kind: `"softmax"` (symmetric InfoNCE, CLIP) or `"sigmoid"` (pairwise
            sigmoid, SigLIP).
        logit_scale: fixed multiplier of the logits (not its log); default
            10.0. Must be left None with `learnable=True`.
        logit_bias: fixed bias added to the logits (None: no bias). Must be
            left None with `learnable=True`.
        learnable: read the scale and bias from `y_pred` (a `LogitScale`
            output, whose weights the optimizer trains).
        reduction: as in `keras.losses.Loss` (the loss is already a scalar).
        name: optional name.
        dtype: dtype of the loss computation (default float32 / floatx).

    Example:

    >>> import numpy as np
    >>> import mmkeras
    >>> a = np.eye(4, 8, dtype="float32")
    >>> loss = mmkeras.losses.ContrastiveLoss(kind="sigmoid", logit_scale=10.0,
    ...                                       logit_bias=-5.0)
    >>> float(loss(np.zeros(4), np.concatenate([a, a], axis=-1))) < 0.1
    True
    """

    def __init__(
        self,
        kind="softmax",
        logit_scale=None,
        logit_bias=None,
        learnable=False,
        reduction="sum_over_batch_size",
        name="contrastive_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        _check_kind(kind)
        self.kind = kind
        self.learnable = bool(learnable)
        given = logit_scale is not None or logit_bias is not None
        if self.learnable and given:
            raise ValueError(
                "Arguments `logit_scale` and `logit_bias` must be None with "
                "learnable=True (the scale and bias come from `y_pred`, the "
                "output of a `LogitScale` layer, which sets their initial "
                f"values). Received: logit_scale={logit_scale!r}, "
                f"logit_bias={logit_bias!r}"
            )
        self.logit_scale = _check_float(
            logit_scale, "logit_scale", positive=True, allow_none=True
        )
        self.logit_bias = _check_float(
            logit_bias, "logit_bias", allow_none=True
        )

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                "Argument `sample_weight` is not supported by ContrastiveLoss: "
                "the loss couples every pair of the batch and gives one "
                "scalar per batch. Received: a sample_weight"
            )
        if y_true is None:  # model.fit(x) without targets: nothing to read
            y_true = ops.zeros((1,), dtype=self.dtype)
        return super().__call__(y_true, y_pred)

    def split(self, y_pred):
        """Unpacks `y_pred` into `(a, b, logit_scale, logit_bias)`."""
        shape = tuple(y_pred.shape)
        extra = 2 if self.learnable else 0
        width = shape[-1] if len(shape) == 2 else None
        if width is None or width - extra < 2 or (width - extra) % 2:
            layout = (
                "(batch, 2 * dim + 2), the output of LogitScale"
                if self.learnable
                else "(batch, 2 * dim), concat([a, b], axis=-1)"
            )
            raise ValueError(
                f"Argument `y_pred` of ContrastiveLoss must have shape "
                f"{layout}. Received: y_pred.shape={shape}"
            )
        d = (width - extra) // 2
        a, b = y_pred[:, :d], y_pred[:, d : 2 * d]
        if self.learnable:
            return a, b, y_pred[0, 2 * d], y_pred[0, 2 * d + 1]
        scale = 10.0 if self.logit_scale is None else self.logit_scale
        return a, b, scale, self.logit_bias

    def call(self, y_true, y_pred):
        # Data parallel: every replica's negatives are the global batch.
        a, b, scale, bias = self.split(distribution.gather_batch(y_pred))
        loss = _contrastive_loss(a, b, scale, bias, self.kind)
        return distribution.replica_share(loss)

    def get_config(self):
        config = super().get_config()
        config.update(
            kind=self.kind,
            logit_scale=self.logit_scale,
            logit_bias=self.logit_bias,
            learnable=self.learnable,
        )
        return config


@keras.saving.register_keras_serializable(package="mmkeras")
class LogitScale(keras.layers.Layer):
    """Holds a learned logit scale (as its log) and bias for `ContrastiveLoss`.

    Takes `[a, b]`, two `(B, d)` embeddings, and returns
    `concat([a, b, scale, bias], axis=-1)` of shape `(B, 2d + 2)`, with
    `scale = exp(min(log_scale, log(max_scale)))` and `bias` (0 when
    `initial_bias` is None) repeated on every row: the `y_pred` layout of
    `ContrastiveLoss(learnable=True)`. Learning the log keeps the scale
    positive; `max_scale` caps it (CLIP uses 100).

    Args:
        initial_scale: initial scale (not its log); CLIP starts at 1/0.07,
            SigLIP at 10.
        initial_bias: initial bias, or None for no bias (SigLIP: -10).
        max_scale: cap on the scale.
        **kwargs: base `keras.layers.Layer` arguments (`trainable=False`
            freezes both).

    Example:

    >>> import numpy as np
    >>> import mmkeras
    >>> a = np.random.rand(4, 8).astype("float32")
    >>> tuple(mmkeras.layers.LogitScale(10.0, -10.0)([a, a]).shape)
    (4, 18)
    """

    def __init__(
        self, initial_scale=10.0, initial_bias=None, max_scale=100.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.initial_scale = _check_float(
            initial_scale, "initial_scale", positive=True
        )
        self.initial_bias = _check_float(
            initial_bias, "initial_bias", allow_none=True
        )
        self.max_scale = _check_float(max_scale, "max_scale", positive=True)
        if self.initial_scale > self.max_scale:
            raise ValueError(
                "Argument `initial_scale` must not exceed `max_scale` "
                f"({self.max_scale}). Received: initial_scale={initial_scale}"
            )

    def build(self, input_shape):
        self._check(input_shape)
        self.log_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(
                math.log(self.initial_scale)
            ),
            name="log_scale",
        )
        self.bias = None
        if self.initial_bias is not None:
            self.bias = self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(self.initial_bias),
                name="bias",
            )

    def _check(self, shapes):
        if (
            not isinstance(shapes, (list, tuple))
            or len(shapes) != 2
            or any(not isinstance(s, (list, tuple)) for s in shapes)
        ):
            raise ValueError(
                "Argument `inputs` of LogitScale must be a list [a, b] of two "
                f"(batch, dim) tensors. Received: shapes {shapes}"
            )
        (sa, sb) = (tuple(s) for s in shapes)
        if len(sa) != 2 or len(sb) != 2 or any(
            p is not None and q is not None and p != q for p, q in zip(sa, sb)
        ):
            raise ValueError(
                "Argument `inputs` of LogitScale must be two tensors of the "
                f"same shape (batch, dim). Received: shapes {sa} and {sb}"
            )
        return sa

    @property
    def scale(self):
        """The current logit scale (a scalar tensor)."""
        cap = math.log(self.max_scale)
        return ops.exp(ops.minimum(self.log_scale, cap))

    def call(self, inputs):
        a, b = inputs
        self._check([tuple(a.shape), tuple(b.shape)])
        ones = ops.ones_like(a[:, :1])
        scale = ones * ops.cast(self.scale, a.dtype)
        bias = ones * 0.0
        if self.bias is not None:
            bias = ones * ops.cast(self.bias, a.dtype)
        return ops.concatenate([a, ops.cast(b, a.dtype), scale, bias], axis=-1)

    def compute_output_shape(self, input_shape):
        sa = self._check(input_shape)
        return (sa[0], None if sa[1] is None else 2 * sa[1] + 2)

    def get_config(self):
        config = super().get_config()
        config.update(
            initial_scale=self.initial_scale,
            initial_bias=self.initial_bias,
            max_scale=self.max_scale,
        )
        return config
