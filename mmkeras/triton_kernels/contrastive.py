"""Triton kernels of the blockwise contrastive losses (CLIP softmax / InfoNCE
and SigLIP pairwise sigmoid), forward and backward, without the B x B logit
matrix.

The contract is the one of the C++ kernels, kernels/cpu/contrastive.h:
a, b (B, D) float32 used as given; scale s and bias t scalars (shape () or
(1,)); logits L[i, j] = s * (a[i] . b[j]) + t.

* softmax: loss = (1/B) sum_i [(lse_r[i] - L[i, i]) + (lse_c[i] - L[i, i])] / 2
* sigmoid: loss = (1/B) sum_{i,j} softplus(-z[i, j] L[i, j]), z = 2 [i == j] - 1
* saved residual lse (2, B): lse[0] = row logsumexps, lse[1] = column
  logsumexps (softmax); zeros (sigmoid).
* backward: dL as in the header; da = s dL b, db = s dL^T a,
  dscale = sum dL (a[i] . b[j]), dbias = sum dL.

Kernels. One "rows" kernel of each direction serves both sides: the column
statistics and gradients of (a, b) are the row ones of (b, a), since
L^T = s b a^T + t and the formulas are symmetric under that swap. So

* forward: `_fwd_rows_kernel` runs once per side (softmax) with an online
  logsumexp over column tiles, writing lse and the per-row loss term
  (m - L[i, i]) + log(l), the diagonal read off the tiles themselves; or once
  (sigmoid) writing per-row sums of softplus terms. The loss is reduced from
  those per-row terms in float64 by torch.
* backward: `_bwd_rows_kernel` runs once per side, recomputing each logit
  tile from a, b, s, t and accumulating dL @ b (resp. dL^T @ a) for one chunk
  of the output features per program (the grid's second axis: programs of
  different chunks recompute the same tiles, no atomics, deterministic). The
  programs of chunk 0 also write per-row partials of dscale (and of dbias,
  sigmoid), reduced by torch in float64. For softmax the scale gradient is
  summed as (g/2B) sum_ij [P (S - S[i, i]) + Q (S - S[j, j])] (each side
  contributes its own-row half), which equals sum dL S but does not cancel
  large diagonal terms: centred on a prepass estimate of S[i, i], then
  shifted to the tiles' own S[i, i] (so the diagonal term is exactly 0).
  dbias is exactly 0 for softmax (the bias cancels; the C++ kernel writes
  the rounding noise of sum dL, which is 0 in exact arithmetic).

Memory beyond the inputs and outputs: O(B) per-row buffers. Every tile size
is a power of two >= 16 (tl.dot); D is looped over in chunks, so any D works.
fp32 dots use 3xTF32 on NVIDIA GPUs and "ieee" in the interpreter (as the
attention kernels). The tile configs below are untuned defaults.
"""

import torch
import triton
import triton.language as tl

from mmkeras.triton_kernels import flash_attention as _fa
from mmkeras.triton_kernels import fusion as _fu

__all__ = ["forward", "backward"]

_INTERPRET = _fa._INTERPRET

# (BLOCK_M rows, BLOCK_N columns, BLOCK_K reduction chunk, BLOCK_DO output
# chunk cap, num_warps). The interpreter uses small, unequal tiles so that
# odd sizes span several partial tiles and several output chunks.
if _INTERPRET:
    _FWD_CFG = (32, 64, 32, None, 4)
    _BWD_CFG = (32, 64, 32, 32, 4)
else:
    _FWD_CFG = (64, 64, 32, None, 4)
    _BWD_CFG = (64, 32, 32, 128, 4)

# Logit of a padding column: exp(_NEG - m) == 0 for any real maximum m.
_NEG = tl.constexpr(-1.0e30)


