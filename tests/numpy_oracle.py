"""The float64 numpy oracles every implementation is held to, one per fused
op family (attention, fusion, contrastive), and the seeded inputs that the op
tests (tests/ops) and the Triton kernel tests (tests/triton_kernels) both
feed them."""

import numpy as np

# --------------------------------------------------------------- attention


def allowed_np(B, N, T, S, mask, is_causal):
    """(B, N, T, S) bool: which keys each query attends (mask broadcast to
    (B, N, T, S), True = attend; causal is top-left aligned)."""
    allow = np.ones((B, N, T, S), dtype=bool)
    if is_causal:
        allow &= np.tril(np.ones((T, S), dtype=bool))
    if mask is not None:
        allow &= np.asarray(mask, dtype=bool)
    return allow


def attention_lse_np(q, k, v, dout, mask=None, is_causal=False, scale=None,
                     dlse=None):
    """float64 attention forward and backward (Keras layout, zero empty rows).

    q (B, T, N, H); k, v (B, S, K, H); mask broadcastable to (B, N, T, S).
    The gradients are those of sum(out * dout) + sum(lse * dlse) (dlse None
    means zero). A row with no key to attend to gives out = 0, lse = +inf and
    zero gradients.

    Returns:
        out (B, T, N, H), lse (B, N, T), dq, dk, dv.
    """
    q, k, v, dout = (np.asarray(x, dtype=np.float64) for x in (q, k, v, dout))
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    g = N // K
    scale = 1.0 / np.sqrt(H) if scale is None else scale
    kk = np.repeat(k, g, axis=2)
    vv = np.repeat(v, g, axis=2)
    allow = allowed_np(B, N, T, S, mask, is_causal)
    logits = np.einsum("btnh,bsnh->bnts", q, kk) * scale
    logits = np.where(allow, logits, -np.inf)
    has_any = allow.any(-1)
    row_max = np.where(has_any, logits.max(-1, initial=-np.inf), 0.0)
    e = np.where(allow, np.exp(logits - row_max[..., None]), 0.0)
    denom = e.sum(-1)
    safe = np.where(has_any, denom, 1.0)
    p = e / safe[..., None]
    lse = np.where(has_any, row_max + np.log(safe), np.inf)
    out = np.einsum("bnts,bsnh->btnh", p, vv)

    dv_full = np.einsum("bnts,btnh->bsnh", p, dout)
    dp = np.einsum("btnh,bsnh->bnts", dout, vv)
    # d out_t / d logits_ts = p_ts (v_s - out_t): the usual softmax backward.
    delta = np.einsum("btnh,btnh->bnt", dout, out)
    if dlse is not None:
        delta = delta - np.asarray(dlse, dtype=np.float64)
    ds = p * (dp - delta[..., None])
    dq = scale * np.einsum("bnts,bsnh->btnh", ds, kk)
    dk_full = scale * np.einsum("bnts,btnh->bsnh", ds, q)
    dk = dk_full.reshape(B, S, K, g, H).sum(3)
    dv = dv_full.reshape(B, S, K, g, v.shape[3]).sum(3)
    return out, lse, dq, dk, dv


def attention_np(q, k, v, mask=None, is_causal=False, scale=None, dout=None):
    """Returns out, and (dq, dk, dv) of sum(out * dout) when dout is given:
    `attention_lse_np` without the log-sum-exp."""
    grads_wanted = dout is not None
    if dout is None:
        dout = np.zeros(np.shape(q))
    out, _, dq, dk, dv = attention_lse_np(q, k, v, dout, mask, is_causal,
                                          scale)
    return (out, (dq, dk, dv)) if grads_wanted else out


# ------------------------------------------------------------------ fusion


