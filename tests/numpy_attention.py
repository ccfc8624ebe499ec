"""float64 numpy attention: the oracle every implementation is held to."""

import numpy as np


def attention_np(q, k, v, mask=None, is_causal=False, scale=None, dout=None):
    """Returns out, and (dq, dk, dv) of sum(out * dout) when dout is given.

    q (B, T, N, H); k, v (B, S, K, H); mask broadcastable to (B, N, T, S).
    A row with no key to attend to gives zeros (and zero gradients).
    """
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    G = N // K
    scale = 1.0 / np.sqrt(H) if scale is None else scale
    kk, vv = np.repeat(k, G, axis=2), np.repeat(v, G, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, kk) * scale
    valid = np.ones((B, N, T, S), bool)
    if mask is not None:
        valid &= np.broadcast_to(np.asarray(mask, bool), (B, N, T, S))
    if is_causal:
        valid &= np.tril(np.ones((T, S), bool))
    logits = np.where(valid, logits, -np.inf)
    m = logits.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.where(valid, np.exp(logits - m), 0.0)
    total = p.sum(-1, keepdims=True)
    p = p / np.where(total > 0, total, 1.0)
    out = np.einsum("bnts,bsnh->btnh", p, vv)
    if dout is None:
        return out
    dout = np.asarray(dout, np.float64)
    dp = np.einsum("btnh,bsnh->bnts", dout, vv)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    dq = np.einsum("bnts,bsnh->btnh", ds, kk) * scale
    dk = np.einsum("bnts,btnh->bsnh", ds, q) * scale
    dv = np.einsum("bnts,btnh->bsnh", p, dout)
    dk = dk.reshape(B, S, K, G, H).sum(3)
    dv = dv.reshape(B, S, K, G, v.shape[3]).sum(3)
    return out, (dq, dk, dv)


def rel_error(x, ref):
    """Norm of the error over the norm of the reference.

    Some gradients are exactly zero in exact arithmetic (dq and dk when a
    row attends a single key: the softmax is constant). Relative error is
    meaningless there, so for a reference that is zero up to float64
    rounding this returns the absolute RMS error instead.
    """
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    ref_norm = np.linalg.norm(ref)
    if ref_norm <= 1e-10 * np.sqrt(max(ref.size, 1)):
        return np.sqrt(np.mean((x - ref) ** 2)) if x.size else 0.0
    return np.linalg.norm(x - ref) / ref_norm