@triton.jit
def _softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), with
    log1p(e) = 2 atanh(u), u = e / (2 + e) in [0, 1/3], as the odd series
    through u^15 (remainder < 1e-9 relative): accurate for tiny e too."""
    e = tl.exp(-tl.abs(x))
    u = e / (2.0 + e)
    u2 = u * u
    poly = 1.0 / 15.0
    poly = poly * u2 + 1.0 / 13.0
    poly = poly * u2 + 1.0 / 11.0
    poly = poly * u2 + 1.0 / 9.0
    poly = poly * u2 + 1.0 / 7.0
    poly = poly * u2 + 1.0 / 5.0
    poly = poly * u2 + 1.0 / 3.0
    poly = poly * u2 + 1.0
    return tl.maximum(x, 0.0) + 2.0 * u * poly


@triton.jit
def _sigmoid(x):
    e = tl.exp(-tl.abs(x))
    inv = 1.0 / (1.0 + e)
    return tl.where(x >= 0.0, inv, e * inv)


@triton.jit
def _scale_bias(scale_ptr, bias_ptr, HAS_BIAS: tl.constexpr):
    s = tl.load(scale_ptr).to(tl.float32)
    if HAS_BIAS:
        t = tl.load(bias_ptr).to(tl.float32)
    else:
        t = 0.0
    return s, t


@triton.jit
def _logit_tile(
    x_base, y_base, ks, row_ok, col_ok, s, t, D, stride_xd, stride_yd,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """(S, L) of a tile: S = x[rows] . y[cols] over chunks of D (padding
    reads zeros) and the logits L = s S + t."""
    S = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    xp = x_base
    yp = y_base
    kk = ks
    for _k0 in range(0, D, BLOCK_K):
        k_ok = kk < D
        xt = tl.load(xp, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        yt = tl.load(yp, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        S = tl.dot(xt, yt, S, input_precision=PRECISION)
        xp += BLOCK_K * stride_xd
        yp += BLOCK_K * stride_yd
        kk += BLOCK_K
    return S, S * s + t


@triton.jit
def _fwd_rows_kernel(
    x_ptr, y_ptr, scale_ptr, bias_ptr, lse_ptr, term_ptr,
    B, D,
    stride_xm, stride_xd, stride_ym, stride_yd,
    SIGMOID: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Rows i of L = s x y^T + t. softmax: lse[i] = logsumexp_j L[i, j] and
    term[i] = lse[i] - L[i, i]. sigmoid: term[i] = sum_j softplus(-z L)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < B
    s, t = _scale_bias(scale_ptr, bias_ptr, HAS_BIAS)
    m_i = tl.full((BLOCK_M,), _NEG, dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    diag = tl.zeros((BLOCK_M,), dtype=tl.float32)
    total = tl.zeros((BLOCK_M,), dtype=tl.float32)
    ks = tl.arange(0, BLOCK_K)
    x_base = x_ptr + rows[:, None] * stride_xm + ks[None, :] * stride_xd
    cols = tl.arange(0, BLOCK_N)
    y_base = y_ptr + cols[None, :] * stride_ym + ks[:, None] * stride_yd
    for _start_n in range(0, B, BLOCK_N):
        col_ok = cols < B
        S, L = _logit_tile(
            x_base, y_base, ks, row_ok, col_ok, s, t, D, stride_xd, stride_yd,
            BLOCK_M, BLOCK_N, BLOCK_K, PRECISION,
        )
        is_diag = rows[:, None] == cols[None, :]
        if SIGMOID:
            # softplus(-z L): z = +1 on the diagonal, -1 elsewhere.
            sp = _softplus(tl.where(is_diag, -L, L))
            sp = tl.where(row_ok[:, None] & col_ok[None, :], sp, 0.0)
            total += tl.sum(sp, axis=1)
        else:
            L = tl.where(col_ok[None, :], L, _NEG)
            diag += tl.sum(tl.where(is_diag, L, 0.0), axis=1)
            m_new = tl.maximum(m_i, tl.max(L, axis=1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(L - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            m_i = m_new
        cols += BLOCK_N
        y_base += BLOCK_N * stride_ym
    if SIGMOID:
        tl.store(term_ptr + rows, total, mask=row_ok)
    else:
        log_l = tl.log(l_i)
        tl.store(lse_ptr + rows, m_i + log_l, mask=row_ok)
        # The maximum is usually L[i, i] itself: subtract before adding.
        tl.store(term_ptr + rows, (m_i - diag) + log_l, mask=row_ok)


@triton.jit
def _bwd_rows_kernel(
    x_ptr, y_ptr, scale_ptr, bias_ptr, dloss_ptr, lse_own_ptr, lse_other_ptr,
    dx_ptr, ds_ptr, dt_ptr,
    B, D,
    stride_xm, stride_xd, stride_ym, stride_yd, stride_dm, stride_dd,
    SIGMOID: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    PARTIALS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_DO: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dx[rows, chunk] = s * sum_j dL[i, j] y[j, chunk] for L = s x y^T + t.

    With PARTIALS, the programs of output chunk 0 also write per-row
    partials of dscale (ds) and, for sigmoid, of dbias (dt).
    """
    pid_d = tl.program_id(1)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < B
    dcols = pid_d * BLOCK_DO + tl.arange(0, BLOCK_DO)
    dcol_ok = dcols < D
    s, t = _scale_bias(scale_ptr, bias_ptr, HAS_BIAS)
    g_over_b = tl.load(dloss_ptr).to(tl.float32) / B
    half = 0.5 * g_over_b
    if SIGMOID:
        lse_own = tl.zeros((BLOCK_M,), dtype=tl.float32)
        diag = tl.zeros((BLOCK_M,), dtype=tl.float32)
    else:
        lse_own = tl.load(lse_own_ptr + rows, mask=row_ok, other=0.0)
        # An estimate of S[i, i] = x[i] . y[i] to centre the scale gradient
        # on; the tiles' own diagonal corrects it at the end.
        diag = tl.zeros((BLOCK_M,), dtype=tl.float32)
        if PARTIALS:
            ks = tl.arange(0, BLOCK_K)
            for k0 in range(0, D, BLOCK_K):
                kk = k0 + ks
                msk = row_ok[:, None] & (kk < D)[None, :]
                xd = tl.load(
                    x_ptr + rows[:, None] * stride_xm + kk[None, :] * stride_xd,
                    mask=msk, other=0.0,
                )
                yd = tl.load(
                    y_ptr + rows[:, None] * stride_ym + kk[None, :] * stride_yd,
                    mask=msk, other=0.0,
                )
                diag += tl.sum(xd * yd, axis=1)
    acc = tl.zeros((BLOCK_M, BLOCK_DO), dtype=tl.float32)
    ds_acc = tl.zeros((BLOCK_M,), dtype=tl.float32)
    dt_acc = tl.zeros((BLOCK_M,), dtype=tl.float32)
    ks = tl.arange(0, BLOCK_K)
    x_base = x_ptr + rows[:, None] * stride_xm + ks[None, :] * stride_xd
    cols = tl.arange(0, BLOCK_N)
    y_base = y_ptr + cols[None, :] * stride_ym + ks[:, None] * stride_yd
    yo_ptrs = y_ptr + cols[:, None] * stride_ym + dcols[None, :] * stride_yd
    lse_ptrs = lse_other_ptr + cols
    diag_t = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for _start_n in range(0, B, BLOCK_N):
        col_ok = cols < B
        S, L = _logit_tile(
            x_base, y_base, ks, row_ok, col_ok, s, t, D, stride_xd, stride_yd,
            BLOCK_M, BLOCK_N, BLOCK_K, PRECISION,
        )
        valid = row_ok[:, None] & col_ok[None, :]
        is_diag = (rows[:, None] == cols[None, :]) & valid
        if SIGMOID:
            # dL = -(g/B) z sigmoid(-z L).
            sg = _sigmoid(tl.where(is_diag, -L, L))
            dL = tl.where(is_diag, -g_over_b * sg, g_over_b * sg)
            dL = tl.where(valid, dL, 0.0)
            if PARTIALS:
                ds_acc += tl.sum(dL * S, axis=1)
                dt_acc += tl.sum(dL, axis=1)
        else:
            lse_other = tl.load(lse_ptrs, mask=col_ok, other=0.0)
            P = tl.where(valid, tl.exp(L - lse_own[:, None]), 0.0)
            Q = tl.where(valid, tl.exp(L - lse_other[None, :]), 0.0)
            dL = half * (P + Q) - tl.where(is_diag, g_over_b, 0.0)
            if PARTIALS:
                ds_acc += tl.sum(P * (S - diag[:, None]), axis=1)
                dt_acc += tl.sum(P, axis=1)
                diag_t += tl.sum(tl.where(is_diag, S, 0.0), axis=1)
        yo = tl.load(
            yo_ptrs, mask=col_ok[:, None] & dcol_ok[None, :], other=0.0
        )
        acc = tl.dot(dL, yo, acc, input_precision=PRECISION)
        cols += BLOCK_N
        y_base += BLOCK_N * stride_ym
        yo_ptrs += BLOCK_N * stride_ym
        lse_ptrs += BLOCK_N
    tl.store(
        dx_ptr + rows[:, None] * stride_dm + dcols[None, :] * stride_dd,
        acc * s,
        mask=row_ok[:, None] & dcol_ok[None, :],
    )
    if PARTIALS:
        if pid_d == 0:
            if SIGMOID:
                tl.store(ds_ptr + rows, ds_acc, mask=row_ok)
                tl.store(dt_ptr + rows, dt_acc, mask=row_ok)
            else:
                # Centred on the tiles' own S[i, i] (diag_t) rather than the
                # prepass estimate: dt_acc holds sum_j P[i, j] here.
                ds_row = ds_acc - (diag_t - diag) * dt_acc
                tl.store(ds_ptr + rows, half * ds_row, mask=row_ok)


