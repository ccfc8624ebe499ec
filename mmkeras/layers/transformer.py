"""Pre-norm transformer blocks on `FusedMultiHeadAttention`.

`TransformerEncoderBlock`: self-attention + feed-forward.
`TransformerDecoderBlock`: causal self-attention, cross-attention to an
encoder sequence, feed-forward; with a key/value cache for incremental
decoding (`call_cached`).
"""

import keras
from keras import ops

from mmkeras.layers.attention import FusedMultiHeadAttention
from mmkeras.ops.attention import fused_attention


def _key_padding(mask):
    """A (B, S) padding mask as (B, 1, 1, S) for fused_attention."""
    if mask is None:
        return None
    return ops.expand_dims(ops.expand_dims(ops.cast(mask, "bool"), 1), 1)


class _Block(keras.layers.Layer):
    """Shared arguments, feed-forward and residual plumbing."""

    def __init__(
        self,
        num_heads,
        intermediate_dim,
        key_dim=None,
        dropout=0.0,
        activation="gelu",
        layer_norm_epsilon=1e-5,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        implementation=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("num_heads", num_heads),
                            ("intermediate_dim", intermediate_dim)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"Argument `{name}` must be a positive integer. "
                    f"Received: {name}={value!r}"
                )
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.key_dim = key_dim
        self.dropout = dropout
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.implementation = implementation
        self.supports_masking = True

    def _attention(self, hidden_dim, name):
        key_dim = self.key_dim or max(hidden_dim // self.num_heads, 1)
        return FusedMultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=key_dim,
            output_shape=hidden_dim,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            implementation=self.implementation,
            dtype=self.dtype_policy,
            name=name,
        )

    def _norm(self, name):
        return keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )

    def _build_feed_forward(self, hidden_dim):
        dense = dict(kernel_initializer=self.kernel_initializer,
                     kernel_regularizer=self.kernel_regularizer,
                     dtype=self.dtype_policy)
        self.ffn_norm = self._norm("ffn_norm")
        self.ffn_in = keras.layers.Dense(self.intermediate_dim,
                                         activation=self.activation,
                                         name="ffn_in", **dense)
        self.ffn_out = keras.layers.Dense(hidden_dim, name="ffn_out", **dense)
        self.dropout_layer = keras.layers.Dropout(self.dropout,
                                                  dtype=self.dtype_policy)
        self.ffn_norm.build((None, None, hidden_dim))
        self.ffn_in.build((None, None, hidden_dim))
        self.ffn_out.build((None, None, self.intermediate_dim))

    def _feed_forward(self, x, training):
        h = self.ffn_out(self.ffn_in(self.ffn_norm(x)))
        return x + self.dropout_layer(h, training=training)

    def _check_rank(self, x, name="inputs"):
        if len(x.shape) != 3:
            raise ValueError(
                f"{type(self).__name__} expects `{name}` of shape (batch, "
                f"length, features). Received: {name}.shape={tuple(x.shape)}"
            )

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def compute_mask(self, inputs, mask=None, *args, **kwargs):
        return mask

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            key_dim=self.key_dim,
            dropout=self.dropout,
            activation=keras.activations.serialize(self.activation),
            layer_norm_epsilon=self.layer_norm_epsilon,
            kernel_initializer=keras.initializers.serialize(
                self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(
                self.kernel_regularizer) if self.kernel_regularizer else None,
            implementation=self.implementation,
        )
        return config


@keras.saving.register_keras_serializable(package="mmkeras")
class TransformerEncoderBlock(_Block):
    """Pre-norm transformer encoder block: x + MHA(LN(x)), then x + FFN(LN(x)).

    Args:
        num_heads: attention heads.
        intermediate_dim: width of the feed-forward layer.
        key_dim: per-head width; defaults to features // num_heads.
        dropout: dropout on the attention and feed-forward outputs.
        activation: feed-forward activation.
        layer_norm_epsilon: epsilon of the layer norms.
        kernel_initializer, kernel_regularizer: for every Dense kernel.
        implementation: passed to `fused_attention`.

    Call arguments:
        inputs: (B, T, D).
        padding_mask: optional (B, T) boolean, True for real tokens; by
            default the Keras mask of `inputs`.
        training: Keras training flag.

    Example:

    >>> import numpy as np
    >>> block = TransformerEncoderBlock(num_heads=4, intermediate_dim=64)
    >>> block(np.zeros((2, 10, 32), "float32")).shape
    (2, 10, 32)
    """

    def build(self, input_shape):
        self._check_rank(keras.KerasTensor(input_shape))
        hidden_dim = input_shape[-1]
        self.attention_norm = self._norm("attention_norm")
        self.attention_norm.build(input_shape)
        self.attention = self._attention(hidden_dim, "self_attention")
        self.attention.build(input_shape, input_shape)
        self._build_feed_forward(hidden_dim)

    def call(self, inputs, padding_mask=None, mask=None, training=None):
        if padding_mask is None:
            padding_mask = mask
        h = self.attention_norm(inputs)
        h = self.attention(h, h, value_mask=padding_mask, training=training)
        x = inputs + self.dropout_layer(h, training=training)
        return self._feed_forward(x, training)


