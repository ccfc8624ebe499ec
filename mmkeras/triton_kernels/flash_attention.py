"""FlashAttention-2 style fused attention kernels in Triton.

Shapes use the letters of docs/architecture.md: B batch, T query length, S key length,
N query heads, K key/value heads (N % K == 0, grouped-query), H head dim.

Layout and semantics follow `keras.ops.dot_product_attention`:

* query `(B, T, N, H)`, key and value `(B, S, K, H)`; query head `n` reads
  key/value head `n // (N // K)`.
* `mask`: optional bool tensor of rank 4 whose every dim is 1 or the full size
  of `(B, N, T, S)`; True means "attend". It is never expanded: size-1 dims
  get stride 0.
* `is_causal`: top-left aligned, query `i` attends key `j` iff `j <= i`.
* A query row with no attended key yields out = 0, lse = +inf and exactly
  zero gradients.

`forward` returns `(out, lse)` with `lse[b, n, t] = log(sum_j exp(logit))`
(float32, shape `(B, N, T)`). `backward` recomputes the probabilities from
`lse` (FlashAttention-2): a small kernel computes `D = rowsum(dO * O)`, one
kernel per key block accumulates dK/dV over every query head of its group
(no atomics), and one kernel per query block accumulates dQ.

All launchers take an optional `wrap` callable applied to every kernel before
it is launched; `mmkeras.backend.torch_attention_triton` passes `torch.library.wrap_triton` so that
`torch.compile` sees the kernels.

Launch configs (autotune spaces, the grouped-query split) live in
`flash_attention_tuning.py`.
"""

import functools

import torch
import triton
import triton.language as tl

from mmkeras.triton_kernels import flash_attention_tuning as tuning
from mmkeras.triton_kernels.attention_checks import check_attention_inputs
from mmkeras.triton_kernels.attention_constants import LOG2E
from mmkeras.triton_kernels.flash_attention_tuning import set_autotune

__all__ = ["forward", "backward", "set_autotune", "MAX_HEAD_DIM"]

MAX_HEAD_DIM = 256
_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# True when triton.jit builds interpreted (CPU, numpy) kernels: the value
# triton read from TRITON_INTERPRET when this module's kernels were decorated
# (read once, by the tuning module, whose configs depend on it too).
_INTERPRET = tuning.INTERPRET

# log2(e) inside the kernels: triton.jit functions may only read globals that
# are tl.constexpr. The launchers use the plain float LOG2E.
_LOG2E_C = tl.constexpr(LOG2E)


def _interpreter_mismatch():
    """Why interpreted kernels cannot run in this process, or None.

    triton reads TRITON_INTERPRET when a function is decorated. If triton was
    imported before the variable was set, its own library functions
    (`tl.zeros`, `tl.sum`, ...) are compiled-mode JITFunctions while these
    kernels are interpreted, and every launch would fail obscurely.
    """
    if not _INTERPRET:
        return None
    from triton.runtime.interpreter import InterpretedFunction

    if isinstance(tl.zeros, InterpretedFunction):
        return None
    return (
        "TRITON_INTERPRET=1 was set after triton was imported: triton's own "
        "library is compiled-mode while mmkeras' attention kernels are "
        "interpreted. Set TRITON_INTERPRET=1 before anything imports triton "
        "(mmkeras imports it early)."
    )


# --------------------------------------------------------------------------
# Small jitted helpers.
# --------------------------------------------------------------------------


@triton.jit
def _load_tile(
    base, rows, cols, stride_r, stride_c, R, C,
    CHECK_R: tl.constexpr, CHECK_C: tl.constexpr,
):
    """Loads the 2-D tile base[rows, cols]; out-of-range elements read as 0."""
    ptrs = base + rows[:, None] * stride_r + cols[None, :] * stride_c
    if CHECK_R:
        if CHECK_C:
            inb = (rows[:, None] < R) & (cols[None, :] < C)
            x = tl.load(ptrs, mask=inb, other=0.0)
        else:
            x = tl.load(ptrs, mask=rows[:, None] < R, other=0.0)
    else:
        if CHECK_C:
            x = tl.load(ptrs, mask=cols[None, :] < C, other=0.0)
        else:
            x = tl.load(ptrs)
    return x


@triton.jit
def _store_tile(
    base, x, rows, cols, stride_r, stride_c, R, C,
    CHECK_R: tl.constexpr, CHECK_C: tl.constexpr,
):
    ptrs = base + rows[:, None] * stride_r + cols[None, :] * stride_c
    if CHECK_R:
        if CHECK_C:
            tl.store(ptrs, x, mask=(rows[:, None] < R) & (cols[None, :] < C))
        else:
            tl.store(ptrs, x, mask=rows[:, None] < R)
    else:
        if CHECK_C:
            tl.store(ptrs, x, mask=cols[None, :] < C)
        else:
            tl.store(ptrs, x)


