"""Input checks shared by the two GPU attention kernels (Triton under torch,
Pallas under JAX).

Framework-free on purpose: the Triton module imports torch and triton, the
Pallas one jax, and neither may pull in the other. Callers check what is
specific to their framework (tensor types, devices) themselves.
"""

import math


def check_attention_inputs(q, k, v, mask, scale, *, max_head_dim, dtypes,
                           is_bool_mask, mask_kind):
    """Checks q (B, T, N, H), k and v (B, S, K, H), an optional mask
    broadcastable to (B, N, T, S) and the scale.

    Args:
        q, k, v, mask, scale: the attention call's arguments (arrays with
            `ndim`, `shape` and `dtype`).
        max_head_dim: the largest head dim H the kernels support.
        dtypes: the supported dtypes, compared with `==` to each `x.dtype`.
        is_bool_mask: `is_bool_mask(mask)` is true for a boolean array of the
            caller's framework.
        mask_kind: what a valid mask is, for the error ("a bool torch.Tensor").

    Returns:
        `(B, T, N, H, S, K, scale)`, with `scale` defaulting to 1 / sqrt(H).
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if getattr(x, "ndim", None) != 4:
            layout = "(B, T, N, H)" if name == "q" else "(B, S, K, H)"
            shape = getattr(x, "shape", None)
            raise ValueError(
                f"`{name}` must have rank 4 {layout}. "
                f"Received: shape={None if shape is None else tuple(shape)}"
            )
        if x.dtype not in dtypes:
            raise TypeError(
                f"`{name}` must be float16, bfloat16 or float32. "
                f"Received: dtype={x.dtype}"
            )
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(
            "`q`, `k` and `v` must share one dtype. "
            f"Received: q={q.dtype}, k={k.dtype}, v={v.dtype}"
        )
    B, T, N, H = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != H:
        raise ValueError(
            "`k` and `v` must have shape (B, S, K, H) matching `q` "
            f"(B, T, N, H). Received: q={tuple(q.shape)}, "
            f"k={tuple(k.shape)}, v={tuple(v.shape)}"
        )
    S, K = k.shape[1], k.shape[2]
    if K == 0 or N % K != 0:
        raise ValueError(
            "The number of query heads N must be a multiple of the number "
            f"of key/value heads K. Received: N={N}, K={K}"
        )
    if not 1 <= H <= max_head_dim:
        raise ValueError(
            f"Head dim H must be in [1, {max_head_dim}]. Received: H={H}"
        )
    if mask is not None:
        if not is_bool_mask(mask):
            raise TypeError(
                f"`mask` must be {mask_kind}. "
                f"Received: dtype={getattr(mask, 'dtype', type(mask))}"
            )
        full = (B, N, T, S)
        if mask.ndim != 4 or not all(
            d in (1, f) for d, f in zip(mask.shape, full)
        ):
            raise ValueError(
                "`mask` must have rank 4 with every dim 1 or the full size of "
                f"(B, N, T, S)={full}. Received: shape={tuple(mask.shape)}"
            )
    if scale is None:
        scale = 1.0 / math.sqrt(H)
    return B, T, N, H, S, K, float(scale)
