"""Fusion layers: combine several modalities into one representation.

Every layer here takes a list or a dict of modality tensors (vectors
`(B, d_i)`, one per modality, `d_i` may differ) and returns the fused
representation. Which layer suits which case:

- `ConcatFusion`: the baseline (early/late fusion by concatenation and a
  projection). Cheap, strong when modalities are few and always present.
- `GatedFusion` (GMU): learns, per sample and per feature, how much each
  modality contributes; robust when modalities differ in reliability.
- `FiLM`: one modality conditions another (features of an image or a
  sequence modulated by a text or metadata vector); output keeps the
  shape of the conditioned features (which may be `(B, ..., C)`).
- `TensorFusion`: all multiplicative interactions up to order M (outer
  product of `[x_i; 1]`); expressive but its size is the product of the
  dims, so only for small dims (see `max_fused_size`).
- `LowRankFusion` (LMF): the same interactions as `TensorFusion` through a
  rank-r factorization; the choice for three or more modalities with real
  dims.
- `BilinearFusion` (MFB): factorized bilinear pooling with power and L2
  normalization; the standard for two rich modalities (e.g. VQA).
- `AttentionFusion`: a softmax weight per modality (interpretable), shared
  projection size; good for many modalities of varying relevance.

For token sequences use `CrossModalAttention` and `PerceiverFusion`
(`mmkeras.layers.fusion_attention`); to train for missing modalities use
`ModalityDropout`.

Missing modalities: every layer takes `modality_mask`, a `(B, M)` boolean
(or 0/1) tensor with one column per modality, and accepts `None` entries
(or missing dict keys) once it is built. An absent modality never
influences the output (its values are replaced, not multiplied, so even NaN
there is harmless); what each layer returns in its place is written in its
docstring, and is always finite. The columns of `modality_mask` follow the
list order, or for dict inputs the `modalities` argument, or else the
sorted dict keys.

The examples assume `import numpy as np` and `import mmkeras`.
"""

import math

import keras
from keras import ops

from mmkeras.layers.fusion_base import FusionLayer
from mmkeras.layers.fusion_base import KeepsFirstModality
from mmkeras.layers.fusion_base import batch_of
from mmkeras.layers.fusion_base import check_positive_int
from mmkeras.layers.fusion_base import check_rate
from mmkeras.layers.fusion_base import expand_to_rank
from mmkeras.ops import fusion as fused_ops

# Docstring parts the layers share, filled in at the end of this module:
# `{dense}` the Dense-style arguments, `{args}` those and the arguments
# every layer ends with, `{call}` the call arguments of the layers that
# fuse `(B, d_i)` vectors.
_DENSE_ARGS_DOC = """kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer, kernel_constraint, bias_constraint: as in
            `keras.layers.Dense`, for every weight of the layer."""
_ARGS_DOC = _DENSE_ARGS_DOC + """
        modalities: the dict keys, in modality order (optional).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`...)."""
_CALL_DOC = """Call arguments:
        inputs: list or dict of `(B, d_i)` tensors (`None` = absent).
        modality_mask: optional `(B, M)` presence mask.
        training: Python bool, training mode (for dropout)."""


# ----------------------------------------------------------------------------
# Element-wise cores: the parts a fused kernel replaces (mmkeras.ops).


def _gated_fusion(projections, gates, present):
    """GMU core: `sum_m present_m * sigmoid(gates_m) * tanh(projections_m)`,
    in one pass by the fused `mmkeras.ops.gated_fusion`.

    Args:
        projections: `(B, M, U)` pre-activations of the modality projections.
        gates: `(B, M, U)` pre-activations of the gates.
        present: `(B, M)` boolean presence mask.

    Returns:
        `(B, U)`.
    """
    # The op takes modality-major (M, B, U) inputs.
    return fused_ops.gated_fusion(
        ops.transpose(projections, (1, 0, 2)), ops.transpose(gates, (1, 0, 2)),
        modality_mask=present,
    )