@triton.jit
def _mm(a, b, acc, PRECISION: tl.constexpr):
    """tl.dot with fp32 accumulation.

    PRECISION "ieee" / "tf32x3" (fp32 inputs) keep fp32 accuracy; None is
    the backend default for 16-bit inputs. "interp_bf16" works around
    the CPU interpreter, whose dot multiplies the raw uint16 storage of
    bfloat16 tiles: the operands are widened to fp32 first, which gives the
    same products (bf16 x bf16 is exact in fp32).
    """
    if PRECISION == "interp_bf16":
        a = a.to(tl.float32)
        b = b.to(tl.float32)
        c = tl.dot(a, b, acc, input_precision="ieee")
    else:
        c = tl.dot(a, b, acc, input_precision=PRECISION)
    return c


@triton.jit
def _cast(x, dtype: tl.constexpr, PRECISION: tl.constexpr):
    """x.to(dtype); under "interp_bf16" with round-to-nearest-even.

    The CPU interpreter truncates fp32 -> bf16 (the GPU rounds to nearest
    even), which would double the rounding error of the tests; round on the
    fp32 bits first so that the final cast is exact.
    """
    if PRECISION == "interp_bf16" and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        x = ((bits >> 16) << 16).to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def _load_mask(mask_base, offs_m, offs_n, stride_mt, stride_ms, T, S):
    """Loads the user mask tile [len(offs_m), len(offs_n)] as a bool tensor."""
    ptrs = mask_base + offs_m[:, None] * stride_mt + offs_n[None, :] * stride_ms
    inb = (offs_m[:, None] < T) & (offs_n[None, :] < S)
    return tl.load(ptrs, mask=inb, other=0) != 0


@triton.jit
def _query_block(
    Q, K, V, Mask,
    stride_qb, stride_qn, stride_kb, stride_kn, stride_vb, stride_vn,
    stride_mb, stride_mn,
    N, GROUP,
    IS_CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """The (query block, batch x query head) program of the forward and dQ
    kernels: its first row, its rows, and its heads of Q, K, V and Mask."""
    pid_m = tl.program_id(0)
    if IS_CAUSAL:
        # Heaviest (last) query blocks first: better tail balance.
        pid_m = tl.num_programs(0) - 1 - pid_m
    pid_bn = tl.program_id(1)
    off_b = pid_bn // N
    off_n = pid_bn % N
    off_kv = off_n // GROUP

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)

    b64 = off_b.to(tl.int64)
    n64 = off_n.to(tl.int64)
    q_base = Q + b64 * stride_qb + n64 * stride_qn
    k_base = K + b64 * stride_kb + off_kv.to(tl.int64) * stride_kn
    v_base = V + b64 * stride_vb + off_kv.to(tl.int64) * stride_vn
    mask_base = Mask
    if HAS_MASK:
        mask_base = Mask + b64 * stride_mb + n64 * stride_mn
    return pid_bn, b64, n64, start_m, offs_m, q_base, k_base, v_base, mask_base


