"""FlashAttention-2 style fused attention kernels in Pallas, for JAX on GPUs.

Pallas (`jax.experimental.pallas`) ships with JAX and lowers these kernels to
Triton on NVIDIA GPUs; with `interpret=True` the same kernels run on the CPU
in Pallas' interpreter, which is how they are tested without a GPU. The
algorithm and the contract are those of `flash_attention.py` (the Triton
kernels of the torch backend) and of the C++ CPU kernel.

Shapes use the letters of docs/architecture.md: B batch, T query length, S key length,
N query heads, K key/value heads (N % K == 0, grouped-query), H head dim.

* query `(B, T, N, H)`, key and value `(B, S, K, H)`; query head `n` reads
  key/value head `n // (N // K)`.
* `mask`: None or a bool array of rank 4 whose every dim is 1 or the full
  size of `(B, N, T, S)`; True means "attend". It is never expanded: a size-1
  dim is read at index 0 by the block index maps, and the kernels are
  specialized on which dims are full.
* `is_causal`: top-left aligned, query `t` attends key `s` iff `s <= t`.
* A query row with no attended key yields out = 0, lse = +inf and exactly
  zero gradients.
* Head dims 1..256: tiles are padded to a power of two (at least 16) and the
  loads and stores are masked. T and S need not be multiples of the blocks.
* float16, bfloat16 and float32 inputs; products accumulate in float32 and
  softmax statistics are float32. float32 dots keep float32 accuracy
  (3xTF32 on the GPU, exact float32 in the interpreter).

`forward` returns `(out, lse)` with `lse[b, n, t] = log(sum_s exp(logit))`
(float32, `(B, N, T)`). `backward` recomputes the probabilities from `lse`:
`D = rowsum(dO * O)` (an XLA fusion), one kernel per key block that
accumulates dK/dV over every query head of its group (no atomics), and one
kernel per query block that accumulates dQ. The tile configs are in
`attention_tuning.py`.

Pallas is imported under a guard: a JAX without Pallas (or without its Triton
lowering) only disables this path, and `unavailable_reason()` says why.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from mmkeras.pallas_kernels import attention_tuning as tuning
from mmkeras.triton_kernels.attention_checks import check_attention_inputs
from mmkeras.triton_kernels.attention_constants import LN2, LOG2E

try:
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu
except Exception as e:  # noqa: BLE001  any failure only disables this path
    pl = plgpu = None
    _IMPORT_ERROR = f"jax.experimental.pallas is not usable: {e!r}"
else:
    _IMPORT_ERROR = None

__all__ = ["forward", "backward", "unavailable_reason", "MAX_HEAD_DIM"]

MAX_HEAD_DIM = 256
_DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32)


def unavailable_reason():
    """Why the Pallas kernels cannot be built here (None when they can)."""
    return _IMPORT_ERROR


def _cdiv(a, b):
    return -(-a // b)


def _block_h(h):
    return max(16, tuning.next_pow2(h))


def _precision(dtype, interpret):
    """The dot precision: float32 stays float32-accurate, never plain TF32."""
    if interpret or jnp.dtype(dtype) != jnp.float32:
        return lax.Precision.HIGHEST
    # 3xTF32: tensor cores at about float32 accuracy (exact float32 FMA dots
    # spill registers badly on Hopper; see flash_attention.py).
    return lax.DotAlgorithmPreset.TF32_TF32_F32_X3


# --------------------------------------------------------------------------
# Static description of one call: the kernels are specialized on it.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _MaskDims:
    """Which dims of the rank-4 user mask are full (True) rather than 1."""

    b: bool
    n: bool
    t: bool
    s: bool


@dataclasses.dataclass(frozen=True)
class _Static:
    T: int
    S: int
    H: int
    group: int
    bm: int
    bn: int
    bh: int
    causal: bool
    mask: _MaskDims | None
    scale: float
    precision: object

    @property
    def qk_scale(self):  # logits in base 2
        return self.scale * LOG2E


# --------------------------------------------------------------------------
# In-kernel helpers.
# --------------------------------------------------------------------------


def _and(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def _tile_mask(row_ok, col_ok):
    """2-D load mask from optional row (R,) and column (C,) masks."""
    if row_ok is None and col_ok is None:
        return None
    if col_ok is None:
        return row_ok[:, None]
    if row_ok is None:
        return col_ok[None, :]
    return row_ok[:, None] & col_ok[None, :]


def _load(ref, mask, other=0):
    if mask is None:
        return plgpu.load(ref)
    return plgpu.load(ref, mask=mask, other=other)


def _store(ref, value, mask):
    if mask is None:
        plgpu.store(ref, value)
    else:
        plgpu.store(ref, value, mask=mask)


def _dot(a, b, precision, trans_a=False, trans_b=False):
    """a @ b (optionally transposed operands) accumulated in float32."""
    dims = (((0 if trans_a else 1,), (1 if trans_b else 0,)), ((), ()))
    return lax.dot_general(
        a, b, dims, precision=precision, preferred_element_type=jnp.float32
    )


def _div(x, d):
    """Division of non-negative int32 scalars (no floor-division lowering)."""
    return lax.div(x, jnp.int32(d))


def _col_ok(c):
    """Valid head-dim columns of a padded tile (None when not padded)."""
    if c.bh == c.H:
        return None
    return lax.iota(jnp.int32, c.bh) < c.H


def _fwd_mask_fixed(m_ref, c, row_ok):
    """Query-block mask parts that do not depend on the key block:
    (BM, 1) for a mask full in T only, a scalar for one full in neither."""
    md = c.mask
    if md is None or md.s:
        return None
    if md.t:
        return plgpu.load(m_ref, mask=row_ok, other=False)[:, None]
    return m_ref[...]


def _fwd_mask_tile(m_ref, c, row_ok, start_n, cols, fixed):
    """The user mask for a (query block, key block) tile in the forward and
    dQ kernels (the mask block holds BLOCK_M rows and every key)."""
    md = c.mask
    if md is None:
        return None
    if not md.s:
        return fixed
    col_in = cols < c.S
    if md.t:
        return plgpu.load(
            m_ref.at[:, pl.ds(start_n, c.bn)],
            mask=row_ok[:, None] & col_in[None, :],
            other=False,
        )
    return plgpu.load(
        m_ref.at[pl.ds(start_n, c.bn)], mask=col_in, other=False
    )[None, :]


def _key_block_bounds(c, start_m):
    """(clean, hi): key blocks [0, clean) need no bounds or causal test;
    blocks [clean, hi) need them; later blocks are never attended."""
    if not c.causal:
        return c.S // c.bn, _cdiv(c.S, c.bn)
    hi = jnp.minimum(c.S, start_m + c.bm)
    clean = _div(jnp.minimum(c.S, start_m + 1), c.bn)
    return clean, _div(hi + (c.bn - 1), c.bn)


def _fori(lo, hi, body, carry):
    if isinstance(lo, int) and isinstance(hi, int) and lo >= hi:
        return carry
    return lax.fori_loop(lo, hi, body, carry)


def _query_rows(c):
    """(start_m, rows, row_ok, col_ok) of the query block of a forward or
    dQ program."""
    start_m = pl.program_id(0) * c.bm
    rows = start_m + lax.iota(jnp.int32, c.bm)
    return start_m, rows, rows < c.T, _col_ok(c)


def _over_key_blocks(c, start_m, step, carry):
    """Runs step(j, carry, edge) over the key blocks that the query block at
    start_m attends, the clean ones with edge=False."""
    clean, hi = _key_block_bounds(c, start_m)
    carry = _fori(0, clean, functools.partial(step, edge=False), carry)
    return _fori(clean, hi, functools.partial(step, edge=True), carry)


def _key_block_scores(j, edge, q, k_ref, v_ref, m_ref, c, rows, row_ok,
                      col_ok, fixed):
    """(k, v, s) of key block j for the query block of a forward or dQ
    program: s holds the logits in base 2, -inf where not attended."""
    start_n = pl.multiple_of(j * c.bn, c.bn)
    cols = start_n + lax.iota(jnp.int32, c.bn)
    kv_mask = _tile_mask(cols < c.S if edge else None, col_ok)
    k = _load(k_ref.at[pl.ds(start_n, c.bn), :], kv_mask)
    v = _load(v_ref.at[pl.ds(start_n, c.bn), :], kv_mask)
    s = _dot(q, k, c.precision, trans_b=True) * c.qk_scale
    keep = None
    if edge:
        keep = (cols < c.S)[None, :]
        if c.causal:
            keep = keep & (cols[None, :] <= rows[:, None])
    keep = _and(keep, _fwd_mask_tile(m_ref, c, row_ok, start_n, cols, fixed))
    if keep is not None:
        s = jnp.where(keep, s, -jnp.inf)
    return k, v, s


# --------------------------------------------------------------------------
# Forward.
# --------------------------------------------------------------------------


def _fwd_kernel(*refs, c):
    q_ref, k_ref, v_ref = refs[:3]
    m_ref = refs[3] if c.mask is not None else None
    o_ref, lse_ref = refs[-2:]

    start_m, rows, row_ok, col_ok = _query_rows(c)
    q = _load(q_ref, _tile_mask(row_ok, col_ok))
    fixed = _fwd_mask_fixed(m_ref, c, row_ok)

    def step(j, carry, edge):
        acc, m_i, l_i = carry
        _, v, s = _key_block_scores(j, edge, q, k_ref, v_ref, m_ref, c, rows,
                                    row_ok, col_ok, fixed)
        m_new = jnp.maximum(m_i, jnp.max(s, axis=1))
        # A row with nothing attended so far keeps m = -inf: subtract 0
        # instead, so that exp2 gives 0 rather than NaN.
        m_sub = jnp.where(m_new == -jnp.inf, 0.0, m_new)
        p = jnp.exp2(s - m_sub[:, None])
        alpha = jnp.exp2(m_i - m_sub)
        l_i = l_i * alpha + jnp.sum(p, axis=1)
        acc = acc * alpha[:, None] + _dot(p.astype(v.dtype), v, c.precision)
        return acc, m_new, l_i

    carry = (
        jnp.zeros((c.bm, c.bh), jnp.float32),
        jnp.full((c.bm,), -jnp.inf, jnp.float32),
        jnp.zeros((c.bm,), jnp.float32),
    )
    acc, m_i, l_i = _over_key_blocks(c, start_m, step, carry)

    empty = l_i == 0.0
    l_safe = jnp.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = jnp.where(empty, jnp.inf, m_i * LN2 + jnp.log(l_safe))
    _store(o_ref, out.astype(o_ref.dtype), _tile_mask(row_ok, col_ok))
    plgpu.store(lse_ref, lse, mask=row_ok)


# --------------------------------------------------------------------------
# Backward: dK/dV per key block, dQ per query block.
# --------------------------------------------------------------------------


def _dkdv_kernel(*refs, c):
    q_ref, k_ref, v_ref = refs[:3]
    m_ref = refs[3] if c.mask is not None else None
    do_ref, lse_ref, delta_ref, dk_ref, dv_ref = refs[-5:]
    md = c.mask

    start_n = pl.program_id(0) * c.bn
    cols = start_n + lax.iota(jnp.int32, c.bn)
    col_in = cols < c.S
    col_ok = _col_ok(c)
    kv_mask = _tile_mask(col_in, col_ok)
    k = _load(k_ref, kv_mask)
    v = _load(v_ref, kv_mask)

    def user_mask(g, start_m, row_ok):
        # The mask block holds this key block, every query row and, when
        # the mask is full in N, the group's query heads.
        if md is None:
            return None
        idx = []
        if md.n:
            idx.append(g)
        if md.t:
            idx.append(pl.ds(start_m, c.bm))
        if md.s:
            idx.append(slice(None))
        if not md.t and not md.s:  # one flag per (batch, head)
            return m_ref[tuple(idx)] if idx else m_ref[...]
        # Returned key-major, like the scores: (BLOCK_N, BLOCK_M).
        ref = m_ref.at[tuple(idx)]
        if md.t and md.s:
            return _load(ref, _tile_mask(row_ok, col_in), False).T
        if md.t:
            return _load(ref, row_ok, False)[None, :]
        return _load(ref, col_in, False)[:, None]

    hoisted = None
    if md is not None and not md.n and not md.t:
        hoisted = user_mask(None, None, None)

    def step(m, carry, g, causal_tile, check_rows):
        dk, dv = carry
        start_m = pl.multiple_of(m * c.bm, c.bm)
        rows = start_m + lax.iota(jnp.int32, c.bm)
        row_ok = rows < c.T if check_rows else None
        tile_mask = _tile_mask(row_ok, col_ok)
        q = _load(q_ref.at[pl.ds(start_m, c.bm), g, :], tile_mask)
        do = _load(do_ref.at[pl.ds(start_m, c.bm), g, :], tile_mask)
        # Rows past T read lse = +inf, so their probabilities are 0.
        lse = _load(lse_ref.at[g, pl.ds(start_m, c.bm)], row_ok, jnp.inf)
        delta = _load(delta_ref.at[g, pl.ds(start_m, c.bm)], row_ok)
        # Key-major (transposed) scores, so that no accumulator operand
        # needs a transpose: s_t[j, i] = k_j . q_i.
        s_t = _dot(k, q, c.precision, trans_b=True) * c.qk_scale
        keep = None
        if causal_tile:
            keep = rows[None, :] >= cols[:, None]
        keep = _and(keep, hoisted if hoisted is not None
                    else user_mask(g, start_m, row_ok))
        if keep is not None:
            s_t = jnp.where(keep, s_t, -jnp.inf)
        # Keys past S are not masked here: they only touch rows of dK/dV
        # that are never stored. A fully masked row has lse = +inf: P = 0.
        p_t = jnp.exp2(s_t - (lse * LOG2E)[None, :])
        dv = dv + _dot(p_t.astype(do.dtype), do, c.precision)
        dp_t = _dot(v, do, c.precision, trans_b=True)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = dk + _dot(ds_t.astype(q.dtype), q, c.precision)
        return dk, dv

    n_q = _cdiv(c.T, c.bm)
    t_full = c.T // c.bm
    if c.causal:
        # Query blocks before `lo` never see this key block; blocks from
        # `diag` on see all of it.
        lo = _div(start_n, c.bm)
        diag = jnp.maximum(
            lo, jnp.minimum(n_q, _div(start_n + (c.bn + c.bm - 2), c.bm))
        )
        tail = jnp.maximum(diag, t_full)
    else:
        lo = diag = 0
        tail = t_full

    def per_head(g, carry):
        if c.causal:
            carry = _fori(lo, diag, functools.partial(
                step, g=g, causal_tile=True, check_rows=True), carry)
        carry = _fori(diag, t_full, functools.partial(
            step, g=g, causal_tile=False, check_rows=False), carry)
        carry = _fori(tail, n_q, functools.partial(
            step, g=g, causal_tile=False, check_rows=True), carry)
        return carry

    carry = (
        jnp.zeros((c.bn, c.bh), jnp.float32),
        jnp.zeros((c.bn, c.bh), jnp.float32),
    )
    dk, dv = lax.fori_loop(0, c.group, per_head, carry)
    _store(dk_ref, (dk * c.scale).astype(dk_ref.dtype), kv_mask)
    _store(dv_ref, dv.astype(dv_ref.dtype), kv_mask)


def _dq_kernel(*refs, c):
    q_ref, k_ref, v_ref = refs[:3]
    m_ref = refs[3] if c.mask is not None else None
    do_ref, lse_ref, delta_ref, dq_ref = refs[-4:]

    start_m, rows, row_ok, col_ok = _query_rows(c)
    tile_mask = _tile_mask(row_ok, col_ok)
    q = _load(q_ref, tile_mask)
    do = _load(do_ref, tile_mask)
    lse2 = plgpu.load(lse_ref, mask=row_ok, other=jnp.inf) * LOG2E
    delta = plgpu.load(delta_ref, mask=row_ok, other=0.0)
    fixed = _fwd_mask_fixed(m_ref, c, row_ok)

    def step(j, dq, edge):
        k, v, s = _key_block_scores(j, edge, q, k_ref, v_ref, m_ref, c, rows,
                                    row_ok, col_ok, fixed)
        p = jnp.exp2(s - lse2[:, None])
        dp = _dot(do, v, c.precision, trans_b=True)
        ds = p * (dp - delta[:, None])
        return dq + _dot(ds.astype(k.dtype), k, c.precision)

    dq = jnp.zeros((c.bm, c.bh), jnp.float32)
    dq = _over_key_blocks(c, start_m, step, dq)
    _store(dq_ref, (dq * c.scale).astype(dq_ref.dtype), tile_mask)


# --------------------------------------------------------------------------
# Launchers.
# --------------------------------------------------------------------------


def _require():
    if _IMPORT_ERROR is not None:
        raise RuntimeError(_IMPORT_ERROR)


def _check_inputs(q, k, v, mask, scale):
    B, T, N, H, S, K, scale = check_attention_inputs(
        q, k, v, mask, scale, max_head_dim=MAX_HEAD_DIM,
        dtypes=tuple(jnp.dtype(d) for d in _DTYPES),
        is_bool_mask=lambda m: getattr(m, "dtype", None) == jnp.bool_,
        mask_kind="a bool array")
    dims = None if mask is None else _MaskDims(*(d != 1 for d in mask.shape))
    return B, T, N, H, S, K, dims, scale


def _params(warps, stages, interpret):
    if interpret:
        return None
    return plgpu.CompilerParams(num_warps=warps, num_stages=stages)


def _mask_spec_q(md, c):
    """Mask block of the forward and dQ kernels (grid (i, n, b))."""
    shape = (None, None, c.bm if md.t else None, c.S if md.s else None)

    def index(i, n, b):
        return (b if md.b else 0, n if md.n else 0, i if md.t else 0, 0)

    return pl.BlockSpec(shape, index)


def _q_grid_specs(c, q, k, v, mask):
    """Blocks of the forward and dQ kernels, whose grid is (query block i,
    query head n, batch b): (tile_spec, row_spec, in_specs, args), the last
    two holding q, k, v and the mask when there is one."""

    def kv_index(i, n, b):
        return (b, 0, _div(n, c.group), 0)

    tile_spec = pl.BlockSpec((None, c.bm, None, c.bh),
                             lambda i, n, b: (b, i, n, 0))
    row_spec = pl.BlockSpec((None, None, c.bm), lambda i, n, b: (b, n, i))
    in_specs = [
        tile_spec,
        pl.BlockSpec((None, c.S, None, c.bh), kv_index),
        pl.BlockSpec((None, c.S, None, c.bh), kv_index),
    ]
    args = [q, k, v]
    if c.mask is not None:
        in_specs.append(_mask_spec_q(c.mask, c))
        args.append(mask)
    return tile_spec, row_spec, in_specs, args


def forward(q, k, v, mask=None, is_causal=False, scale=None, interpret=False):
    """Fused attention forward pass.

    Args:
        q: query, `(B, T, N, H)`, float16/bfloat16/float32.
        k: key, `(B, S, K, H)`, same dtype, `N % K == 0`.
        v: value, `(B, S, K, H)`, same dtype.
        mask: None or a bool array of rank 4 whose dims are each 1 or the full
            size of `(B, N, T, S)`; True means attend.
        is_causal: top-left aligned causal masking (query t sees keys s <= t).
        scale: logit scale; defaults to `1 / sqrt(H)`.
        interpret: run in Pallas' interpreter (any platform, slow) instead of
            compiling for the GPU.

    Returns:
        `(out, lse)`: `out` of shape `(B, T, N, H)` in q's dtype and the
        float32 log-sum-exp of the scaled logits, shape `(B, N, T)`
        (+inf for rows that attend no key; their `out` is 0).
    """
    _require()
    B, T, N, H, S, K, md, scale = _check_inputs(q, k, v, mask, scale)
    if B * N * T == 0 or S == 0:
        return (jnp.zeros(q.shape, q.dtype),
                jnp.full((B, N, T), jnp.inf, jnp.float32))
    bh = _block_h(H)
    bm, bn, warps, stages = tuning.config("fwd", q.dtype, bh, T, S, interpret)
    c = _Static(T, S, H, N // K, bm, bn, bh, bool(is_causal), md, scale,
                _precision(q.dtype, interpret))
    tile_spec, row_spec, in_specs, args = _q_grid_specs(c, q, k, v, mask)
    out, lse = pl.pallas_call(
        functools.partial(_fwd_kernel, c=c),
        grid=(_cdiv(T, bm), N, B),
        in_specs=in_specs,
        out_specs=[tile_spec, row_spec],
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((B, N, T), jnp.float32),
        ],
        compiler_params=_params(warps, stages, interpret),
        interpret=interpret,
        name="mmkeras_attention_fwd",
    )(*args)
    return out, lse


def backward(q, k, v, out, lse, dout, mask=None, is_causal=False, scale=None,
             interpret=False):
    """Fused attention backward pass (FlashAttention-2 recomputation).

    Args:
        q, k, v, mask, is_causal, scale, interpret: as given to `forward`.
        out, lse: the outputs of `forward`.
        dout: gradient of `out`, shape `(B, T, N, H)`.

    Returns:
        `(dq, dk, dv)` in the input dtype; dk/dv sum over the query heads
        that share each key/value head. Rows with lse = +inf (nothing
        attended) contribute nothing and get dq = 0.
    """
    _require()
    B, T, N, H, S, K, md, scale = _check_inputs(q, k, v, mask, scale)
    shape = tuple(q.shape)
    if tuple(out.shape) != shape or tuple(dout.shape) != shape:
        raise ValueError(
            "`out` and `dout` must have the shape of `q`. "
            f"Received: q={tuple(q.shape)}, out={tuple(out.shape)}, "
            f"dout={tuple(dout.shape)}"
        )
    if tuple(lse.shape) != (B, N, T):
        raise ValueError(
            f"`lse` must have shape (B, N, T)={(B, N, T)}. "
            f"Received: shape={tuple(lse.shape)}"
        )
    if B * N * T == 0 or S == 0:
        return (jnp.zeros(q.shape, q.dtype), jnp.zeros(k.shape, k.dtype),
                jnp.zeros(v.shape, v.dtype))
    dout = dout.astype(q.dtype)
    lse = lse.astype(jnp.float32)
    # D = rowsum(dO * O) in float32, as (B, N, T): one XLA fusion.
    delta = jnp.sum(
        out.astype(jnp.float32) * dout.astype(jnp.float32), axis=-1
    ).transpose(0, 2, 1)
    group = N // K
    bh = _block_h(H)
    causal = bool(is_causal)
    precision = _precision(q.dtype, interpret)

    # dK, dV: grid (key block j, kv head kh, batch b); each program loops
    # over the `group` query heads of its kv head and over query blocks.
    bm, bn, warps, stages = tuning.config("dkdv", q.dtype, bh, T, S, interpret)
    c = _Static(T, S, H, group, bm, bn, bh, causal, md, scale, precision)
    q_spec = pl.BlockSpec((None, T, group, bh), lambda j, kh, b: (b, 0, kh, 0))
    kv_spec = pl.BlockSpec((None, bn, None, bh), lambda j, kh, b: (b, j, kh, 0))
    row_spec = pl.BlockSpec((None, group, T), lambda j, kh, b: (b, kh, 0))
    in_specs = [q_spec, kv_spec, kv_spec]
    args = [q, k, v]
    if md is not None:
        shape = (None, group if md.n else None, T if md.t else None,
                 bn if md.s else None)

        def mask_index(j, kh, b):
            return (b if md.b else 0, kh if md.n else 0, 0, j if md.s else 0)

        in_specs.append(pl.BlockSpec(shape, mask_index))
        args.append(mask)
    in_specs += [q_spec, row_spec, row_spec]
    args += [dout, lse, delta]
    dk, dv = pl.pallas_call(
        functools.partial(_dkdv_kernel, c=c),
        grid=(_cdiv(S, bn), K, B),
        in_specs=in_specs,
        out_specs=[kv_spec, kv_spec],
        out_shape=[
            jax.ShapeDtypeStruct(k.shape, k.dtype),
            jax.ShapeDtypeStruct(v.shape, v.dtype),
        ],
        compiler_params=_params(warps, stages, interpret),
        interpret=interpret,
        name="mmkeras_attention_bwd_dkdv",
    )(*args)

    # dQ: grid (query block i, query head n, batch b), like the forward.
    bm, bn, warps, stages = tuning.config("dq", q.dtype, bh, T, S, interpret)
    c = _Static(T, S, H, group, bm, bn, bh, causal, md, scale, precision)
    tile_spec, row_spec, in_specs, args = _q_grid_specs(c, q, k, v, mask)
    in_specs += [tile_spec, row_spec, row_spec]
    args += [dout, lse, delta]
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, c=c),
        grid=(_cdiv(T, bm), N, B),
        in_specs=in_specs,
        out_specs=tile_spec,
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=_params(warps, stages, interpret),
        interpret=interpret,
        name="mmkeras_attention_bwd_dq",
    )(*args)
    return dq, dk, dv
