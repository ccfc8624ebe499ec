"""`FusedMultiHeadAttention`: `keras.layers.MultiHeadAttention` on the fused op."""

import keras
from keras import ops

from mmkeras.ops.attention import fused_attention


def attention_mask_rank4(attention_mask):
    """Returns a Keras MHA `attention_mask` as a bool (B|1, N|1, T, S) mask.

    Keras accepts (T, S), (B, T, S) and (B, N, T, S) masks and inserts the
    missing leading axes in front of the query axis; so does this.

    Args:
        attention_mask: a tensor of rank 2, 3 or 4, any dtype (nonzero =
            attend).

    Returns:
        A rank-4 boolean tensor broadcastable to (B, N, T, S).
    """
    rank = len(attention_mask.shape)
    if not 2 <= rank <= 4:
        raise ValueError(
            "Argument `attention_mask` must have shape (T, S), (B, T, S) or "
            "(B, num_heads, T, S). Received: "
            f"attention_mask.shape={tuple(attention_mask.shape)}"
        )
    for _ in range(4 - rank):
        attention_mask = ops.expand_dims(attention_mask, axis=-3)
    return ops.cast(attention_mask, "bool")


class FusedComputeAttention:
    """Mixin: `MultiHeadAttention._compute_attention` on `fused_attention`.

    Put in front of `keras.layers.MultiHeadAttention` or of any subclass that
    keeps Keras's `_compute_attention` (both `FusedMultiHeadAttention` and
    `mmkeras.accelerate` do). Where Keras needs the (T, S) score matrix, or
    the kernels cannot run the call, the Keras method runs unchanged.

    A layer using it may set `_fused_implementation` (passed to
    `fused_attention`) and `_kernel_causal` (True while a call's causal mask
    is left to the kernel rather than folded into `attention_mask`).
    """

    _fused_implementation = None
    _kernel_causal = False

    def _fused_attention_unsupported(self, query, value, training,
                                     return_attention_scores):
        """Why this call needs Keras's path, or None if the kernel runs it."""
        if return_attention_scores:
            return "return_attention_scores=True"
        if self._dropout > 0.0 and training:
            return "attention dropout while training"
        if len(query.shape) != 4:
            return "attention over more than one axis (attention_axes)"
        if query.shape[-1] != value.shape[-1]:
            return "value_dim differs from key_dim"
        return None

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
        is_causal = bool(use_causal_mask or self._kernel_causal)
        if self._fused_attention_unsupported(
            query, value, training, return_attention_scores
        ):
            if is_causal:
                # Keras's score path spells the causal mask out itself only
                # when told; merging here also keeps torch's SDPA from being
                # handed both a mask and is_causal.
                causal = self._compute_causal_mask(query, value)
                attention_mask = (
                    causal if attention_mask is None
                    else ops.logical_and(ops.cast(attention_mask, "bool"),
                                         causal)
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
            attention_mask = attention_mask_rank4(attention_mask)
        out = fused_attention(
            query,
            key,
            value,
            mask=attention_mask,
            is_causal=is_causal,
            scale=self._inverse_sqrt_key_dim,
            implementation=self._fused_implementation,
        )
        return out, None


@keras.saving.register_keras_serializable(package="mmkeras")
class FusedMultiHeadAttention(FusedComputeAttention,
                              keras.layers.MultiHeadAttention):
    """Multi-head attention that runs `mmkeras.ops.fused_attention`.

    A drop-in replacement for `keras.layers.MultiHeadAttention`: the same
    constructor and call arguments (implicit Keras masks of `query`, `value`
    and `key` included), the same weights in the same order (a Keras MHA's
    weights load into it and give the same outputs), the same config, and
    `_compute_attention` stays the override point for subclasses. Keras's
    own test file for `MultiHeadAttention` passes with this class swapped in
    (tests/layers/keras_mha_suite_test.py). Attention runs the fused kernel,
    which never stores the (T, S) score matrix, except where Keras itself
    needs the scores: `return_attention_scores=True`, attention dropout while
    training, attention over more than one axis (`attention_axes`), or a
    `value_dim` different from `key_dim`.

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

    @property
    def _fused_implementation(self):
        return self.implementation

    # The full signature, not **kwargs: Keras fills `query_mask`,
    # `value_mask` and `key_mask` from the inputs' implicit masks only for
    # arguments it sees by name.
    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
    ):
        # Leave the causal mask to the kernel (is_causal), which then skips
        # the masked key blocks instead of reading a T x S mask, unless a
        # subclass replaced `_compute_attention`: it expects the causal mask
        # inside `attention_mask`, as Keras gives it.
        self._kernel_causal = bool(
            use_causal_mask
            and self._sliding_window is None
            and type(self)._compute_attention
            is FusedComputeAttention._compute_attention
        )
        try:
            return super().call(
                query,
                value,
                key=key,
                query_mask=query_mask,
                value_mask=value_mask,
                key_mask=key_mask,
                attention_mask=attention_mask,
                return_attention_scores=return_attention_scores,
                training=training,
                use_causal_mask=use_causal_mask,
            )
        finally:
            self._kernel_causal = False

    def _compute_attention_mask(self, query, value, use_causal_mask=False,
                                **kwargs):
        if self._kernel_causal:
            use_causal_mask = False
        return super()._compute_attention_mask(
            query, value, use_causal_mask=use_causal_mask, **kwargs
        )

    def get_config(self):
        config = super().get_config()
        config["implementation"] = self.implementation
        return config