@triton.jit
def _key_bounds(
    start_m, S,
    IS_CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """(clean_hi, hi) for the query block at start_m: key blocks below
    clean_hi are fully in range and visible to every row of the block (no
    bounds or causal test); keys from hi on are never attended."""
    if IS_CAUSAL:
        hi = tl.minimum(S, start_m + BLOCK_M)
        # Key blocks ending at or before the tile's first row are fully visible.
        clean_hi = (tl.minimum(S, start_m + 1) // BLOCK_N) * BLOCK_N
    else:
        hi = S
        clean_hi = (S // BLOCK_N) * BLOCK_N
    return clean_hi, hi


@triton.jit
def _key_block_scores(
    q, k_base, v_base, mask_base,
    offs_m, offs_n, offs_h,
    stride_ks, stride_kh, stride_vs, stride_vh, stride_mt, stride_ms,
    T, S, H, qk_scale,
    EVEN_H: tl.constexpr,
    MASK_BLOCK: tl.constexpr,
    IS_CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """(k, v, s) of one key block for a query tile, as the forward and dQ
    passes both need them: s holds the logits in base 2, -inf where the key
    is not attended.

    MASK_BLOCK=False is the fast path for key blocks that are fully in range
    and fully visible to every query row of the tile (no causal test).
    """
    k = _load_tile(
        k_base, offs_n, offs_h, stride_ks, stride_kh, S, H,
        MASK_BLOCK, not EVEN_H,
    )
    v = _load_tile(
        v_base, offs_n, offs_h, stride_vs, stride_vh, S, H,
        MASK_BLOCK, not EVEN_H,
    )
    s = _mm(q, tl.trans(k), None, PRECISION) * qk_scale
    if MASK_BLOCK:
        keep = offs_n[None, :] < S
        if IS_CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None])
        s = tl.where(keep, s, float("-inf"))
    if HAS_MASK:
        s = tl.where(
            _load_mask(
                mask_base, offs_m, offs_n, stride_mt, stride_ms, T, S
            ),
            s, float("-inf"),
        )
    return k, v, s


# --------------------------------------------------------------------------
# Forward.
# --------------------------------------------------------------------------


@triton.jit
def _fwd_inner(
    acc, l_i, m_i, q,
    k_base, v_base, mask_base,
    offs_m, offs_h,
    lo, hi,
    stride_ks, stride_kh, stride_vs, stride_vh, stride_mt, stride_ms,
    T, S, H, qk_scale,
    BLOCK_N: tl.constexpr,
    EVEN_H: tl.constexpr,
    MASK_BLOCK: tl.constexpr,
    IS_CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Online-softmax over key blocks [lo, hi)."""
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        k, v, s = _key_block_scores(
            q, k_base, v_base, mask_base, offs_m, offs_n, offs_h,
            stride_ks, stride_kh, stride_vs, stride_vh, stride_mt, stride_ms,
            T, S, H, qk_scale,
            EVEN_H, MASK_BLOCK, IS_CAUSAL, HAS_MASK, PRECISION,
        )
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row with nothing attended so far keeps m = -inf; subtract 0 instead
        # so that exp2 gives 0 rather than NaN.
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_sub[:, None])
        alpha = tl.math.exp2(m_i - m_sub)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = _mm(_cast(p, v.dtype, PRECISION), v, acc, PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, Mask, Out, Lse,
    stride_qb, stride_qt, stride_qn, stride_qh,
    stride_kb, stride_ks, stride_kn, stride_kh,
    stride_vb, stride_vs, stride_vn, stride_vh,
    stride_mb, stride_mn, stride_mt, stride_ms,
    stride_ob, stride_ot, stride_on, stride_oh,
    N, T, S, H, GROUP,
    qk_scale,
    T_BUCKET, S_BUCKET,
    IS_CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BLOCK_H: tl.constexpr,
    EVEN_H: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_bn, b64, n64, start_m, offs_m, q_base, k_base, v_base, mask_base = (
        _query_block(
            Q, K, V, Mask,
            stride_qb, stride_qn, stride_kb, stride_kn, stride_vb, stride_vn,
            stride_mb, stride_mn,
            N, GROUP, IS_CAUSAL, HAS_MASK, BLOCK_M,
        )
    )
    offs_h = tl.arange(0, BLOCK_H)
    o_base = Out + b64 * stride_ob + n64 * stride_on

    q = _load_tile(
        q_base, offs_m, offs_h, stride_qt, stride_qh, T, H, True, not EVEN_H
    )

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_H], dtype=tl.float32)

    clean_hi, hi = _key_bounds(start_m, S, IS_CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, mask_base, offs_m, offs_h,
        0, clean_hi,
        stride_ks, stride_kh, stride_vs, stride_vh, stride_mt, stride_ms,
        T, S, H, qk_scale,
        BLOCK_N, EVEN_H, False, IS_CAUSAL, HAS_MASK, PRECISION,
    )
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, mask_base, offs_m, offs_h,
        clean_hi, hi,
        stride_ks, stride_kh, stride_vs, stride_vh, stride_mt, stride_ms,
        T, S, H, qk_scale,
        BLOCK_N, EVEN_H, True, IS_CAUSAL, HAS_MASK, PRECISION,
    )

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = (m_i + tl.math.log2(l_safe)) / _LOG2E_C  # log2 -> ln
    lse = tl.where(empty, float("inf"), lse)

    _store_tile(
        o_base, _cast(out, Out.dtype.element_ty, PRECISION),
        offs_m, offs_h, stride_ot, stride_oh, T, H, True, not EVEN_H,
    )
    tl.store(Lse + pid_bn.to(tl.int64) * T + offs_m, lse, mask=offs_m < T)


_attn_fwd = tuning.make_autotune(tuning.FWD_SPACE, tuning.FWD_SPACE_FP32)(
    _attn_fwd_kernel
)


# --------------------------------------------------------------------------
# Backward.
# --------------------------------------------------------------------------


@triton.jit
def _bwd_preprocess_kernel(
    Out, DOut, DLse, Delta,
    stride_ob, stride_ot, stride_on, stride_oh,
    stride_db, stride_dt, stride_dn, stride_dh,
    N, T, H,
    HAS_DLSE: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """Delta[b, n, t] = sum_h dO * O (minus dLse when lse has a gradient)."""
    pid_m = tl.program_id(0)
    pid_bn = tl.program_id(1)
    off_b = (pid_bn // N).to(tl.int64)
    off_n = (pid_bn % N).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_h = tl.arange(0, BLOCK_H)
    o = _load_tile(
        Out + off_b * stride_ob + off_n * stride_on,
        offs_m, offs_h, stride_ot, stride_oh, T, H, True, True,
    ).to(tl.float32)
    do = _load_tile(
        DOut + off_b * stride_db + off_n * stride_dn,
        offs_m, offs_h, stride_dt, stride_dh, T, H, True, True,
    ).to(tl.float32)
    delta = tl.sum(o * do, 1)
    row = pid_bn.to(tl.int64) * T + offs_m
    if HAS_DLSE:
        delta -= tl.load(DLse + row, mask=offs_m < T, other=0.0)
    tl.store(Delta + row, delta, mask=offs_m < T)


@triton.jit
def _dkdv_inner(
    dk, dv, k, v,
    q_base, do_base, lse_base, delta_base, mask_base,
    offs_n, offs_h,
    lo, hi,
    stride_qt, stride_qh, stride_dt, stride_dh, stride_mt, stride_ms,
    T, S, H, qk_scale,
    BLOCK_M: tl.constexpr,
    EVEN_H: tl.constexpr,
    CHECK_M: tl.constexpr,
    CAUSAL_BLOCK: tl.constexpr,
    HAS_MASK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Accumulates dK, dV of one key block over query blocks [lo, hi).

    Works on transposed scores (keys x queries) so that no accumulator needs
    a transpose. Out-of-range query rows read lse = +inf, hence P = 0.
    """
    offs_m0 = tl.arange(0, BLOCK_M)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + offs_m0
        q = _load_tile(
            q_base, offs_m, offs_h, stride_qt, stride_qh, T, H,
            CHECK_M, not EVEN_H,
        )
        do = _load_tile(
            do_base, offs_m, offs_h, stride_dt, stride_dh, T, H,
            CHECK_M, not EVEN_H,
        )
        if CHECK_M:
            in_t = offs_m < T
            lse2 = tl.load(lse_base + offs_m, mask=in_t, other=float("inf"))
            delta = tl.load(delta_base + offs_m, mask=in_t, other=0.0)
        else:
            lse2 = tl.load(lse_base + offs_m)
            delta = tl.load(delta_base + offs_m)
        lse2 = lse2 * _LOG2E_C
        s_t = _mm(k, tl.trans(q), None, PRECISION) * qk_scale
        # Masked logits become -inf before exp2, so P is exactly 0 there and
        # no intermediate overflows.
        if CAUSAL_BLOCK:
            causal = offs_m[None, :] >= offs_n[:, None]
            s_t = tl.where(causal, s_t, float("-inf"))
        if HAS_MASK:
            # Mask tile loaded transposed: element (j, i) = mask[i, j].
            allowed = _load_mask(
                mask_base, offs_n, offs_m, stride_ms, stride_mt, S, T
            )
            s_t = tl.where(allowed, s_t, float("-inf"))
        p_t = tl.math.exp2(s_t - lse2[None, :])
        dv = _mm(_cast(p_t, do.dtype, PRECISION), do, dv, PRECISION)
        dp_t = _mm(v, tl.trans(do), None, PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = _mm(_cast(ds_t, q.dtype, PRECISION), q, dk, PRECISION)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DOut, Mask, Lse, Delta, DK, DV,
    stride_qb, stride_qt, stride_qn, stride_qh,
    stride_kb, stride_ks, stride_kn, stride_kh,
    stride_vb, stride_vs, stride_vn, stride_vh,
    stride_db, stride_dt, stride_dn, stride_dh,
    stride_mb, stride_mn, stride_mt, stride_ms,
    stride_dkb, stride_dks, stride_dkn, stride_dkh,
    stride_dvb, stride_dvs, stride_dvn, stride_dvh,
    N, KH, T, S, H, GROUP, KV_DIV,
    sm_scale, qk_scale,
    T_BUCKET, S_BUCKET,
    IS_CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BLOCK_H: tl.constexpr,
    EVEN_H: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """dK, dV of one key block of one (batch, dk/dv head).

    Normal mode: KH = K programs per batch, each summing over its GROUP query
    heads, KV_DIV = 1. Split mode (few programs, grouped-query): KH = N,
    GROUP = 1, KV_DIV = N // K, and DK/DV are per-query-head fp32 buffers
    that the launcher sums.
    """
    pid_n = tl.program_id(0)
    pid_bk = tl.program_id(1)
    off_b = pid_bk // KH
    off_kv = pid_bk % KH
    off_src = (off_kv // KV_DIV).to(tl.int64)
    b64 = off_b.to(tl.int64)

    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_h = tl.arange(0, BLOCK_H)

    k = _load_tile(
        K + b64 * stride_kb + off_src * stride_kn,
        offs_n, offs_h, stride_ks, stride_kh, S, H, True, not EVEN_H,
    )
    v = _load_tile(
        V + b64 * stride_vb + off_src * stride_vn,
        offs_n, offs_h, stride_vs, stride_vh, S, H, True, not EVEN_H,
    )
    dk = tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32)

    t_full = (T // BLOCK_M) * BLOCK_M
    if IS_CAUSAL:
        # Query blocks before the diagonal never see this key block; blocks
        # starting at or after start_n + BLOCK_N - 1 see all of it.
        lo = (start_n // BLOCK_M) * BLOCK_M
        diag_hi = tl.minimum(
            T, ((start_n + BLOCK_N - 1 + BLOCK_M - 1) // BLOCK_M) * BLOCK_M
        )
    else:
        lo = 0
        diag_hi = 0
    tail_lo = tl.maximum(diag_hi, t_full)

    for g in range(0, GROUP):
        off_n = (off_kv * GROUP + g).to(tl.int64)
        row0 = (b64 * N + off_n) * T
        q_base = Q + b64 * stride_qb + off_n * stride_qn
        do_base = DOut + b64 * stride_db + off_n * stride_dn
        mask_base = Mask
        if HAS_MASK:
            mask_base = Mask + b64 * stride_mb + off_n * stride_mn
        if IS_CAUSAL:
            dk, dv = _dkdv_inner(
                dk, dv, k, v, q_base, do_base, Lse + row0, Delta + row0,
                mask_base,
                offs_n, offs_h, lo, diag_hi,
                stride_qt, stride_qh, stride_dt, stride_dh,
                stride_mt, stride_ms,
                T, S, H, qk_scale,
                BLOCK_M, EVEN_H, True, True, HAS_MASK, PRECISION,
            )
        dk, dv = _dkdv_inner(
            dk, dv, k, v, q_base, do_base, Lse + row0, Delta + row0, mask_base,
            offs_n, offs_h, diag_hi, t_full,
            stride_qt, stride_qh, stride_dt, stride_dh, stride_mt, stride_ms,
            T, S, H, qk_scale,
            BLOCK_M, EVEN_H, False, False, HAS_MASK, PRECISION,
        )
        dk, dv = _dkdv_inner(
            dk, dv, k, v, q_base, do_base, Lse + row0, Delta + row0, mask_base,
            offs_n, offs_h, tail_lo, T,
            stride_qt, stride_qh, stride_dt, stride_dh, stride_mt, stride_ms,
            T, S, H, qk_scale,
            BLOCK_M, EVEN_H, True, False, HAS_MASK, PRECISION,
        )

    dk = dk * sm_scale
    _store_tile(
        DK + b64 * stride_dkb + off_kv.to(tl.int64) * stride_dkn,
        _cast(dk, DK.dtype.element_ty, PRECISION),
        offs_n, offs_h, stride_dks, stride_dkh, S, H, True, not EVEN_H,
    )
    _store_tile(
        DV + b64 * stride_dvb + off_kv.to(tl.int64) * stride_dvn,
        _cast(dv, DV.dtype.element_ty, PRECISION),
        offs_n, offs_h, stride_dvs, stride_dvh, S, H, True, not EVEN_H,
    )


@triton.jit
def _dq_inner(
    dq, q, do, lse2, delta,
    k_base, v_base, mask_base,
    offs_m, offs_h,
    lo, hi,
    stride_ks, stride_kh, stride_vs, stride_vh, stride_mt, stride_ms,
    T, S, H, qk_scale,
    BLOCK_N: tl.constexpr,
    EVEN_H: tl.constexpr,
    MASK_BLOCK: tl.constexpr,
    IS_CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Accumulates dQ of one query block over key blocks [lo, hi)."""
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        k, v, s = _key_block_scores(
            q, k_base, v_base, mask_base, offs_m, offs_n, offs_h,
            stride_ks, stride_kh, stride_vs, stride_vh, stride_mt, stride_ms,
            T, S, H, qk_scale,
            EVEN_H, MASK_BLOCK, IS_CAUSAL, HAS_MASK, PRECISION,
        )
        p = tl.math.exp2(s - lse2[:, None])
        dp = _mm(do, tl.trans(v), None, PRECISION)
        ds = p * (dp - delta[:, None])
        dq = _mm(_cast(ds, k.dtype, PRECISION), k, dq, PRECISION)
    return dq


@triton.jit
def _attn_bwd_dq_kernel(
    Q, K, V, DOut, Mask, Lse, Delta, DQ,
    stride_qb, stride_qt, stride_qn, stride_qh,
    stride_kb, stride_ks, stride_kn, stride_kh,
    stride_vb, stride_vs, stride_vn, stride_vh,
    stride_db, stride_dt, stride_dn, stride_dh,
    stride_mb, stride_mn, stride_mt, stride_ms,
    stride_dqb, stride_dqt, stride_dqn, stride_dqh,
    N, T, S, H, GROUP,
    sm_scale, qk_scale,
    T_BUCKET, S_BUCKET,
    IS_CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BLOCK_H: tl.constexpr,
    EVEN_H: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_bn, b64, n64, start_m, offs_m, q_base, k_base, v_base, mask_base = (
        _query_block(
            Q, K, V, Mask,
            stride_qb, stride_qn, stride_kb, stride_kn, stride_vb, stride_vn,
            stride_mb, stride_mn,
            N, GROUP, IS_CAUSAL, HAS_MASK, BLOCK_M,
        )
    )
    offs_h = tl.arange(0, BLOCK_H)
    do_base = DOut + b64 * stride_db + n64 * stride_dn

    q = _load_tile(
        q_base, offs_m, offs_h, stride_qt, stride_qh, T, H, True, not EVEN_H
    )
    do = _load_tile(
        do_base, offs_m, offs_h, stride_dt, stride_dh, T, H, True, not EVEN_H
    )
    row = pid_bn.to(tl.int64) * T + offs_m
    lse2 = tl.load(Lse + row, mask=offs_m < T, other=float("inf"))
    lse2 = lse2 * _LOG2E_C
    delta = tl.load(Delta + row, mask=offs_m < T, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_H], dtype=tl.float32)

    clean_hi, hi = _key_bounds(start_m, S, IS_CAUSAL, BLOCK_M, BLOCK_N)
    dq = _dq_inner(
        dq, q, do, lse2, delta, k_base, v_base, mask_base, offs_m, offs_h,
        0, clean_hi,
        stride_ks, stride_kh, stride_vs, stride_vh, stride_mt, stride_ms,
        T, S, H, qk_scale,
        BLOCK_N, EVEN_H, False, IS_CAUSAL, HAS_MASK, PRECISION,
    )
    dq = _dq_inner(
        dq, q, do, lse2, delta, k_base, v_base, mask_base, offs_m, offs_h,
        clean_hi, hi,
        stride_ks, stride_kh, stride_vs, stride_vh, stride_mt, stride_ms,
        T, S, H, qk_scale,
        BLOCK_N, EVEN_H, True, IS_CAUSAL, HAS_MASK, PRECISION,
    )
    dq = dq * sm_scale
    _store_tile(
        DQ + b64 * stride_dqb + n64 * stride_dqn,
        _cast(dq, DQ.dtype.element_ty, PRECISION),
        offs_m, offs_h, stride_dqt, stride_dqh, T, H, True, not EVEN_H,
    )


_attn_bwd_dkdv = tuning.make_autotune(
    tuning.DKDV_SPACE, tuning.DKDV_SPACE_FP32
)(_attn_bwd_dkdv_kernel)
_attn_bwd_dq = tuning.make_autotune(tuning.DQ_SPACE, tuning.DQ_SPACE_FP32)(
    _attn_bwd_dq_kernel
)


# --------------------------------------------------------------------------
# Python launchers.
# --------------------------------------------------------------------------


def _identity(kernel):
    return kernel


# Output allocation; module-level so that tests can poison (NaN-fill) them to
# prove that the kernels write every element.
def _empty_like(x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _empty(shape, dtype, device):
    return torch.empty(shape, dtype=dtype, device=device)


def _block_h(h):
    return max(16, triton.next_power_of_2(int(h)))


@functools.lru_cache(maxsize=None)
def _fp32_gpu_precision():
    # 3xTF32 on NVIDIA: tensor cores with about fp32 accuracy (the plain fp32
    # "ieee" FMA path spills registers badly and compiles for a minute).
    try:
        backend = triton.runtime.driver.active.get_current_target().backend
    except Exception:
        backend = "cuda"
    return "tf32x3" if backend == "cuda" else "ieee"


def _precision(dtype):
    # fp32 inputs: never plain tf32, so fp32 stays fp32-accurate.
    # Other dtypes: the backend default (the option only affects fp32).
    if dtype == torch.float32:
        return "ieee" if _INTERPRET else _fp32_gpu_precision()
    if dtype == torch.bfloat16 and _INTERPRET:
        return "interp_bf16"
    return None


def _check_inputs(q, k, v, mask, scale):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"`{name}` must be a torch.Tensor. Received: {type(x)}"
            )
    checked = check_attention_inputs(
        q, k, v, mask, scale, max_head_dim=MAX_HEAD_DIM,
        dtypes=_SUPPORTED_DTYPES,
        is_bool_mask=lambda m: (isinstance(m, torch.Tensor)
                                and m.dtype == torch.bool),
        mask_kind="a bool torch.Tensor")
    if q.device != k.device or q.device != v.device:
        raise ValueError(
            "`q`, `k` and `v` must be on one device. "
            f"Received: {q.device}, {k.device}, {v.device}"
        )
    if mask is not None and mask.device != q.device:
        raise ValueError(
            f"`mask` must be on the device of `q` ({q.device}). "
            f"Received: {mask.device}"
        )
    return checked


def _specialization(is_causal, mask, BLOCK_H, H, precision):
    """The constexpr launch arguments that the three attention kernels share."""
    return dict(
        IS_CAUSAL=is_causal,
        HAS_MASK=mask is not None,
        BLOCK_H=BLOCK_H,
        EVEN_H=BLOCK_H == H,
        PRECISION=precision,
    )


def _mask_args(mask, q):
    """Returns (pointer tensor, 4 strides) for an optional bool mask."""
    if mask is None:
        return q, (0, 0, 0, 0)  # pointer unused (HAS_MASK=False)
    strides = tuple(
        0 if mask.shape[i] == 1 else mask.stride(i) for i in range(4)
    )
    return mask.view(torch.uint8), strides


def _check_runnable():
    reason = _interpreter_mismatch()
    if reason is not None:
        raise RuntimeError(reason)


def _forward_impl(
    q, k, v, mask=None, is_causal=False, scale=None, wrap=_identity
):
    B, T, N, H, S, KH, scale = _check_inputs(q, k, v, mask, scale)
    is_causal = bool(is_causal)
    out = _empty_like(q)
    lse = _empty((B, N, T), torch.float32, q.device)
    if B * N * T == 0:
        return out, lse
    if S == 0:
        out.zero_()
        lse.fill_(float("inf"))
        return out, lse
    _check_runnable()
    mask_ptr, ms = _mask_args(mask, q)
    BLOCK_H = _block_h(H)

    def grid(meta):
        return (triton.cdiv(T, meta["BLOCK_M"]), B * N)

    wrap(_attn_fwd)[grid](
        q, k, v, mask_ptr, out, lse,
        *q.stride(), *k.stride(), *v.stride(), *ms, *out.stride(),
        N, T, S, H, N // KH,
        scale * LOG2E,
        tuning.bucket(T), tuning.bucket(S),
        **_specialization(is_causal, mask, BLOCK_H, H, _precision(q.dtype)),
    )
    return out, lse


def _backward_impl(
    q, k, v, out, lse, dout, mask=None, is_causal=False, scale=None, dlse=None,
    wrap=_identity,
):
    B, T, N, H, S, KH, scale = _check_inputs(q, k, v, mask, scale)
    is_causal = bool(is_causal)
    if tuple(out.shape) != q.shape or tuple(dout.shape) != q.shape:
        raise ValueError(
            "`out` and `dout` must have the shape of `q`. "
            f"Received: q={tuple(q.shape)}, out={tuple(out.shape)}, "
            f"dout={tuple(dout.shape)}"
        )
    if tuple(lse.shape) != (B, N, T) or lse.dtype != torch.float32:
        raise ValueError(
            f"`lse` must be float32 of shape (B, N, T)={(B, N, T)}. "
            f"Received: shape={tuple(lse.shape)}, dtype={lse.dtype}"
        )
    if dlse is not None and tuple(dlse.shape) != (B, N, T):
        raise ValueError(
            f"`dlse` must have shape (B, N, T)={(B, N, T)}. "
            f"Received: {tuple(dlse.shape)}"
        )
    dq = _empty_like(q)
    dk = _empty_like(k)
    dv = _empty_like(v)
    if B * N * T == 0 or S == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    _check_runnable()
    lse = lse.contiguous()
    if dlse is not None:
        dlse = dlse.to(torch.float32).contiguous()
    mask_ptr, ms = _mask_args(mask, q)
    BLOCK_H = _block_h(H)
    spec = _specialization(is_causal, mask, BLOCK_H, H, _precision(q.dtype))
    group = N // KH

    delta = _empty((B, N, T), torch.float32, q.device)
    pre_block = tuning.preprocess_block(BLOCK_H)
    wrap(_bwd_preprocess_kernel)[(triton.cdiv(T, pre_block), B * N)](
        out, dout, dlse if dlse is not None else lse, delta,
        *out.stride(), *dout.stride(),
        N, T, H,
        HAS_DLSE=dlse is not None,
        BLOCK_H=BLOCK_H,
        BLOCK_M=pre_block,
    )

    # Grouped-query heads with too few (batch, kv head, key block) programs to
    # fill the GPU: one program per query head into fp32 buffers, summed below.
    split = group > 1 and tuning.split_gqa(
        B * KH * triton.cdiv(S, 128), q.device
    )
    if split:
        dk_buf = _empty((B, S, N, H), torch.float32, q.device)
        dv_buf = _empty((B, S, N, H), torch.float32, q.device)
        heads, launch_group, kv_div = N, 1, group
    else:
        dk_buf, dv_buf = dk, dv
        heads, launch_group, kv_div = KH, group, 1

    def grid_kv(meta):
        return (triton.cdiv(S, meta["BLOCK_N"]), B * heads)

    wrap(_attn_bwd_dkdv)[grid_kv](
        q, k, v, dout, mask_ptr, lse, delta, dk_buf, dv_buf,
        *q.stride(), *k.stride(), *v.stride(), *dout.stride(), *ms,
        *dk_buf.stride(), *dv_buf.stride(),
        N, heads, T, S, H, launch_group, kv_div,
        scale, scale * LOG2E,
        tuning.bucket(T), tuning.bucket(S),
        **spec,
    )

    def grid_q(meta):
        return (triton.cdiv(T, meta["BLOCK_M"]), B * N)

    wrap(_attn_bwd_dq)[grid_q](
        q, k, v, dout, mask_ptr, lse, delta, dq,
        *q.stride(), *k.stride(), *v.stride(), *dout.stride(), *ms,
        *dq.stride(),
        N, T, S, H, group,
        scale, scale * LOG2E,
        tuning.bucket(T), tuning.bucket(S),
        **spec,
    )
    if split:
        dk = dk_buf.view(B, S, KH, group, H).sum(3).to(k.dtype)
        dv = dv_buf.view(B, S, KH, group, H).sum(3).to(v.dtype)
    return dq, dk, dv


def forward(q, k, v, mask=None, is_causal=False, scale=None):
    """Fused attention forward pass.

    Args:
        q: query, `(B, T, N, H)`, float16/bfloat16/float32.
        k: key, `(B, S, K, H)`, same dtype, `N % K == 0`.
        v: value, `(B, S, K, H)`, same dtype.
        mask: None or a bool tensor of rank 4 whose dims are each 1 or the full
            size of `(B, N, T, S)`; True means attend.
        is_causal: top-left aligned causal masking (query i sees keys j <= i).
        scale: logit scale; defaults to `1 / sqrt(H)`.

    Returns:
        `(out, lse)`: `out` of shape `(B, T, N, H)` in q's dtype and the
        float32 log-sum-exp of the scaled logits, shape `(B, N, T)`
        (+inf for rows that attend no key; their `out` is 0).
    """
    return _forward_impl(q, k, v, mask, is_causal, scale)


def backward(
    q, k, v, out, lse, dout, mask=None, is_causal=False, scale=None, dlse=None
):
    """Fused attention backward pass (FlashAttention-2 recomputation).

    Args:
        q, k, v, mask, is_causal, scale: as given to `forward`.
        out, lse: the outputs of `forward`.
        dout: gradient of `out`, shape `(B, T, N, H)`.
        dlse: optional gradient of `lse`, shape `(B, N, T)` (mmkeras extension,
            used by the torch autograd glue; the default None means zero).

    Returns:
        `(dq, dk, dv)` in the input dtype; dk/dv sum over the query heads
        that share each key/value head.
    """
    return _backward_impl(q, k, v, out, lse, dout, mask, is_causal, scale, dlse)
