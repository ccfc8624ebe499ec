"""The `keras.ops` reference of fused attention: the fallback and the oracle.

Materializes the (B, K, G, T, S) logits, so it is only fast for short
sequences; the native kernels compute the same function without them.
"""

import keras
from keras import ops

# A finite stand-in for -inf: exp(-1e30 - m) is exactly 0 in float32, and a
# finite value keeps gradients of masked logits at 0 instead of NaN.
_MASKED = -1e30


def attention_reference(query, key, value, mask, is_causal, scale):
    """Same contract as `mmkeras.ops.fused_attention` (validated inputs).

    Args:
        query: (B, T, N, H) floating tensor.
        key: (B, S, K, H), same dtype.
        value: (B, S, K, H), same dtype.
        mask: None or a boolean tensor of rank 4 broadcastable to (B, N, T, S).
        is_causal: query t attends key s only if s <= t.
        scale: Python float multiplying the logits.

    Returns:
        (B, T, N, H) in the dtype of `query`; rows with no key are zeros.
    """
    dtype = keras.backend.standardize_dtype(query.dtype)
    compute = "float64" if dtype == "float64" else "float32"
    q, k, v = (ops.cast(x, compute) for x in (query, key, value))
    num_heads, head_dim = q.shape[2], q.shape[3]
    kv_heads = k.shape[2]
    groups = num_heads // kv_heads
    q_shape = ops.shape(q)
    q = ops.reshape(q, (q_shape[0], q_shape[1], kv_heads, groups, head_dim))
    logits = ops.einsum("btkgh,bskh->bkgts", q, k) * scale

    valid = None
    if mask is not None:
        # (Bm, Nm, Tm, Sm) -> (Bm, K or 1, G or 1, Tm, Sm) to match the logits.
        m_shape = ops.shape(mask)
        heads = (kv_heads, groups) if mask.shape[1] == num_heads else (1, 1)
        valid = ops.reshape(mask, (m_shape[0], *heads, m_shape[2], m_shape[3]))
    if is_causal:
        t_index = ops.expand_dims(ops.arange(ops.shape(logits)[3]), 1)
        s_index = ops.expand_dims(ops.arange(ops.shape(logits)[4]), 0)
        causal = t_index >= s_index
        valid = causal if valid is None else ops.logical_and(valid, causal)

    if valid is not None:
        logits = ops.where(valid, logits, _MASKED)
    row_max = ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True))
    weights = ops.exp(logits - row_max)
    if valid is not None:
        weights = ops.where(valid, weights, 0.0)
    total = ops.sum(weights, axis=-1, keepdims=True)
    weights = weights / ops.where(total > 0, total, 1.0)
    out = ops.einsum("bkgts,bskh->btkgh", weights, v)
    out = ops.reshape(out, (q_shape[0], q_shape[1], num_heads, v.shape[3]))
    return ops.cast(out, dtype)
