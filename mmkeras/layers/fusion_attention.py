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

The examples assume `import numpy as np` and `import mmkeras`.
"""

import keras
from keras import ops

from mmkeras.layers.attention import FusedMultiHeadAttention
from mmkeras.layers.fusion_base import FusionLayer
from mmkeras.layers.fusion_base import KeepsFirstModality
from mmkeras.layers.fusion_base import batch_of
from mmkeras.layers.fusion_base import check_positive_int
from mmkeras.layers.fusion_base import check_rate
from mmkeras.layers.fusion_base import expand_to_rank
from mmkeras.layers.fusion_base import keras_mask_of

# The arguments both layers share, in their docstrings (filled in at the
# end of this module).
_ARGS_DOC = """dropout: dropout rate on the residual branches (training only).
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
            `keras.layers.Dense`, for every projection."""


class _SequenceFusion(FusionLayer):
    """Shared arguments, padding-mask handling and pre-norm block of the
    attention layers.

    A subclass builds its layer normalizations and then calls
    `_build_block`, and implements `_fuse`. The Dense-style arguments and
    `modalities` go on to `FusionLayer`.
    """

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
        **kwargs,
    ):
        super().__init__(**kwargs)
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

    def _make_norm(self, name, dim):
        """A built layer normalization of sequences of width `dim`."""
        norm = keras.layers.LayerNormalization(
            epsilon=self.epsilon, dtype=self.dtype_policy, name=name
        )
        norm.build((None, None, dim))
        return norm

    def _build_block(self, dim, kv_dim):
        """The layers of the block on a stream of width `dim`: attention to
        tokens of width `kv_dim`, then the feed-forward sub-block."""
        key_dim = self.key_dim or max(1, dim // self.num_heads)
        self._attention = FusedMultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=key_dim,
            dropout=self.attention_dropout,
            use_bias=self.use_bias,
            implementation=self.implementation,
            dtype=self.dtype_policy,
            name="attention",
            **self.dense_args(),
        )
        self._attention.build((None, None, dim), (None, None, kv_dim))
        ff_dim = self.ff_dim or 4 * dim
        self._norm_ff = self._make_norm("norm_ff", dim)
        self._ff_in = self.make_dense(
            ff_dim, self.activation, self.use_bias, "ff_in"
        )
        self._ff_in.build((None, None, dim))
        self._ff_out = self.make_dense(dim, None, self.use_bias, "ff_out")
        self._ff_out.build((None, None, ff_dim))
        self._dropout_layer = self.make_dropout(self.dropout)

    def _block(self, x, query, kv, valid, training):
        """The pre-norm block on the stream `x`: `query` (`x` normalized)
        attends to the normalized tokens `kv` where `valid` `(B, S)` is
        True, then the feed-forward sub-block."""
        attended = self._attention(
            query,
            kv,
            kv,
            attention_mask=ops.expand_dims(valid, 1),
            training=training,
        )
        x = x + self._dropout_layer(attended, training=training)
        h = self._ff_in(self._norm_ff(x))
        h = self._dropout_layer(h, training=training)
        h = self._ff_out(h)
        return x + self._dropout_layer(h, training=training)

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
        return self._fuse(xs, present, pads, training)

    def _fuse(self, xs, present, pads, training):
        """The output, from the list of modality sequences `xs` (absent ones
        zeroed), the `(B, M)` presence mask `present` and the list of key
        padding masks `pads` (None entries: no padding)."""
        raise NotImplementedError

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
        return config


@keras.saving.register_keras_serializable(package="mmkeras")
class CrossModalAttention(KeepsFirstModality, _SequenceFusion):
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
        {args}
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
        self._norm_query = self._make_norm("norm_query", dq)
        self._norm_context = self._make_norm("norm_context", dc)
        self._build_block(dq, dc)

    def split_tensors(self, inputs):
        xs = super().split_tensors(inputs)
        if xs[0] is None:
            raise ValueError(
                "Argument `inputs` of CrossModalAttention: the query sequence "
                "sets the output's length, so it cannot be None; mark an "
                "absent query with `modality_mask` instead. Received: "
                "query=None"
            )
        return xs

    def _fuse(self, xs, present, pads, training):
        (x, context) = xs
        valid = self.key_valid(pads[1], present[:, 1], context)
        y = self._block(
            x,
            self._norm_query(x),
            self._norm_context(context),
            valid,
            training,
        )
        keep = expand_to_rank(present[:, 0], 3)
        return ops.where(keep, y, ops.zeros_like(y))


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
        {args}
        modalities: the dict keys, in modality order (optional).
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: list or dict of `(B, T_i, d_i)` sequences (`None` = absent).
        modality_mask: optional `(B, M)` presence mask.
        padding_mask: optional list or dict of `(B, T_i)` masks (True = real
            token) or None. Default: the Keras masks of the inputs.
        training: Python bool, training mode (for dropout).

    Example:

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
        self._projections = self.make_projections(
            shapes, d, use_bias=self.use_bias
        )
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
        self._norm_latents = self._make_norm("norm_latents", d)
        self._norm_tokens = self._make_norm("norm_tokens", d)
        self._build_block(d, d)

    def _fuse(self, xs, present, pads, training):
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
        z = self._block(
            z,
            self._norm_latents(z),
            self._norm_tokens(tokens),
            valid,
            training,
        )
        if self.pooling == "mean":
            return ops.mean(z, axis=1)
        return z

    def compute_output_shape(self, input_shape):
        batch = batch_of(self.shapes_of(input_shape))
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


for _cls in (CrossModalAttention, PerceiverFusion):
    _cls.__doc__ = _cls.__doc__.replace("{args}", _ARGS_DOC)
del _cls