# --------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------


# Output allocation; module-level so that tests can poison (NaN-fill) it to
# prove that the kernels write every element.
def _empty(shape, dtype, device):
    return torch.empty(shape, dtype=dtype, device=device)


def _pow2(n, lo=16):
    return max(lo, triton.next_power_of_2(int(n)))


def _check_inputs(a, b, scale, bias):
    pairs = [("a", a), ("b", b), ("scale", scale)]
    if bias is not None:
        pairs.append(("bias", bias))
    _fu._check_float32(pairs)
    if a.ndim != 2 or tuple(b.shape) != tuple(a.shape) or a.shape[0] < 1:
        raise ValueError(
            "`a` and `b` must both have shape (B, D) with B >= 1. "
            f"Received: a.shape={tuple(a.shape)}, b.shape={tuple(b.shape)}"
        )
    for name, x in pairs[2:]:
        if tuple(x.shape) not in ((), (1,)):
            raise ValueError(
                f"`{name}` must be a scalar (shape () or (1,)). "
                f"Received: {name}.shape={tuple(x.shape)}"
            )
    return a.shape


def _specialization(cfg, sigmoid, bias, precision):
    """The launch keywords that the two kernels share, for the config cfg."""
    bm, bn, bk, _, warps = cfg
    return dict(
        SIGMOID=sigmoid,
        HAS_BIAS=bias is not None,
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        PRECISION=precision,
        num_warps=warps,
    )


