"""`FusionClassifier`: named modalities -> encoders -> a fusion layer -> head."""

import keras
from keras import ops

from mmkeras.models.base import MultimodalModel


@keras.saving.register_keras_serializable(package="mmkeras")
class FusionClassifier(MultimodalModel):
    """Classifies a dict of modalities with any vector fusion layer.

    Each modality goes through its encoder, is pooled to one vector (mean
    over real tokens), and the vectors are fused by `fusion` (e.g.
    `mmkeras.layers.GatedFusion(64)`), then a dense head gives logits.

    Missing modalities: pass `"modality_mask"`, a (B, M) boolean array in
    the order of `encoders` (True = present), or a None entry; the fusion
    layer then fuses only what is present. Training with
    `mmkeras.layers.ModalityDropout` inside `fusion` (or random masks) makes
    the model robust to them.

    Args:
        encoders: dict name -> encoder layer (`ImageEncoder`, `TextEncoder`,
            `AudioEncoder`, ...), all with the same `hidden_dim`.
        input_shapes: dict name -> input shape without the batch dim.
        fusion: a fusion layer taking a list of (B, D) vectors and
            `modality_mask`.
        num_classes: number of classes; the output is (B, num_classes)
            logits (use `from_logits=True`).
        dropout: dropout before the head.

    Example:

    >>> import numpy as np
    >>> from mmkeras import layers, models
    >>> model = models.FusionClassifier(
    ...     encoders={"image": layers.ImageEncoder(32, patch_size=4, num_layers=1),
    ...               "text": layers.TextEncoder(50, 8, 32, num_layers=1)},
    ...     input_shapes={"image": (8, 8, 1), "text": (8,)},
    ...     fusion=layers.ConcatFusion(32), num_classes=10)
    >>> logits = model({"image": np.zeros((2, 8, 8, 1), "float32"),
    ...                 "text": np.ones((2, 8), "int32")})
    >>> tuple(logits.shape)
    (2, 10)
    """

    _layer_config_keys = ("fusion",)

    def __init__(self, encoders, input_shapes, fusion, num_classes,
                 dropout=0.0, **kwargs):
        super().__init__(encoders, input_shapes, **kwargs)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                "Argument `num_classes` must be an integer >= 2. "
                f"Received: num_classes={num_classes!r}"
            )
        self.fusion = fusion
        self.num_classes = num_classes
        self.dropout = dropout
        self.head_dropout = keras.layers.Dropout(dropout)
        # float32 logits keep the loss stable under mixed precision.
        self.head = keras.layers.Dense(num_classes, dtype="float32",
                                       name="head")

    @property
    def modalities(self):
        return list(self.encoders)

    def build(self, input_shape=None):
        self.call(self.sample_inputs(), training=False)
        self.built = True

    def call(self, inputs, training=None):
        inputs = self.check_inputs(dict(inputs), self.modalities,
                                   optional=("modality_mask",))
        batch = next(ops.shape(x)[0] for x in inputs.values() if x is not None)
        vectors, present = [], []
        for name in self.modalities:
            x = inputs[name]
            if x is None:  # absent for the whole batch
                x = self.sample_inputs([name], batch)[name]
                present.append(ops.zeros((batch,), "bool"))
            else:
                present.append(ops.ones((batch,), "bool"))
            vectors.append(self.encode_vector(name, x, training))
        mask = ops.stack(present, axis=1)
        if inputs.get("modality_mask") is not None:
            mask = ops.logical_and(
                mask, ops.cast(inputs["modality_mask"], "bool"))
        fused = self.fusion(vectors, modality_mask=mask, training=training)
        return self.head(self.head_dropout(fused, training=training))

    def get_config(self):
        config = super().get_config()
        config.update(
            fusion=keras.saving.serialize_keras_object(self.fusion),
            num_classes=self.num_classes,
            dropout=self.dropout,
        )
        return config
