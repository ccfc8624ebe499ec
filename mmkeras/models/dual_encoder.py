"""`DualEncoder`: two towers into one embedding space (CLIP / SigLIP)."""

import keras
import numpy as np
from keras import ops

from mmkeras.losses import LogitScale
from mmkeras.models.base import MultimodalModel


@keras.saving.register_keras_serializable(package="mmkeras")
class DualEncoder(MultimodalModel):
    """Embeds two modalities into one space, trained contrastively.

    Each tower is an encoder, masked mean pooling, a projection to
    `embedding_dim` and L2 normalization. The model's output packs both
    embeddings with a learned logit scale (and bias for "sigmoid"), the
    layout `ContrastiveLoss(learnable=True)` reads: compile with
    `loss=mmkeras.losses.ContrastiveLoss(kind=model.kind, learnable=True)`.

    Args:
        encoders: dict of exactly two towers, name -> encoder layer. The
            first is the query side of `retrieve` by default.
        input_shapes: dict name -> input shape without the batch dim.
        embedding_dim: width of the shared space.
        kind: "softmax" (CLIP) or "sigmoid" (SigLIP).
        initial_scale, initial_bias: initial logit scale and bias (the
            bias only for "sigmoid"; defaults 10 and -10 as in SigLIP).
        projection: False leaves out the projections (the towers already
            output `embedding_dim`-wide vectors, as keras-hub CLIP and
            SigLIP towers do; see `from_hub`).

    Towers whose output is already one vector per example (`pooled = True`,
    e.g. `mmkeras.layers.encoders.HubImageEncoder`) are not pooled again.

    Example:

    >>> import numpy as np
    >>> from mmkeras import layers, models
    >>> model = models.DualEncoder(
    ...     encoders={"audio": layers.AudioEncoder(4000, 32, num_layers=1),
    ...               "image": layers.ImageEncoder(32, patch_size=4, num_layers=1)},
    ...     input_shapes={"audio": (1600,), "image": (8, 8, 1)},
    ...     embedding_dim=16)
    >>> model.encode({"image": np.zeros((3, 8, 8, 1), "float32")}, "image").shape
    (3, 16)
    """

    def __init__(self, encoders, input_shapes, embedding_dim=64,
                 kind="softmax", initial_scale=10.0, initial_bias=None,
                 projection=True, **kwargs):
        super().__init__(encoders, input_shapes, **kwargs)
        if len(self.encoders) != 2:
            raise ValueError(
                "Argument `encoders` of DualEncoder must hold exactly two "
                f"towers. Received: {sorted(self.encoders)}"
            )
        if kind not in ("softmax", "sigmoid"):
            raise ValueError(
                "Argument `kind` must be 'softmax' or 'sigmoid'. "
                f"Received: kind={kind!r}"
            )
        if kind == "sigmoid" and initial_bias is None:
            initial_bias = -10.0
        self.embedding_dim = embedding_dim
        self.kind = kind
        self.initial_scale = initial_scale
        self.initial_bias = initial_bias
        self.projection = bool(projection)
        self.projections = {
            name: keras.layers.Dense(embedding_dim, name=f"{name}_projection")
            for name in self.encoders
        } if projection else {}
        self.normalize = keras.layers.UnitNormalization(dtype="float32")
        self.logit_scale = LogitScale(initial_scale, initial_bias,
                                      dtype="float32", name="logit_scale")

    @property
    def towers(self):
        return list(self.encoders)

    @classmethod
    def from_hub(cls, backbone, trainable=True, fused=True,
                 implementation=None, **kwargs):
        """A `DualEncoder` from a keras-hub CLIP or SigLIP backbone.

        The towers are the backbone's own, with its pooling, projections and
        learned logit scale (and SigLIP's bias); `kind` is "softmax" for
        CLIP and "sigmoid" for SigLIP. keras-hub's `CLIPBackbone` has no
        loss: compile with `ContrastiveLoss(kind=model.kind,
        learnable=True)` and train with `fit`. Towers "image" (images) and
        "text" (token ids, of at most the text tower's
        `max_sequence_length`; CLIP's end token may pad them).

        Args:
            backbone: a `CLIPBackbone` or `SigLIPBackbone`, its serialized
                config, or a local preset directory (never a hub name: see
                `mmkeras.hub.load_backbone`).
            trainable: False freezes both towers (only the logit scale and
                bias train).
            fused: run the towers' attention on `fused_attention`.
            implementation: passed to `fused_attention`.
            **kwargs: other `DualEncoder` arguments (e.g. `name`); the
                scale is capped at the `LogitScale` maximum (100).

        Example:

        >>> import mmkeras
        >>> import keras_hub  # after mmkeras: it imports TensorFlow
        >>> clip = keras_hub.models.CLIPBackbone(
        ...     keras_hub.models.CLIPVisionEncoder(
        ...         patch_size=8, hidden_dim=32, num_layers=1, num_heads=2,
        ...         intermediate_dim=64, image_shape=(32, 32, 3)),
        ...     keras_hub.models.CLIPTextEncoder(
        ...         vocabulary_size=100, embedding_dim=32, hidden_dim=32,
        ...         num_layers=1, num_heads=2, intermediate_dim=64,
        ...         max_sequence_length=8),
        ...     projection_dim=16)
        >>> model = DualEncoder.from_hub(clip)
        >>> model.compile("adam", mmkeras.losses.ContrastiveLoss(
        ...     kind=model.kind, learnable=True))
        """
        from mmkeras import hub

        towers = hub.dual_towers(backbone, trainable=trainable, fused=fused,
                                 implementation=implementation)
        return cls(towers["encoders"], towers["input_shapes"],
                   embedding_dim=towers["embedding_dim"], kind=towers["kind"],
                   initial_scale=min(towers["initial_scale"], 100.0),
                   initial_bias=towers["initial_bias"], projection=False,
                   **kwargs)

    def build(self, input_shape=None):
        self.call(self.sample_inputs(), training=False)
        self.built = True

    def embed(self, name, x, training=None):
        """L2-normalized (B, embedding_dim) embeddings of one tower."""
        vector = self.encode_vector(name, x, training)
        if self.projection:
            vector = self.projections[name](vector)
        return self.normalize(ops.cast(vector, "float32"))

    def call(self, inputs, training=None):
        inputs = self.check_inputs(dict(inputs), self.towers)
        a, b = (self.embed(name, inputs[name], training) for name in self.towers)
        return self.logit_scale([a, b])

    def encode(self, inputs, tower, batch_size=256):
        """Embeds one tower's inputs; returns a numpy (N, embedding_dim)."""
        if tower not in self.encoders:
            raise ValueError(
                f"Argument `tower` must be one of {self.towers}. "
                f"Received: tower={tower!r}"
            )
        if not isinstance(inputs, dict):
            inputs = {tower: inputs}
        x = np.asarray(inputs[tower])
        self.check_modality(tower, ops.convert_to_tensor(x[:1]))
        chunks = [ops.convert_to_numpy(self.embed(tower, x[i:i + batch_size],
                                                  training=False))
                  for i in range(0, len(x), batch_size)]
        return np.concatenate(chunks, axis=0)

    def retrieve(self, queries, candidates, k=5, query_tower=None,
                 candidate_tower=None):
        """Top-k candidates for each query by cosine similarity.

        Args:
            queries: inputs of the query tower (array or one-key dict).
            candidates: inputs of the other tower.
            k: how many to return.
            query_tower, candidate_tower: tower names (default: first and
                second tower).

        Returns:
            (indices (Q, k) into candidates, similarities (Q, k)).
        """
        query_tower = query_tower or self.towers[0]
        candidate_tower = candidate_tower or next(
            t for t in self.towers if t != query_tower)
        q = self.encode(queries, query_tower)
        c = self.encode(candidates, candidate_tower)
        if not isinstance(k, int) or not 1 <= k <= len(c):
            raise ValueError(
                f"Argument `k` must be an integer in [1, {len(c)}] (number of "
                f"candidates). Received: k={k!r}"
            )
        similarity = q @ c.T
        top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        return top, np.take_along_axis(similarity, top, axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(embedding_dim=self.embedding_dim, kind=self.kind,
                      initial_scale=self.initial_scale,
                      initial_bias=self.initial_bias,
                      projection=self.projection)
        return config


def recall_at_k(query_embeddings, candidate_embeddings, k=1,
                query_labels=None, candidate_labels=None):
    """Fraction of queries with a relevant candidate among their top k.

    Relevant: the candidate with the same index (paired data), or, with
    labels, any candidate of the same label.
    """
    similarity = np.asarray(query_embeddings) @ np.asarray(candidate_embeddings).T
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    if query_labels is None:
        hits = top == np.arange(len(similarity))[:, None]
    else:
        hits = np.asarray(candidate_labels)[top] == np.asarray(query_labels)[:, None]
    return float(hits.any(axis=1).mean())


@keras.saving.register_keras_serializable(package="mmkeras")
class RecallAtK(keras.metrics.Metric):
    """In-batch recall@k of a `DualEncoder` output (paired rows match).

    Reads the `y_pred` layout of `ContrastiveLoss(learnable=True)`:
    concat([a, b, scale, bias]).
    """

    def __init__(self, k=1, name=None, **kwargs):
        super().__init__(name=name or f"recall_at_{k}", **kwargs)
        self.k = k
        self.hits = self.add_variable((), initializer="zeros", name="hits")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        d = (y_pred.shape[-1] - 2) // 2
        a, b = y_pred[:, :d], y_pred[:, d:2 * d]
        similarity = ops.matmul(a, ops.transpose(b))
        k = min(self.k, int(similarity.shape[-1] or self.k))
        _, top = ops.top_k(similarity, k)
        rows = ops.expand_dims(ops.arange(ops.shape(similarity)[0]), 1)
        hit = ops.any(ops.equal(top, ops.cast(rows, top.dtype)), axis=1)
        self.hits.assign_add(ops.sum(ops.cast(hit, "float32")))
        self.count.assign_add(ops.cast(ops.shape(similarity)[0], "float32"))

    def result(self):
        return self.hits / ops.maximum(self.count, 1.0)

    def get_config(self):
        return {**super().get_config(), "k": self.k}