@keras.saving.register_keras_serializable(package="mmkeras")
class TransformerDecoderBlock(_Block):
    """Pre-norm decoder block: causal self-attention, cross-attention to an
    encoder sequence (optional), feed-forward.

    `call` runs a whole (teacher-forced) sequence. `call_cached` runs new
    positions against a key/value cache for incremental decoding: the
    self-attention cache grows one step at a time, the cross-attention keys
    and values are computed once (`cross_cache`).

    Args: as `TransformerEncoderBlock`, plus
        cross_attention: whether the block attends to an encoder sequence.
        causal: causal self-attention (autoregressive decoding). False for
            decoders that emit all positions at once (e.g. image patches).

    Call arguments:
        inputs: (B, T, D) decoder sequence.
        encoder_sequence: (B, S, D) or None.
        padding_mask: optional (B, T) mask of the decoder sequence.
        encoder_padding_mask: optional (B, S) mask of the encoder sequence.
        training: Keras training flag.
    """

    def __init__(self, num_heads, intermediate_dim, cross_attention=True,
                 causal=True, **kwargs):
        super().__init__(num_heads, intermediate_dim, **kwargs)
        self.cross_attention = cross_attention
        self.causal = causal

    def build(self, inputs_shape, encoder_sequence_shape=None):
        input_shape = inputs_shape
        hidden_dim = input_shape[-1]
        self.self_attention_norm = self._norm("self_attention_norm")
        self.self_attention_norm.build(input_shape)
        self.self_attention = self._attention(hidden_dim, "self_attention")
        self.self_attention.build(input_shape, input_shape)
        if self.cross_attention:
            encoder_shape = encoder_sequence_shape or input_shape
            self.cross_attention_norm = self._norm("cross_attention_norm")
            self.cross_attention_norm.build(input_shape)
            self.cross_attention_layer = self._attention(hidden_dim,
                                                         "cross_attention")
            self.cross_attention_layer.build(input_shape, encoder_shape)
        self._build_feed_forward(hidden_dim)

    def _check_encoder(self, encoder_sequence):
        if self.cross_attention and encoder_sequence is None:
            raise ValueError(
                "TransformerDecoderBlock was built with cross_attention=True "
                "and needs `encoder_sequence`. Received: encoder_sequence=None"
            )

    def call(self, inputs, encoder_sequence=None, padding_mask=None,
             encoder_padding_mask=None, mask=None, training=None):
        self._check_rank(inputs)
        self._check_encoder(encoder_sequence)
        if padding_mask is None:
            padding_mask = mask
        h = self.self_attention_norm(inputs)
        h = self.self_attention(h, h, value_mask=padding_mask,
                                use_causal_mask=self.causal, training=training)
        x = inputs + self.dropout_layer(h, training=training)
        if self.cross_attention:
            h = self.cross_attention_norm(x)
            h = self.cross_attention_layer(
                h, encoder_sequence, value_mask=encoder_padding_mask,
                training=training,
            )
            x = x + self.dropout_layer(h, training=training)
        return self._feed_forward(x, training)

    # -- incremental decoding -------------------------------------------------

    def compute_cross_cache(self, encoder_sequence):
        """Keys and values of the cross-attention, (B, 2, S, N, H); once per
        generated sequence."""
        layer = self.cross_attention_layer
        return ops.stack([layer._key_dense(encoder_sequence),
                          layer._value_dense(encoder_sequence)], axis=1)

    def init_self_cache(self, batch_size, max_length):
        """An empty self-attention cache, (B, 2, max_length, N, H)."""
        layer = self.self_attention
        return ops.zeros(
            (batch_size, 2, max_length, layer.num_heads, layer.key_dim),
            dtype=self.compute_dtype,
        )

    def call_cached(self, inputs, self_cache, index, cross_cache=None,
                    encoder_padding_mask=None):
        """Runs positions [index, index + T) of the decoder.

        Args:
            inputs: (B, T, D) new positions (usually T = 1).
            self_cache: (B, 2, L, N, H) keys/values of earlier positions.
            index: int scalar tensor, position of inputs[:, 0].
            cross_cache: from `compute_cross_cache`, if cross-attention.
            encoder_padding_mask: (B, S) mask of the encoder sequence.

        Returns:
            (outputs (B, T, D), updated self_cache).
        """
        inputs = ops.convert_to_tensor(inputs)
        layer = self.self_attention
        h = self.self_attention_norm(inputs)
        q = layer._query_dense(h)
        new_kv = ops.stack([layer._key_dense(h), layer._value_dense(h)], axis=1)
        start = [0, 0, index, 0, 0]
        self_cache = ops.slice_update(self_cache, start,
                                      ops.cast(new_kv, self_cache.dtype))
        # Query t (absolute index + t) attends cached keys s <= index + t.
        length = ops.shape(self_cache)[2]
        steps = ops.shape(inputs)[1]
        positions = ops.arange(steps) + index
        visible = ops.expand_dims(ops.arange(length), 0) <= ops.expand_dims(
            positions, 1)
        h = fused_attention(
            q, self_cache[:, 0], self_cache[:, 1],
            mask=visible[None, None], scale=layer._inverse_sqrt_key_dim,
            implementation=layer.implementation,
        )
        x = inputs + layer._output_dense(h)
        if self.cross_attention:
            layer = self.cross_attention_layer
            h = self.cross_attention_norm(x)
            h = fused_attention(
                layer._query_dense(h), cross_cache[:, 0], cross_cache[:, 1],
                mask=_key_padding(encoder_padding_mask),
                scale=layer._inverse_sqrt_key_dim,
                implementation=layer.implementation,
            )
            x = x + layer._output_dense(h)
        return self._feed_forward(x, training=False), self_cache

    def get_config(self):
        config = super().get_config()
        config.update(cross_attention=self.cross_attention, causal=self.causal)
        return config