def _low_rank_fusion(factors, rank_weights, bias=None):
    """LMF core: product over modalities, weighted sum over rank, in one pass
    by the fused `mmkeras.ops.low_rank_fusion`.

    Args:
        factors: `(B, M, R, U)`, modality m's `[x_m; 1] @ W_m` per rank.
        rank_weights: `(R,)`.
        bias: `(U,)` or None.

    Returns:
        `(B, U)`: `sum_r rank_weights[r] * prod_m factors[:, m, r] (+ bias)`.
    """
    # The rank weights fold into the first modality's factors; the op takes
    # modality-major (M, R, B, U) factors.
    weights = ops.cast(ops.reshape(rank_weights, (1, 1, -1, 1)), factors.dtype)
    first = factors[:, :1] * weights
    factors = ops.concatenate([first, factors[:, 1:]], axis=1)
    out = fused_ops.low_rank_fusion(ops.transpose(factors, (1, 2, 0, 3)))
    if bias is not None:
        out = out + bias
    return out


# ----------------------------------------------------------------------------


class _VectorFusion(FusionLayer):
    """Base class of the layers that fuse `(B, d_i)` vectors, by default
    into `(B, units)`."""

    min_modalities = 2
    input_ranks = (2,)

    def compute_output_shape(self, input_shape):
        return (batch_of(self.shapes_of(input_shape)), self.units)


class _DenseFusion(_VectorFusion):
    """Base class of the layers whose output takes the arguments `units`,
    `activation` and `use_bias` (as in `keras.layers.Dense`) and `dropout`,
    in this order (a subclass may add arguments between them)."""

    # Whether `units=None` is accepted.
    units_optional = False

    def __init__(
        self, units, activation=None, use_bias=True, dropout=0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.units = check_positive_int(
            units, "units", allow_none=self.units_optional
        )
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.dropout = check_rate(dropout)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            dropout=self.dropout,
        )
        return config


class _ProjectedFusion(_DenseFusion):
    """Base class of the layers that fuse the vectors into one feature
    vector, then apply dropout and an optional Dense projection to `units`
    (with `units=None`, the features themselves, with `activation`).

    Subclasses implement `_fused_size(shapes)` and `_fuse(xs)`.
    """

    units_optional = True

    def __init__(
        self, units=None, activation=None, use_bias=True, dropout=0.0, **kwargs
    ):
        super().__init__(units, activation, use_bias, dropout, **kwargs)

    def _fused_size(self, shapes):
        """The size of the fused features of inputs of shapes `shapes`."""
        raise NotImplementedError

    def _fuse(self, xs):
        """The `(B, size)` fused features of the list of vectors `xs`."""
        raise NotImplementedError

    def build_modalities(self, shapes):
        size = self._fused_size(shapes)
        self._dropout_layer = self.make_dropout(self.dropout)
        if self.units is not None:
            self._projection = self.make_dense(
                self.units, self.activation, self.use_bias, "projection"
            )
            self._projection.build((None, size))

    def call(self, inputs, modality_mask=None, training=None):
        xs, _ = self.prepare_inputs(inputs, modality_mask)
        z = self._dropout_layer(self._fuse(xs), training=training)
        if self.units is None:
            return self.activation(z)
        return self._projection(z)

    def compute_output_shape(self, input_shape):
        shapes = self.shapes_of(input_shape)
        # Sized from the built shapes when there are some; and even with
        # `units`, so that TensorFusion's size limit is checked.
        size = self._fused_size(self._input_shapes or shapes)
        return (batch_of(shapes), size if self.units is None else self.units)


@keras.saving.register_keras_serializable(package="mmkeras")
class ConcatFusion(_ProjectedFusion):
    """Concatenation of the modality vectors, then a Dense projection.

    Absent modalities are replaced by zeros before the concatenation, so the
    output of a sample with every modality absent is `activation(bias)`.

    Args:
        units: size of the projection; None returns the concatenation
            itself (with `activation` applied), of size `sum(d_i)`.
        activation: activation of the output.
        use_bias: whether the projection has a bias.
        dropout: dropout rate on the concatenation (training only).
        {args}

    {call}

    Example:

    >>> image = np.random.rand(4, 32).astype("float32")
    >>> text = np.random.rand(4, 16).astype("float32")
    >>> tuple(mmkeras.layers.ConcatFusion(8)([image, text]).shape)
    (4, 8)
    """

    min_modalities = 1

    def _fused_size(self, shapes):
        return sum(s[-1] for s in shapes)

    def _fuse(self, xs):
        return ops.concatenate(xs, axis=-1)


