"""Attention-based fusion of token sequences: `CrossModalAttention` and
`PerceiverFusion`, both on `FusedMultiHeadAttention` (`fused_attention`).

Inputs are sequences `(B, T_i, d_i)`, one per modality. Which layer suits
which case:

- `CrossModalAttention` (MulT-style): one modality's sequence attends to
  another's and keeps its own length; stack several (A->B, B->A) for
  pairwise cross-modal reinforcement. Cost grows with `T_query * T_context`.
- `PerceiverFusion`: a small learned latent array attends to the tokens of
  all modalities at once; cost grows linearly with the total token count,
  output size is fixed (`num_latents`), so it suits many or long modalities.

Padding: each modality may have a key-padding mask `(B, T_i)` (True =
real token), given as `padding_mask=[...]` (or a dict), or taken from the
Keras masks of the inputs (`Embedding(mask_zero=True)`, `Masking`).
Missing modalities: `modality_mask` `(B, M)` and/or `None` entries, as in
`mmkeras.layers.fusion`; an absent modality's tokens are masked out of the
attention, so they never influence the output.
"""

import keras
from keras import ops

from mmkeras.layers.attention import FusedMultiHeadAttention
from mmkeras.layers.fusion_base import ModalityLayer
from mmkeras.layers.fusion_base import check_positive_int
from mmkeras.layers.fusion_base import check_rate
from mmkeras.layers.fusion_base import dense_config
from mmkeras.layers.fusion_base import expand_to_rank
from mmkeras.layers.fusion_base import keras_mask_of
from mmkeras.layers.fusion_base import make_dense
from mmkeras.layers.fusion_base import set_dense_args


class _SequenceFusion(ModalityLayer):
    """Shared arguments and padding-mask handling of the attention layers."""

    input_ranks = (3,)

    def __init__(
        self,
        num_heads,
        key_dim=None,
        ff_dim=None,
        dropout=0.0,
        attention_dropout=0.0,
        activation="gelu",
        use_bias=True,
        epsilon=1e-5,
        implementation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        modalities=None,
        **kwargs,
    ):
        super().__init__(modalities=modalities, **kwargs)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.key_dim = check_positive_int(key_dim, "key_dim", allow_none=True)
        self.ff_dim = check_positive_int(ff_dim, "ff_dim", allow_none=True)
        self.dropout = check_rate(dropout)
        self.attention_dropout = check_rate(
            attention_dropout, "attention_dropout"
        )
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.epsilon = epsilon
        self.implementation = implementation
        set_dense_args(
            self,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            kernel_constraint,
            bias_constraint,
        )

    def _make_attention(self, key_dim):
        return FusedMultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=key_dim,
            dropout=self.attention_dropout,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
            implementation=self.implementation,
            dtype=self.dtype_policy,
            name="attention",
        )

    def _make_block(self, dim, ff_dim):
        """Layers of the pre-norm feed-forward sub-block on width `dim`."""
        self._norm_ff = keras.layers.LayerNormalization(
            epsilon=self.epsilon, dtype=self.dtype_policy, name="norm_ff"
        )
        self._norm_ff.build((None, None, dim))
        self._ff_in = make_dense(self, ff_dim, self.activation, self.use_bias,
                                 "ff_in")
        self._ff_in.build((None, None, dim))
        self._ff_out = make_dense(self, dim, None, self.use_bias, "ff_out")
        self._ff_out.build((None, None, ff_dim))
        self._dropout_layer = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy
        )

    def _feed_forward(self, x, training):
        h = self._ff_in(self._norm_ff(x))
        h = self._dropout_layer(h, training=training)
        h = self._ff_out(h)
        return x + self._dropout_layer(h, training=training)

    def padding_masks(self, padding_mask, mask, raw):
        """One `(B, T_i)` boolean key-padding mask (or None) per modality,
        from `padding_mask`, else the Keras `mask`, else the Keras masks
        attached to the raw inputs `raw` (a list in modality order)."""
        n = len(raw)
        source = padding_mask if padding_mask is not None else mask
        arg = "padding_mask" if padding_mask is not None else "mask"
        if source is None:
            masks = [keras_mask_of(x) for x in raw]
        elif isinstance(source, dict):
            names = self._names or ()
            unknown = [k for k in source if k not in names]
            if unknown:
                raise ValueError(
                    f"Argument `{arg}` of {type(self).__name__} has unknown "
                    f"modality keys {unknown!r}; expected keys among "
                    f"{list(names)!r}. Received: keys={list(source)!r}"
                )
            masks = [source.get(k) for k in names]
        elif isinstance(source, (list, tuple)):
            if len(source) != n:
                raise ValueError(
                    f"Argument `{arg}` of {type(self).__name__} must hold one "
                    f"mask (or None) per modality, {n} in all. Received: "
                    f"{len(source)} entries"
                )
            masks = list(source)
        else:
            raise ValueError(
                f"Argument `{arg}` of {type(self).__name__} must be a list or "
                "dict of (batch, length) masks, one per modality. Received: "
                f"{type(source).__name__}"
            )
        out = []
        for i, (m, x) in enumerate(zip(masks, raw)):
            if m is None or x is None:
                out.append(None)
                continue
            shape = tuple(m.shape)
            want = tuple(x.shape[:2])
            if len(shape) != 2 or any(
                a is not None and b is not None and a != b
                for a, b in zip(shape, want)
            ):
                raise ValueError(
                    f"Argument `{arg}` of {type(self).__name__}: the mask of "
                    f"modality {self._label(i)} must have shape (batch, "
                    f"length) = {want}. Received: shape {shape}"
                )
            out.append(ops.cast(m, "bool"))
        return out

    @staticmethod
    def key_valid(padding, present_col, x):
        """`(B, T)` validity of modality `x`'s tokens: padding & presence."""
        valid = ops.expand_dims(present_col, -1)
        if padding is None:
            length = ops.shape(x)[1]
            return ops.broadcast_to(valid, (ops.shape(x)[0], length))
        return ops.logical_and(padding, valid)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            ff_dim=self.ff_dim,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            epsilon=self.epsilon,
            implementation=self.implementation,
        )
        config.update(dense_config(self))
        return config


