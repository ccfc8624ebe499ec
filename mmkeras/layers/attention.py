"""`FusedMultiHeadAttention`: `keras.layers.MultiHeadAttention` on the fused op."""

import keras
from keras import ops

from mmkeras.ops.attention import fused_attention


@keras.saving.register_keras_serializable(package="mmkeras")
class FusedMultiHeadAttention(keras.layers.MultiHeadAttention):
    """Multi-head attention that runs `mmkeras.ops.fused_attention`.

    A drop-in replacement for `keras.layers.MultiHeadAttention`: the same
    constructor and call arguments, the same weights in the same order (a
    Keras MHA's weights load into it and give the same outputs), the same
    config. Attention runs the fused kernel, which never stores the
    (T, S) score matrix, except where Keras itself needs the scores:
    `return_attention_scores=True`, attention dropout while training, or
    attention over more than one axis (`attention_axes`).

    One difference: a query position with nothing to attend to (all keys
    masked) gets a zero attention output, where Keras averages the values.

    Args:
        implementation: None, "auto", "native" or "reference"; passed to
            `fused_attention` (see `mmkeras.kernels`).
        **kwargs: the arguments of `keras.layers.MultiHeadAttention`.

    Example:

    >>> import numpy as np
    >>> import mmkeras
    >>> layer = mmkeras.layers.FusedMultiHeadAttention(num_heads=4, key_dim=16)
    >>> text = np.random.rand(2, 12, 64).astype("float32")
    >>> image = np.random.rand(2, 49, 64).astype("float32")
    >>> layer(text, image).shape
    (2, 12, 64)
    """

    def __init__(self, num_heads, key_dim, implementation=None, **kwargs):
        super().__init__(num_heads, key_dim, **kwargs)
        self.implementation = implementation
        # True while a call's causal mask is left to the kernel (is_causal),
        # which then skips the masked blocks instead of reading a T x S mask.
        self._kernel_causal = False

    def call(self, query, value, key=None, use_causal_mask=False, **kwargs):
        self._kernel_causal = use_causal_mask and self._sliding_window is None
        try:
            return super().call(query, value, key=key,
                                use_causal_mask=use_causal_mask, **kwargs)
        finally:
            self._kernel_causal = False

    def _compute_attention_mask(self, query, value, use_causal_mask=False,
                                **kwargs):
        if self._kernel_causal:
            use_causal_mask = False
        return super()._compute_attention_mask(
            query, value, use_causal_mask=use_causal_mask, **kwargs
        )

    def _compute_attention(
        self,
        query,
        key,
        value,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
        use_causal_mask=False,
    ):
        needs_scores = (
            return_attention_scores
            or (self._dropout > 0.0 and training)
            or len(query.shape) != 4
            or query.shape[-1] != value.shape[-1]
        )
        is_causal = use_causal_mask or self._kernel_causal
        if needs_scores:
            if self._kernel_causal:  # Keras needs the causal mask spelled out
                causal = self._compute_causal_mask(query, value)
                attention_mask = (
                    causal if attention_mask is None
                    else ops.logical_and(ops.cast(attention_mask, "bool"), causal)
                )
            return super()._compute_attention(
                query,
                key,
                value,
                attention_mask=attention_mask,
                training=training,
                return_attention_scores=return_attention_scores,
            )
        if attention_mask is not None:
            # Keras builds (B, T, S); the fused op wants it per head.
            attention_mask = ops.expand_dims(
                ops.cast(attention_mask, "bool"), axis=1
            )
        out = fused_attention(
            query,
            key,
            value,
            mask=attention_mask,
            is_causal=is_causal,
            scale=self._inverse_sqrt_key_dim,
            implementation=self.implementation,
        )
        return out, None

    def get_config(self):
        config = super().get_config()
        config["implementation"] = self.implementation
        return config