def sigmoid_np(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def present_np(mask, M, B):
    """(M, B) float64 presence: 1 where present (None: everywhere)."""
    if mask is None:
        return np.ones((M, B))
    return np.asarray(mask, np.float64).T


def gated_np(h, g, mask, dout):
    """out = sum_m present * sigmoid(g) * tanh(h); grads of sum(out * dout)."""
    h, g, dout = (np.asarray(x, np.float64) for x in (h, g, dout))
    p = present_np(mask, *h.shape[:2])[:, :, None]
    s, t = sigmoid_np(g), np.tanh(h)
    out = (p * s * t).sum(0)
    dh = p * dout * s * (1.0 - t**2)
    dg = p * dout * t * s * (1.0 - s)
    return out, (dh, dg)


def low_rank_np(f, mask, dout):
    """out = sum_r prod_m f' (f' = 1 for absent m); grads by leave-one-out
    products (exact with zeros)."""
    f, dout = np.asarray(f, np.float64), np.asarray(dout, np.float64)
    M = f.shape[0]
    p = present_np(mask, M, f.shape[2])[:, None, :, None] > 0
    fp = np.where(p, f, 1.0)
    out = fp.prod(0).sum(0)
    df = np.stack(
        [np.delete(fp, m, axis=0).prod(0) * dout for m in range(M)]
    )
    return out, (np.where(p, df, 0.0),)


# ------------------------------------------------------------- contrastive


def logsumexp_np(x, axis):
    m = x.max(axis=axis, keepdims=True)
    total = np.exp(x - m).sum(axis=axis, keepdims=True)
    return (m + np.log(total)).squeeze(axis)


def softmax_np(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def contrastive_np(a, b, scale, bias, kind, dloss=1.0):
    """Returns loss, and (da, db, dscale, dbias) of dloss * loss."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    B = a.shape[0]
    S = a @ b.T
    L = scale * S + (0.0 if bias is None else bias)
    eye = np.eye(B)
    if kind == "softmax":
        diag = np.diag(L)
        per_pair = logsumexp_np(L, 1) - diag + logsumexp_np(L, 0) - diag
        loss = np.mean(per_pair) / 2
        dL = (softmax_np(L, 1) + softmax_np(L, 0) - 2 * eye) / (2 * B)
    else:
        z = 2 * eye - 1
        loss = np.logaddexp(0.0, -z * L).sum() / B  # -log sigmoid(z L)
        dL = -z * sigmoid_np(-z * L) / B
    dL = dL * dloss
    grads = (scale * dL @ b, scale * dL.T @ a, (dL * S).sum(), dL.sum())
    return loss, grads


# ------------------------------------------------- inputs (fusion, contrastive)


def fusion_mask(B, M, kind, rng):
    """(B, M) modality mask of `kind`: None, "absent" (no modality anywhere)
    or random with a first sample that has every modality absent."""
    if kind is None:
        return None
    if kind == "absent":  # no modality anywhere
        return np.zeros((B, M), bool)
    mask = rng.random((B, M)) > 0.4
    mask[0] = False  # a sample with every modality absent
    if B > 1:
        mask[-1] = True
    return mask


def gated_inputs(M, B, D, mask_kind, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((M, B, D), dtype=np.float32) * 2
    g = rng.standard_normal((M, B, D), dtype=np.float32) * 2
    dout = rng.standard_normal((B, D), dtype=np.float32)
    return h, g, fusion_mask(B, M, mask_kind, rng), dout


def low_rank_inputs(M, R, B, O, mask_kind, zeros, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((M, R, B, O), dtype=np.float32)
    f[rng.random(f.shape) < zeros] = 0.0
    dout = rng.standard_normal((B, O), dtype=np.float32)
    return f, fusion_mask(B, M, mask_kind, rng), dout


def contrastive_inputs(B, D, normalize, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((B, D)).astype(np.float32)
    b = (a + rng.standard_normal((B, D)) * 1.5).astype(np.float32)
    if normalize:
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
    else:
        a *= 0.3
        b *= 0.3
    return a, b


# ------------------------------------------------------------------ errors


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