@keras.saving.register_keras_serializable(package="mmkeras")
class CrossModalAttention(_SequenceFusion):
    """MulT-style cross-modal block (Tsai et al. 2019), pre-norm.

    `[query, context]`: the query sequence `x` (B, T, d_q) attends to the
    context sequence `c` (B, S, d_c):

        x = x + dropout(MHA(LN(x), LN(c), LN(c), key padding mask of c))
        y = x + dropout(FF(LN(x)))

    with `FF = Dense(ff_dim, activation) -> Dropout -> Dense(d_q)`. The
    output has the query's shape `(B, T, d_q)` and keeps the query's Keras
    mask. Attention runs `fused_attention` (no T x S score matrix), except
    with `attention_dropout` while training. (MulT's positional embeddings
    and temporal convolutions are left to the model.)

    Absent context (masked, `None`, or every context token padded): the
    attention term is zero, so `y = x + FF(LN(x))`. Absent query (masked
    in `modality_mask`; it cannot be `None`, since it sets the output
    length): the output is zeros.

    Args:
        num_heads: number of attention heads.
        key_dim: size of each head (default `d_q // num_heads`, at least 1).
        ff_dim: hidden size of the feed-forward (default `4 * d_q`).
        dropout: dropout rate on the residual branches (training only).
        attention_dropout: dropout on the attention probabilities (training
            only; falls back to Keras' attention while it is active, where a
            query with no valid key averages the values instead of getting
            zeros).
        activation: activation of the feed-forward hidden layer.
        use_bias: whether the projections have biases.
        epsilon: the layer normalizations' epsilon.
        implementation: passed to `fused_attention` (None, "auto",
            "native", "reference").
        kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer, kernel_constraint, bias_constraint: as in
            `keras.layers.Dense`, for every projection.
        modalities: the two dict keys `[query_key, context_key]`; default
            `["query", "context"]`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `[query, context]`, or a dict with the two keys.
        modality_mask: optional `(B, 2)` presence mask.
        padding_mask: optional `[query_mask, context_mask]` (or dict), each
            `(B, T_i)` bool/0-1 (True = real token) or None. Only the
            context's is used for attention. Default: the Keras masks.
        training: Python bool, training mode (for dropout).

    Example:

    >>> import numpy as np
    >>> import mmkeras
    >>> text = np.random.rand(2, 5, 16).astype("float32")
    >>> audio = np.random.rand(2, 9, 8).astype("float32")
    >>> block = mmkeras.layers.CrossModalAttention(num_heads=2, key_dim=8)
    >>> tuple(block([text, audio]).shape)
    (2, 5, 16)
    """

    min_modalities = 2
    max_modalities = 2
    default_names = ("query", "context")

    def build_modalities(self, shapes):
        (dq, dc) = shapes[0][-1], shapes[1][-1]
        key_dim = self.key_dim or max(1, dq // self.num_heads)
        ff_dim = self.ff_dim or 4 * dq
        self._norm_query = keras.layers.LayerNormalization(
            epsilon=self.epsilon, dtype=self.dtype_policy, name="norm_query"
        )
        self._norm_query.build((None, None, dq))
        self._norm_context = keras.layers.LayerNormalization(
            epsilon=self.epsilon, dtype=self.dtype_policy, name="norm_context"
        )
        self._norm_context.build((None, None, dc))
        self._attention = self._make_attention(key_dim)
        self._attention.build((None, None, dq), (None, None, dc))
        self._make_block(dq, ff_dim)

    def call(
        self,
        inputs,
        modality_mask=None,
        padding_mask=None,
        training=None,
        mask=None,
    ):
        raw = self.split_tensors(inputs)
        if raw[0] is None:
            raise ValueError(
                "Argument `inputs` of CrossModalAttention: the query sequence "
                "sets the output's length, so it cannot be None; mark an "
                "absent query with `modality_mask` instead. Received: "
                "query=None"
            )
        pads = self.padding_masks(padding_mask, mask, raw)
        (x, context), present = self.prepare_inputs(inputs, modality_mask)
        valid = self.key_valid(pads[1], present[:, 1], context)
        context = self._norm_context(context)
        attended = self._attention(
            self._norm_query(x),
            context,
            context,
            attention_mask=ops.expand_dims(valid, 1),
            training=training,
        )
        x = x + self._dropout_layer(attended, training=training)
        y = self._feed_forward(x, training)
        keep = expand_to_rank(present[:, 0], 3)
        return ops.where(keep, y, ops.zeros_like(y))

    def compute_mask(self, inputs, previous_mask):
        if isinstance(previous_mask, dict):
            key = self._names[0] if self._names else "query"
            return previous_mask.get(key)
        if isinstance(previous_mask, (list, tuple)) and previous_mask:
            return previous_mask[0]
        return None

    def compute_output_shape(self, input_shape):
        shapes = self.shapes_of(input_shape)
        if shapes[0] is not None:
            return tuple(shapes[0])
        return tuple(self._input_shapes[0])


@keras.saving.register_keras_serializable(package="mmkeras")
class PerceiverFusion(_SequenceFusion):
    """A learned latent array cross-attends to the tokens of all modalities.

    Each modality's tokens are projected to `units` and tagged with a
    learned modality embedding; all tokens are concatenated into one
    key/value sequence whose padding mask joins the modalities' padding
    masks and presence. Then, pre-norm, with learned latents `z`
    `(num_latents, units)`:

        z = z + dropout(MHA(LN(z), LN(tokens), LN(tokens), key mask))
        z = z + dropout(FF(LN(z)))

    Output: `(B, num_latents, units)`, or `(B, units)` with
    `pooling="mean"`. Cost is linear in the total number of tokens.

    Absent modalities contribute no keys. A sample with no valid token at
    all gets the attention term zero: its output is the (input
    independent) `z + FF(LN(z))` of the learned latents.

    Args:
        num_latents: number of latent vectors.
        units: width of the latents and of the token projections.
        num_heads: number of attention heads.
        key_dim: size of each head (default `units // num_heads`).
        ff_dim: hidden size of the feed-forward (default `4 * units`).
        pooling: None (return the latents) or "mean".
        embeddings_initializer: initializer of the latents and the modality
            embeddings (default truncated normal, stddev 0.02).
        dropout: dropout rate on the residual branches (training only).
        attention_dropout: dropout on the attention probabilities (training
            only; falls back to Keras' attention while it is active).
        activation: activation of the feed-forward hidden layer.
        use_bias: whether the projections have biases.
        epsilon: the layer normalizations' epsilon.
        implementation: passed to `fused_attention`.
        kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer, kernel_constraint, bias_constraint: as in
            `keras.layers.Dense`, for every projection.
        modalities: the dict keys, in modality order (optional).
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: list or dict of `(B, T_i, d_i)` sequences (`None` = absent).
        modality_mask: optional `(B, M)` presence mask.
        padding_mask: optional list or dict of `(B, T_i)` masks (True = real
            token) or None. Default: the Keras masks of the inputs.
        training: Python bool, training mode (for dropout).

    Example:

    >>> import numpy as np
    >>> import mmkeras
    >>> image = np.random.rand(2, 49, 32).astype("float32")
    >>> text = np.random.rand(2, 12, 16).astype("float32")
    >>> fuse = mmkeras.layers.PerceiverFusion(num_latents=4, units=16,
    ...                                       num_heads=2)
    >>> tuple(fuse([image, text]).shape)
    (2, 4, 16)
    """

    min_modalities = 1

    def __init__(
        self,
        num_latents,
        units,
        num_heads,
        pooling=None,
        embeddings_initializer=None,
        **kwargs,
    ):
        super().__init__(num_heads=num_heads, **kwargs)
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer
            or keras.initializers.TruncatedNormal(stddev=0.02)
        )
        self.num_latents = check_positive_int(num_latents, "num_latents")
        self.units = check_positive_int(units, "units")
        if pooling not in (None, "mean"):
            raise ValueError(
                "Argument `pooling` must be None or 'mean'. "
                f"Received: pooling={pooling!r}"
            )
        self.pooling = pooling

    def build_modalities(self, shapes):
        d = self.units
        key_dim = self.key_dim or max(1, d // self.num_heads)
        self._projections = []
        for i, s in enumerate(shapes):
            dense = make_dense(self, d, None, self.use_bias, f"projection_{i}")
            dense.build((None, None, s[-1]))
            self._projections.append(dense)
        self.modality_embeddings = self.add_weight(
            shape=(len(shapes), d),
            initializer=self.embeddings_initializer,
            name="modality_embeddings",
        )
        self.latents = self.add_weight(
            shape=(self.num_latents, d),
            initializer=self.embeddings_initializer,
            name="latents",
        )
        self._norm_latents = keras.layers.LayerNormalization(
            epsilon=self.epsilon, dtype=self.dtype_policy, name="norm_latents"
        )
        self._norm_latents.build((None, None, d))
        self._norm_tokens = keras.layers.LayerNormalization(
            epsilon=self.epsilon, dtype=self.dtype_policy, name="norm_tokens"
        )
        self._norm_tokens.build((None, None, d))
        self._attention = self._make_attention(key_dim)
        self._attention.build((None, None, d), (None, None, d))
        self._make_block(d, self.ff_dim or 4 * d)

    def call(
        self,
        inputs,
        modality_mask=None,
        padding_mask=None,
        training=None,
        mask=None,
    ):
        raw = self.split_tensors(inputs)
        pads = self.padding_masks(padding_mask, mask, raw)
        xs, present = self.prepare_inputs(inputs, modality_mask)
        tokens, valid = [], []
        for i, (proj, x) in enumerate(zip(self._projections, xs)):
            tokens.append(proj(x) + self.modality_embeddings[i])
            valid.append(self.key_valid(pads[i], present[:, i], x))
        tokens = ops.concatenate(tokens, axis=1)
        valid = ops.concatenate(valid, axis=1)
        batch = ops.shape(tokens)[0]
        latents = ops.cast(self.latents, tokens.dtype)
        z = ops.broadcast_to(
            ops.expand_dims(latents, 0), (batch, self.num_latents, self.units)
        )
        kv = self._norm_tokens(tokens)
        attended = self._attention(
            self._norm_latents(z),
            kv,
            kv,
            attention_mask=ops.expand_dims(valid, 1),
            training=training,
        )
        z = z + self._dropout_layer(attended, training=training)
        z = self._feed_forward(z, training)
        if self.pooling == "mean":
            return ops.mean(z, axis=1)
        return z

    def compute_output_shape(self, input_shape):
        batch = next(s[0] for s in self.shapes_of(input_shape) if s)
        if self.pooling == "mean":
            return (batch, self.units)
        return (batch, self.num_latents, self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_latents=self.num_latents,
            units=self.units,
            pooling=self.pooling,
            embeddings_initializer=keras.saving.serialize_keras_object(
                self.embeddings_initializer
            ),
        )
        return config