def _fwd_launch(wrap, x, y, scale, bias, lse_row, term, sigmoid, precision):
    B, D = x.shape
    wrap(_fwd_rows_kernel)[(triton.cdiv(B, _FWD_CFG[0]),)](
        x, y, scale, scale if bias is None else bias, lse_row, term,
        B, D,
        *x.stride(), *y.stride(),
        **_specialization(_FWD_CFG, sigmoid, bias, precision),
    )


def _forward_impl(a, b, scale, bias, sigmoid, wrap=_fa._identity):
    B, D = _check_inputs(a, b, scale, bias)
    sigmoid = bool(sigmoid)
    _fa._check_runnable()
    precision = _fa._precision(torch.float32)
    if sigmoid:
        term = _empty((B,), torch.float32, a.device)
        _fwd_launch(wrap, a, b, scale, bias, term, term, True, precision)
        loss = term.to(torch.float64).sum() / B
        lse = torch.zeros((2, B), dtype=torch.float32, device=a.device)
    else:
        lse = _empty((2, B), torch.float32, a.device)
        terms = _empty((2, B), torch.float32, a.device)
        _fwd_launch(wrap, a, b, scale, bias, lse[0], terms[0], False, precision)
        _fwd_launch(wrap, b, a, scale, bias, lse[1], terms[1], False, precision)
        loss = terms.to(torch.float64).sum() / (2 * B)
    return loss.to(torch.float32), lse