@keras.saving.register_keras_serializable(package="mmkeras")
class GatedFusion(_VectorFusion):
    """Gated Multimodal Unit (Arevalo et al. 2017) for any number of modalities.

    Each modality is projected, `h_m = tanh(W_m x_m + b_m)`; a gate per
    modality sees all inputs, `z_m = sigmoid(W_zm [x_1; ...; x_M] + c_m)`;
    the output is `sum_m z_m * h_m` (the multi-modality form of the GMU;
    for two modalities the paper also ties `z_2 = 1 - z_1`, this layer
    keeps one gate per modality).

    An absent modality drops out of the sum and its input reads as zeros in
    the gates; with every modality absent the output is zeros.

    Args:
        units: size of the fused representation.
        use_bias: whether projections and gates have biases.
        dropout: dropout rate on the output (training only).
        {args}

    {call}

    Example:

    >>> xs = [np.random.rand(4, d).astype("float32") for d in (32, 16, 8)]
    >>> tuple(mmkeras.layers.GatedFusion(12)(xs).shape)
    (4, 12)
    """

    def __init__(self, units, use_bias=True, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int(units, "units")
        self.use_bias = use_bias
        self.dropout = check_rate(dropout)

    def build_modalities(self, shapes):
        self._projections = self.make_projections(
            shapes, self.units, use_bias=self.use_bias
        )
        self._gate = self.make_dense(
            len(shapes) * self.units, use_bias=self.use_bias, name="gate"
        )
        self._gate.build((None, sum(s[-1] for s in shapes)))
        self._dropout_layer = self.make_dropout(self.dropout)

    def call(self, inputs, modality_mask=None, training=None):
        xs, present = self.prepare_inputs(inputs, modality_mask)
        projections = ops.stack(
            [p(x) for p, x in zip(self._projections, xs)], axis=1
        )
        gates = self._gate(ops.concatenate(xs, axis=-1))
        gates = ops.reshape(gates, (-1, len(xs), self.units))
        out = _gated_fusion(projections, gates, present)
        return self._dropout_layer(out, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units, use_bias=self.use_bias, dropout=self.dropout
        )
        return config


@keras.saving.register_keras_serializable(package="mmkeras")
class FiLM(KeepsFirstModality, _VectorFusion):
    """Feature-wise linear modulation (Perez et al. 2018).

    `[features, condition]`: a Dense layer maps the condition vector
    `(B, d_c)` to `(delta_gamma, beta)`, each of the size `C` of the last
    axis of `features`, and the output is
    `activation((1 + delta_gamma) * features + beta)`, broadcast over every
    middle axis of `features` (`(B, C)`, `(B, T, C)`, `(B, H, W, C)`...).
    The `1 +` keeps the layer near identity at initialization.

    Absent condition: the features pass unmodulated
    (`activation(features)`). Absent features: the output is zeros. The
    Keras mask of `features` (if any) is kept on the output.

    Args:
        activation: activation of the output.
        use_bias: whether the conditioning Dense layer has a bias.
        {dense}
        modalities: the two dict keys, `[features_key, condition_key]`;
            default `["features", "condition"]`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `[features, condition]` list, or a dict with the two keys.
        modality_mask: optional `(B, 2)` presence mask.

    Example:

    >>> image = np.random.rand(2, 7, 7, 16).astype("float32")
    >>> text = np.random.rand(2, 32).astype("float32")
    >>> tuple(mmkeras.layers.FiLM()([image, text]).shape)
    (2, 7, 7, 16)
    """

    min_modalities = 2
    max_modalities = 2
    input_ranks = ((2, 3, 4, 5), (2,))
    default_names = ("features", "condition")

    def __init__(self, activation=None, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias

    def build_modalities(self, shapes):
        channels = shapes[0][-1]
        self._film = self.make_dense(
            2 * channels, use_bias=self.use_bias, name="film"
        )
        self._film.build((None, shapes[1][-1]))

    def call(self, inputs, modality_mask=None):
        (x, cond), present = self.prepare_inputs(inputs, modality_mask)
        film = self._film(cond)
        film = ops.where(
            ops.expand_dims(present[:, 1], -1), film, ops.zeros_like(film)
        )
        delta_gamma, beta = ops.split(film, 2, axis=-1)
        rank = len(x.shape)
        for _ in range(rank - 2):
            delta_gamma = ops.expand_dims(delta_gamma, 1)
            beta = ops.expand_dims(beta, 1)
        out = self.activation(x * (1.0 + delta_gamma) + beta)
        keep = expand_to_rank(present[:, 0], rank)
        return ops.where(keep, out, ops.zeros_like(out))

    def get_config(self):
        config = super().get_config()
        config.update(
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
        )
        return config


@keras.saving.register_keras_serializable(package="mmkeras")
class TensorFusion(_ProjectedFusion):
    """Tensor Fusion (Zadeh et al. 2017): outer product of `[x_i; 1]` vectors.

    The flattened product, of size `prod_i (d_i + 1)`, holds every
    interaction between the modalities (the appended 1 keeps the lower
    orders, down to each modality alone); an optional Dense projection
    follows. An absent modality reads as `[0; 1]`: only the terms of the
    present modalities remain (with every modality absent, the product is
    a single 1 and the rest zeros).

    Args:
        units: size of the projection; None returns the flattened product.
        activation: activation of the output.
        use_bias: whether the projection has a bias.
        dropout: dropout rate on the product (training only).
        max_fused_size: the largest product size accepted (default
            262144); building with a larger one raises ValueError. Use
            `LowRankFusion` for larger inputs.
        {args}

    {call}

    Example:

    >>> xs = [np.random.rand(4, d).astype("float32") for d in (3, 4)]
    >>> tuple(mmkeras.layers.TensorFusion()(xs).shape)
    (4, 20)
    """

    def __init__(
        self,
        units=None,
        activation=None,
        use_bias=True,
        dropout=0.0,
        max_fused_size=262144,
        **kwargs,
    ):
        super().__init__(units, activation, use_bias, dropout, **kwargs)
        self.max_fused_size = check_positive_int(
            max_fused_size, "max_fused_size"
        )

    def _fused_size(self, shapes):
        size = math.prod(s[-1] + 1 for s in shapes)
        if size > self.max_fused_size:
            dims = [s[-1] for s in shapes]
            raise ValueError(
                "Argument `max_fused_size` of TensorFusion: the outer product "
                f"of the inputs would have prod(d_i + 1) = {size} features, "
                f"more than max_fused_size={self.max_fused_size}. Reduce the "
                "input dims, raise `max_fused_size`, or use LowRankFusion. "
                f"Received: input dims {dims}"
            )
        return size

    def _fuse(self, xs):
        z = None
        for x in xs:
            ones = ops.ones_like(x[:, :1])
            x1 = ops.concatenate([x, ones], axis=-1)
            if z is None:
                z = x1
                continue
            size = z.shape[-1] * x1.shape[-1]
            z = ops.expand_dims(z, 2) * ops.expand_dims(x1, 1)
            z = ops.reshape(z, (-1, size))
        return z

    def get_config(self):
        config = super().get_config()
        config.update(max_fused_size=self.max_fused_size)
        return config


@keras.saving.register_keras_serializable(package="mmkeras")
class LowRankFusion(_DenseFusion):
    """Low-rank Multimodal Fusion (Liu et al. 2018).

    Each modality has factors `W_m` of shape `(rank, d_m + 1, units)`; with
    `f_m = [x_m; 1] @ W_m` (one `(B, units)` per rank), the output is
    `activation(sum_r w_r * prod_m f_m[r] + bias)`: `TensorFusion` followed
    by a projection, with the weight tensor factorized to rank `rank`.

    As in `TensorFusion`, an absent modality reads as `[0; 1]` (its factor
    becomes the learned row `W_m[:, -1]`), so the output stays finite and
    independent of the absent values.

    Args:
        units: size of the fused representation.
        rank: rank `r` of the factorization.
        activation: activation of the output.
        use_bias: whether to add a bias.
        dropout: dropout rate on the output (training only).
        {args}

    {call}

    Example:

    >>> xs = [np.random.rand(4, d).astype("float32") for d in (32, 16, 8)]
    >>> tuple(mmkeras.layers.LowRankFusion(10, rank=4)(xs).shape)
    (4, 10)
    """

    def __init__(
        self,
        units,
        rank=4,
        activation=None,
        use_bias=True,
        dropout=0.0,
        **kwargs,
    ):
        super().__init__(units, activation, use_bias, dropout, **kwargs)
        self.rank = check_positive_int(rank, "rank")

    def build_modalities(self, shapes):
        self._factors = [
            self.add_dense_weight(
                (self.rank, s[-1] + 1, self.units), f"factor_{i}"
            )
            for i, s in enumerate(shapes)
        ]
        self.rank_weights = self.add_dense_weight((self.rank,), "rank_weights")
        self.bias = None
        if self.use_bias:
            self.bias = self.add_dense_weight((self.units,), "bias", "bias")
        self._dropout_layer = self.make_dropout(self.dropout)

    def call(self, inputs, modality_mask=None, training=None):
        xs, _ = self.prepare_inputs(inputs, modality_mask)
        factors = []
        for x, w in zip(xs, self._factors):
            x1 = ops.concatenate([x, ops.ones_like(x[:, :1])], axis=-1)
            factors.append(ops.einsum("bd,rdu->bru", x1, w))
        out = _low_rank_fusion(
            ops.stack(factors, axis=1), self.rank_weights, self.bias
        )
        out = self.activation(out)
        return self._dropout_layer(out, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(rank=self.rank)
        return config


@keras.saving.register_keras_serializable(package="mmkeras")
class BilinearFusion(_VectorFusion):
    """Multi-modal factorized bilinear pooling (MFB, Yu et al. 2017).

    Each modality is projected to `units * factor` features; the projections
    are multiplied element-wise (for two modalities this is the factorized
    bilinear form; more modalities extend the product), sum-pooled over
    windows of `factor`, then power-normalized,
    `sign(z) * (sqrt(|z| + epsilon) - sqrt(epsilon))` (a square root with a
    bounded gradient at 0), and L2-normalized.

    An absent modality drops out of the product (it counts as ones): the
    output is then the normalized pooling of the present projections; with
    every modality absent the output is zeros.

    Args:
        units: output size `o`.
        factor: factor `k` (the latent size per output feature).
        use_bias: whether the projections have biases.
        dropout: dropout rate on the product before pooling (training only).
        epsilon: the power normalization's smoothing constant.
        {args}

    {call}

    Example:

    >>> image = np.random.rand(4, 32).astype("float32")
    >>> question = np.random.rand(4, 16).astype("float32")
    >>> fuse = mmkeras.layers.BilinearFusion(8, factor=3)
    >>> tuple(fuse([image, question]).shape)
    (4, 8)
    """

    def __init__(
        self,
        units,
        factor=5,
        use_bias=True,
        dropout=0.0,
        epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_positive_int(units, "units")
        self.factor = check_positive_int(factor, "factor")
        self.use_bias = use_bias
        self.dropout = check_rate(dropout)
        if not isinstance(epsilon, (int, float)) or epsilon <= 0:
            raise ValueError(
                "Argument `epsilon` must be a positive float. "
                f"Received: epsilon={epsilon!r}"
            )
        self.epsilon = float(epsilon)

    def build_modalities(self, shapes):
        self._projections = self.make_projections(
            shapes, self.units * self.factor, use_bias=self.use_bias
        )
        self._dropout_layer = self.make_dropout(self.dropout)

    def call(self, inputs, modality_mask=None, training=None):
        xs, present = self.prepare_inputs(inputs, modality_mask)
        z = None
        for i, (p, x) in enumerate(zip(self._projections, xs)):
            h = p(x)
            h = ops.where(
                ops.expand_dims(present[:, i], -1), h, ops.ones_like(h)
            )
            z = h if z is None else z * h
        any_present = ops.expand_dims(ops.any(present, axis=1), -1)
        z = ops.where(any_present, z, ops.zeros_like(z))
        z = self._dropout_layer(z, training=training)
        z = ops.sum(ops.reshape(z, (-1, self.units, self.factor)), axis=-1)
        eps = self.epsilon
        z = ops.sign(z) * (ops.sqrt(ops.abs(z) + eps) - math.sqrt(eps))
        # L2 normalization; an all-zero row (nothing present) stays zero,
        # with finite gradients.
        sq = ops.sum(z * z, axis=-1, keepdims=True)
        sq = ops.where(ops.greater(sq, 0), sq, ops.ones_like(sq))
        return z / ops.sqrt(sq)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            factor=self.factor,
            use_bias=self.use_bias,
            dropout=self.dropout,
            epsilon=self.epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package="mmkeras")
class AttentionFusion(_DenseFusion):
    """Learned softmax weights over modalities.

    Each modality is projected to `units`, `h_m = activation(W_m x_m + b_m)`;
    a shared scorer gives `s_m = v . tanh(A h_m + c)`; the output is
    `sum_m softmax(s)_m * h_m`, the softmax taken over the present
    modalities only. With every modality absent the output is zeros.

    Args:
        units: size of the projections and of the output.
        activation: activation of the projections.
        use_bias: whether the projections have biases.
        dropout: dropout rate on the output (training only).
        {args}

    {call}
        return_attention_weights: also return the `(B, M)` weights.

    Example:

    >>> xs = {"image": np.random.rand(4, 32).astype("float32"),
    ...       "audio": np.random.rand(4, 8).astype("float32")}
    >>> tuple(mmkeras.layers.AttentionFusion(16)(xs).shape)
    (4, 16)
    """

    def build_modalities(self, shapes):
        self._projections = self.make_projections(
            shapes, self.units, self.activation, self.use_bias
        )
        self._score_hidden = self.make_dense(
            self.units, "tanh", name="score_hidden"
        )
        self._score_hidden.build((None, self.units))
        self._score = self.make_dense(1, use_bias=False, name="score")
        self._score.build((None, self.units))
        self._dropout_layer = self.make_dropout(self.dropout)

    def call(
        self,
        inputs,
        modality_mask=None,
        training=None,
        return_attention_weights=False,
    ):
        xs, present = self.prepare_inputs(inputs, modality_mask)
        h = ops.stack([p(x) for p, x in zip(self._projections, xs)], axis=1)
        scores = self._score(self._score_hidden(h))[..., 0]  # (B, M)
        weights = _masked_softmax(scores, present)
        out = ops.sum(ops.expand_dims(weights, -1) * h, axis=1)
        out = self._dropout_layer(out, training=training)
        if return_attention_weights:
            return out, weights
        return out

    def compute_output_spec(
        self,
        inputs,
        modality_mask=None,
        training=None,
        return_attention_weights=False,
    ):
        out = super().compute_output_spec(inputs, modality_mask=modality_mask)
        if not return_attention_weights:
            return out
        n = self.num_modalities
        return out, keras.KerasTensor((out.shape[0], n), dtype=out.dtype)


def _masked_softmax(scores, present):
    """Softmax over the last axis restricted to `present`; rows with nothing
    present give zeros. No inf/NaN in values or gradients."""
    floor = ops.min(scores, axis=-1, keepdims=True)
    top = ops.max(ops.where(present, scores, floor), axis=-1, keepdims=True)
    safe = ops.where(present, scores, top)
    e = ops.exp(safe - ops.stop_gradient(top))
    e = e * ops.cast(present, e.dtype)
    total = ops.sum(e, axis=-1, keepdims=True)
    total = total + ops.cast(ops.equal(total, 0), total.dtype)
    return e / total


for _cls in (
    ConcatFusion,
    GatedFusion,
    FiLM,
    TensorFusion,
    LowRankFusion,
    BilinearFusion,
    AttentionFusion,
):
    for _key, _text in (
        ("{dense}", _DENSE_ARGS_DOC),
        ("{args}", _ARGS_DOC),
        ("{call}", _CALL_DOC),
    ):
        _cls.__doc__ = _cls.__doc__.replace(_key, _text)
del _cls, _key, _text
