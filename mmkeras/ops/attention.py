"""`fused_attention`: scaled dot-product attention without the T x S matrix."""

import math

import keras
from keras import ops

from mmkeras.kernel_selection import resolve_implementation
from mmkeras.ops._checks import check_floating
from mmkeras.ops._checks import check_rank
from mmkeras.ops._checks import dtype_of
from mmkeras.ops._checks import same
from mmkeras.ops._checks import shape_str
from mmkeras.ops._dispatch import call_op
from mmkeras.ops._dispatch import run_fused
from mmkeras.ops.attention_reference import attention_reference


def _check_inputs(query, key, value, mask):
    """Raises ValueError for inputs outside the contract. Works on static
    shapes, so it serves eager tensors and symbolic KerasTensors alike."""
    named = (("query", query), ("key", key), ("value", value))
    for name, x in named:
        check_rank(name, x, 4, "(batch, length, heads, head_dim)")
    check_floating(named)

    (B, T, N, H), (Bk, S, K, Hk), (Bv, Sv, Kv, _) = (
        query.shape, key.shape, value.shape
    )
    if not (same(B, Bk) and same(B, Bv)):
        raise ValueError(
            "Arguments `query`, `key` and `value` must have the same batch "
            f"size. Received: query.shape={shape_str(query)}, "
            f"key.shape={shape_str(key)}, value.shape={shape_str(value)}"
        )
    if not (same(S, Sv) and same(K, Kv)):
        raise ValueError(
            "Arguments `key` and `value` must have the same length and number "
            f"of heads. Received: key.shape={shape_str(key)}, "
            f"value.shape={shape_str(value)}"
        )
    if not same(H, Hk):
        raise ValueError(
            "Arguments `query` and `key` must have the same head dim. "
            f"Received: query.shape={shape_str(query)}, "
            f"key.shape={shape_str(key)}"
        )
    if value.shape[3] is not None and H is not None and value.shape[3] != H:
        raise ValueError(
            "Argument `value` must have the same head dim as `query` (the "
            f"native kernels share one head dim). Received: "
            f"query.shape={shape_str(query)}, value.shape={shape_str(value)}"
        )
    if N is not None and K is not None and N % K != 0:
        raise ValueError(
            "The number of query heads must be a multiple of the number of "
            f"key/value heads (grouped-query attention). Received: "
            f"query heads={N}, key heads={K}"
        )
    if mask is None:
        return
    mask_dtype = dtype_of(mask)
    if mask_dtype != "bool":
        raise ValueError(
            "Argument `mask` must be a boolean tensor (True = attend). "
            f"Received: mask.dtype={mask_dtype}"
        )
    full = (B, N, T, S)
    m_shape = tuple(mask.shape)
    ok = len(m_shape) <= 4 and all(
        m == 1 or same(m, f) for m, f in zip(m_shape[::-1], full[::-1])
    )
    if not ok:
        raise ValueError(
            "Argument `mask` must be broadcastable to (batch, num_heads, "
            f"query_length, key_length) = {full}. Received: mask.shape={m_shape}"
        )


def _mask_rank4(mask):
    while len(mask.shape) < 4:
        mask = ops.expand_dims(mask, 0)
    return mask


class FusedAttention(keras.Operation):
    """The Keras operation behind `fused_attention` (symbolic and eager)."""

    def __init__(self, is_causal=False, scale=None, implementation=None,
                 name=None):
        super().__init__(name=name)
        self.is_causal = bool(is_causal)
        self.scale = scale
        self.implementation = resolve_implementation(implementation)

    def compute_output_spec(self, query, key, value, mask=None):
        _check_inputs(query, key, value, mask)
        return keras.KerasTensor(query.shape, dtype=query.dtype)

    def call(self, query, key, value, mask=None):
        query, key, value = (ops.convert_to_tensor(x) for x in (query, key, value))
        if mask is not None:
            mask = ops.convert_to_tensor(mask)
        _check_inputs(query, key, value, mask)
        if mask is not None:
            mask = _mask_rank4(mask)
        scale = self.scale
        if scale is None:
            scale = 1.0 / math.sqrt(query.shape[-1])
        scale = float(scale)
        # Cast from bfloat16, float32 values are still bfloat16 ones, which
        # the CPU kernels then multiply in bfloat16 where the CPU can.
        bf16 = all(dtype_of(x) == "bfloat16" for x in (query, key, value))
        return run_fused(
            "fused_attention", self.implementation, (query, key, value),
            (mask,), attention_reference, is_causal=self.is_causal,
            scale=scale, native_attrs=dict(bf16_products=bf16),
        )


def fused_attention(query, key, value, mask=None, is_causal=False, scale=None,
                    implementation=None):
    """Scaled dot-product attention, fused: no (T, S) matrix is stored.

    Same layout and semantics as `keras.ops.dot_product_attention`, except
    that a query row with no key to attend to returns zeros (and zero
    gradients) instead of NaN or an average of the values. Differentiable on
    every backend; works eagerly, in `jax.jit`, `tf.function` and `model.fit`.

    Shape letters: B batch, T query length, S key length, N query heads,
    K key/value heads (N % K == 0: grouped-query attention), H head dim.

    Args:
        query: (B, T, N, H) float16, bfloat16 or float32 tensor (float64 runs
            the reference).
        key: (B, S, K, H) tensor of the same dtype.
        value: (B, S, K, H) tensor of the same dtype.
        mask: optional boolean tensor broadcastable to (B, N, T, S); True
            means attend. A key-padding mask of shape (B, 1, 1, S) is read in
            place, never expanded.
        is_causal: if True, query t attends key s only if s <= t
            (top-left aligned, as in Keras).
        scale: multiplier of the logits; defaults to 1 / sqrt(H).
        implementation: None (from `MMKERAS_KERNELS`, default "auto"),
            "auto", "native" or "reference"; see `mmkeras.kernels`.

    Returns:
        (B, T, N, H) tensor in the dtype of `query`.

    Example:

    >>> import numpy as np
    >>> import mmkeras
    >>> q = np.random.rand(2, 16, 4, 32).astype("float32")
    >>> kv = np.random.rand(2, 24, 2, 32).astype("float32")
    >>> pad = np.arange(24)[None, None, None, :] < np.array([24, 10])[:, None, None, None]
    >>> out = mmkeras.ops.fused_attention(q, kv, kv, mask=pad)
    >>> tuple(out.shape)
    (2, 16, 4, 32)
    """
    op = FusedAttention(is_causal=is_causal, scale=scale,
                        implementation=implementation)
    return call_op(op, query, key, value, mask)