def _bwd_launch(wrap, x, y, scale, bias, dloss, lse_own, lse_other, dx, ds,
                dt, sigmoid, partials, precision):
    B, D = x.shape
    bdo = min(_BWD_CFG[3], _pow2(D))
    grid = (triton.cdiv(B, _BWD_CFG[0]), max(1, triton.cdiv(D, bdo)))
    wrap(_bwd_rows_kernel)[grid](
        x, y, scale, scale if bias is None else bias, dloss, lse_own,
        lse_other, dx, ds, dt,
        B, D,
        *x.stride(), *y.stride(), *dx.stride(),
        PARTIALS=partials,
        BLOCK_DO=bdo,
        **_specialization(_BWD_CFG, sigmoid, bias, precision),
    )


def _backward_impl(a, b, scale, bias, lse, dloss, sigmoid,
                   wrap=_fa._identity):
    B, D = _check_inputs(a, b, scale, bias)
    sigmoid = bool(sigmoid)
    if tuple(lse.shape) != (2, B) or lse.dtype != torch.float32:
        raise ValueError(
            f"`lse` must be float32 of shape (2, B)={(2, B)}. "
            f"Received: lse.shape={tuple(lse.shape)}, lse.dtype={lse.dtype}"
        )
    if dloss.numel() != 1:
        raise ValueError(
            f"`dloss` must be a scalar. Received: dloss.shape="
            f"{tuple(dloss.shape)}"
        )
    _fa._check_runnable()
    precision = _fa._precision(torch.float32)
    dloss = dloss.to(device=a.device, dtype=torch.float32).reshape(())
    lse = lse.contiguous()
    da = _empty((B, D), torch.float32, a.device)
    db = _empty((B, D), torch.float32, a.device)
    ds = _empty((2, B), torch.float32, a.device)
    dt = _empty((B,), torch.float32, a.device)
    # Rows: da, and the row-side partials; columns (a, b swapped): db, and
    # for softmax the column-side half of the scale gradient.
    _bwd_launch(wrap, a, b, scale, bias, dloss, lse[0], lse[1], da, ds[0], dt,
                sigmoid, True, precision)
    _bwd_launch(wrap, b, a, scale, bias, dloss, lse[1], lse[0], db, ds[1], dt,
                sigmoid, not sigmoid, precision)
    if sigmoid:
        dscale = ds[0].to(torch.float64).sum()
        dbias = dt.to(torch.float64).sum()
        if bias is None:
            dbias = torch.zeros_like(dbias)
    else:
        dscale = ds.to(torch.float64).sum()
        dbias = torch.zeros((), dtype=torch.float64, device=a.device)
    return da, db, dscale.to(torch.float32), dbias.to(torch.float32)


def forward(a, b, scale, bias=None, sigmoid=False):
    """Contrastive loss forward.

    Args:
        a, b: (B, D) float32 embeddings (pair i is (a[i], b[i])).
        scale: float32 scalar tensor (shape () or (1,)), the logit multiplier.
        bias: optional float32 scalar tensor added to the logits.
        sigmoid: False for softmax (CLIP), True for sigmoid (SigLIP).

    Returns:
        `(loss, lse)`: the float32 scalar loss and the (2, B) float32 saved
        residual (row and column logsumexps; zeros for sigmoid).
    """
    return _forward_impl(a, b, scale, bias, sigmoid)


def backward(a, b, scale, bias, lse, dloss, sigmoid=False):
    """Contrastive loss backward (recomputes the logit tiles).

    Args:
        a, b, scale, bias, sigmoid: as given to `forward`.
        lse: the (2, B) residual returned by `forward`.
        dloss: scalar cotangent of the loss.

    Returns:
        `(da, db, dscale, dbias)`: (B, D), (B, D), () and () float32
        (dbias is 0 without a bias, and exactly 0 for softmax).
    """
    return _backward_impl(a, b, scale, bias, lse, dloss, sigmoid)
