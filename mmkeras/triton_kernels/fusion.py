"""Triton kernels of the fused fusion-layer cores: `gated_fusion` (Gated
Multimodal Unit) and `low_rank_fusion` (LMF), forward and backward.

The contract (layouts, formulas, masks, what is saved) is the one of the C++
kernels, kernels/cpu/fusion.h. Shape letters: M modalities, B batch, D
features, R rank, O output features.

* gated:    h, g (M, B, D) -> out (B, D),
            out[b, d] = sum over present m of sigmoid(g) * tanh(h);
            dh = dout * sigmoid(g) * (1 - tanh(h)^2),
            dg = dout * tanh(h) * sigmoid(g) * sigmoid(-g).
* low-rank: f (M, R, B, O) -> out (B, O),
            out[b, o] = sum_r prod_m f'[m, r, b, o] (f' = 1 when m absent);
            df[m] = dout * prod_{m' != m} f'[m'] (no division).
* mask: optional (B, M) bool/uint8, nonzero = present. Absent modalities get
  zero gradients (and are never read); a sample with no modality present
  gets out = 0 (gated) or R (low-rank).

Inputs and outputs are float32 (the op layer casts). Every kernel is
element-wise over the flattened (B, D) / (B, O) plane, one program per block
of elements, with short runtime loops over the modalities and the rank: one
pass over the inputs, nothing saved between forward and backward beyond the
inputs. The low-rank backward forms each leave-one-out product directly
(M - 1 multiplies per modality; the re-read factors are cache hits), which is
exact where factors are zero.

Launchers take an optional `wrap` (`torch.library.wrap_triton` from
`mmkeras.backend.torch_fusion_triton`) applied to each kernel before launching it.
"""

import torch
import triton
import triton.language as tl

from mmkeras.triton_kernels import flash_attention as _fa

__all__ = [
    "gated_fusion_forward",
    "gated_fusion_backward",
    "low_rank_fusion_forward",
    "low_rank_fusion_backward",
]

_INTERPRET = _fa._INTERPRET

# Elements per program and warps (untuned). The tests' sizes (17 x 129, ...)
# still span several programs with a partial last block.
_BLOCK = 1024
_NUM_WARPS = 4


# --------------------------------------------------------------------------
# Activations (exp-based: portable between the GPU and the interpreter,
# which has no libdevice).
# --------------------------------------------------------------------------


@triton.jit
def _tanh_pair(x):
    """tanh(x) and 1 - tanh(x)^2, both to a few ulp, without cancellation.

    With e = exp(-2|x|) <= 1: tanh|x| = (1 - e) / (1 + e) and
    1 - tanh^2 = 4e / (1 + e)^2. Below |x| = 1/4, where 1 - e cancels, tanh
    is its odd Taylor polynomial through x^9 (remainder < 3e-9 relative).
    """
    ax = tl.abs(x)
    e = tl.exp(-2.0 * ax)
    inv = 1.0 / (1.0 + e)
    x2 = ax * ax
    poly = 62.0 / 2835.0
    poly = poly * x2 - 17.0 / 315.0
    poly = poly * x2 + 2.0 / 15.0
    poly = poly * x2 - 1.0 / 3.0
    poly = poly * x2 + 1.0
    ta = tl.where(ax < 0.25, ax * poly, (1.0 - e) * inv)
    t = tl.where(x < 0.0, -ta, ta)
    dt = 4.0 * e * inv * inv
    return t, dt


@triton.jit
def _sigmoid_pair(x):
    """sigmoid(x) and sigmoid(-x) = 1 - sigmoid(x), without cancellation."""
    e = tl.exp(-tl.abs(x))
    inv = 1.0 / (1.0 + e)
    small = e * inv
    pos = tl.where(x >= 0.0, inv, small)
    neg = tl.where(x >= 0.0, small, inv)
    return pos, neg


@triton.jit
def _present(mask_ptr, b, m, M, inb, HAS_MASK: tl.constexpr):
    """Presence of modality m for the samples `b` of a block (bool)."""
    if HAS_MASK:
        p = tl.load(mask_ptr + b * M + m, mask=inb, other=0) != 0
        p = p & inb
    else:
        p = inb
    return p


@triton.jit
def _block(n, row_len, BLOCK: tl.constexpr):
    """This program's offsets into a flattened plane of n elements, which of
    them are in range, and their samples (rows of row_len elements)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < n, offs // row_len


# --------------------------------------------------------------------------
# Gated fusion
# --------------------------------------------------------------------------


@triton.jit
def _gated_terms(hp, gp, mask_ptr, b, m, M, inb, HAS_MASK: tl.constexpr):
    """Presence of modality m, then tanh(h) and 1 - tanh(h)^2, sigmoid(g)
    and sigmoid(-g) (absent modalities are not read)."""
    keep = _present(mask_ptr, b, m, M, inb, HAS_MASK)
    h = tl.load(hp, mask=keep, other=0.0).to(tl.float32)
    g = tl.load(gp, mask=keep, other=0.0).to(tl.float32)
    t, dt = _tanh_pair(h)
    s, sn = _sigmoid_pair(g)
    return keep, t, dt, s, sn


@triton.jit
def _gated_fwd_kernel(
    h_ptr, g_ptr, mask_ptr, out_ptr,
    M, BD, D,
    HAS_MASK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs, inb, b = _block(BD, D, BLOCK)
    hp = h_ptr + offs
    gp = g_ptr + offs
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for m in range(M):
        keep, t, _dt, s, _sn = _gated_terms(
            hp, gp, mask_ptr, b, m, M, inb, HAS_MASK
        )
        acc += tl.where(keep, s * t, 0.0)
        hp += BD
        gp += BD
    tl.store(out_ptr + offs, acc, mask=inb)


@triton.jit
def _gated_bwd_kernel(
    h_ptr, g_ptr, mask_ptr, dout_ptr, dh_ptr, dg_ptr,
    M, BD, D,
    HAS_MASK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs, inb, b = _block(BD, D, BLOCK)
    dout = tl.load(dout_ptr + offs, mask=inb, other=0.0).to(tl.float32)
    hp = h_ptr + offs
    gp = g_ptr + offs
    dhp = dh_ptr + offs
    dgp = dg_ptr + offs
    for m in range(M):
        keep, t, dt, s, sn = _gated_terms(
            hp, gp, mask_ptr, b, m, M, inb, HAS_MASK
        )
        dh = tl.where(keep, dout * s * dt, 0.0)
        dg = tl.where(keep, dout * t * s * sn, 0.0)
        tl.store(dhp, dh, mask=inb)
        tl.store(dgp, dg, mask=inb)
        hp += BD
        gp += BD
        dhp += BD
        dgp += BD


# --------------------------------------------------------------------------
# Low-rank fusion
# --------------------------------------------------------------------------


@triton.jit
def _low_rank_fwd_kernel(
    f_ptr, mask_ptr, out_ptr,
    M, R, BO, RBO, O,
    HAS_MASK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs, inb, b = _block(BO, O, BLOCK)
    base = f_ptr + offs  # f[0, r] of this block
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for _r in range(R):
        prod = tl.full((BLOCK,), 1.0, dtype=tl.float32)
        fp = base
        for m in range(M):
            keep = _present(mask_ptr, b, m, M, inb, HAS_MASK)
            prod *= tl.load(fp, mask=keep, other=1.0).to(tl.float32)
            fp += RBO
        acc += prod
        base += BO
    tl.store(out_ptr + offs, acc, mask=inb)


@triton.jit
def _low_rank_bwd_kernel(
    f_ptr, mask_ptr, dout_ptr, df_ptr,
    M, R, BO, RBO, O,
    HAS_MASK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs, inb, b = _block(BO, O, BLOCK)
    dout = tl.load(dout_ptr + offs, mask=inb, other=0.0).to(tl.float32)
    base = f_ptr + offs
    dbase = df_ptr + offs
    for _r in range(R):
        dfp = dbase
        for m in range(M):
            keep = _present(mask_ptr, b, m, M, inb, HAS_MASK)
            # dout * prod over the other present modalities: an absent or
            # excluded factor reads as the neutral 1 (and is not loaded).
            prod = dout
            fp = base
            for m2 in range(M):
                other = _present(mask_ptr, b, m2, M, inb, HAS_MASK)
                other = other & (m2 != m)
                prod *= tl.load(fp, mask=other, other=1.0).to(tl.float32)
                fp += RBO
            tl.store(dfp, tl.where(keep, prod, 0.0), mask=inb)
            dfp += RBO
        base += BO
        dbase += BO


# --------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------


# Output allocation; module-level so that tests can poison (NaN-fill) it to
# prove that the kernels write every element.
def _empty(shape, dtype, device):
    return torch.empty(shape, dtype=dtype, device=device)


def _launch(wrap, kernel, mask, n, *args):
    """Launches `kernel` with one program per _BLOCK of its n elements."""
    _fa._check_runnable()
    wrap(kernel)[(triton.cdiv(n, _BLOCK),)](
        *args,
        HAS_MASK=mask is not None,
        BLOCK=_BLOCK,
        num_warps=_NUM_WARPS,
    )


def _check_float32(pairs):
    for name, x in pairs:
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"`{name}` must be a torch.Tensor. Received: {type(x)}"
            )
        if x.dtype != torch.float32:
            raise TypeError(
                f"`{name}` must be float32 (the op layer casts other dtypes). "
                f"Received: {name}.dtype={x.dtype}"
            )
    device = pairs[0][1].device
    for name, x in pairs[1:]:
        if x.device != device:
            raise ValueError(
                f"`{name}` must be on the device of `{pairs[0][0]}` "
                f"({device}). Received: {name}.device={x.device}"
            )


def _mask_arg(mask, B, M, like):
    """(B, M) bool/uint8 mask -> contiguous uint8 tensor, or `like` (unused
    pointer) when there is no mask."""
    if mask is None:
        return like
    if not isinstance(mask, torch.Tensor) or mask.dtype not in (
        torch.bool, torch.uint8
    ):
        raise TypeError(
            "`mask` must be a bool (or uint8) torch.Tensor of shape (B, M). "
            f"Received: {getattr(mask, 'dtype', type(mask))}"
        )
    if tuple(mask.shape) != (B, M):
        raise ValueError(
            f"`mask` must have shape (B, M)={(B, M)}. "
            f"Received: mask.shape={tuple(mask.shape)}"
        )
    if mask.device != like.device:
        raise ValueError(
            f"`mask` must be on the device of the inputs ({like.device}). "
            f"Received: mask.device={mask.device}"
        )
    mask = mask.contiguous()
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask


def _check_gated(h, g):
    _check_float32([("h", h), ("g", g)])
    if h.ndim != 3 or tuple(g.shape) != tuple(h.shape) or h.shape[0] < 1:
        raise ValueError(
            "`h` and `g` must both have shape (M, B, D) with M >= 1. "
            f"Received: h.shape={tuple(h.shape)}, g.shape={tuple(g.shape)}"
        )
    return tuple(h.shape)


def _check_low_rank(f):
    _check_float32([("f", f)])
    if f.ndim != 4 or f.shape[0] < 1 or f.shape[1] < 1:
        raise ValueError(
            "`f` must have shape (M, R, B, O) with M >= 1 and R >= 1. "
            f"Received: f.shape={tuple(f.shape)}"
        )
    return tuple(f.shape)


def _check_dout(dout, shape):
    _check_float32([("dout", dout)])
    if tuple(dout.shape) != tuple(shape):
        raise ValueError(
            f"`dout` must have shape {tuple(shape)}. "
            f"Received: dout.shape={tuple(dout.shape)}"
        )


def gated_fusion_forward(h, g, mask=None, wrap=_fa._identity):
    """out (B, D) = sum over present m of sigmoid(g[m]) * tanh(h[m]).

    Args:
        h, g: (M, B, D) float32 projections and gate logits.
        mask: optional (B, M) bool/uint8, True = present; None = all present.
        wrap: applied to the kernel before launching it.
    """
    M, B, D = _check_gated(h, g)
    mask_arg = _mask_arg(mask, B, M, h)
    out = _empty((B, D), torch.float32, h.device)
    if B * D == 0:
        return out
    h, g = h.contiguous(), g.contiguous()
    _launch(wrap, _gated_fwd_kernel, mask, B * D,
            h, g, mask_arg, out, M, B * D, D)
    return out


def gated_fusion_backward(h, g, mask, dout, wrap=_fa._identity):
    """(dh, dg), each (M, B, D) float32, for the cotangent dout (B, D)."""
    M, B, D = _check_gated(h, g)
    _check_dout(dout, (B, D))
    mask_arg = _mask_arg(mask, B, M, h)
    dh = _empty((M, B, D), torch.float32, h.device)
    dg = _empty((M, B, D), torch.float32, h.device)
    if B * D == 0:
        return dh, dg
    h, g, dout = h.contiguous(), g.contiguous(), dout.contiguous()
    _launch(wrap, _gated_bwd_kernel, mask, B * D,
            h, g, mask_arg, dout, dh, dg, M, B * D, D)
    return dh, dg


def low_rank_fusion_forward(f, mask=None, wrap=_fa._identity):
    """out (B, O) = sum_r prod_m f'[m, r] (f' = 1 for an absent modality).

    Args:
        f: (M, R, B, O) float32 factors.
        mask: optional (B, M) bool/uint8, True = present; None = all present.
        wrap: applied to the kernel before launching it.
    """
    M, R, B, O = _check_low_rank(f)
    mask_arg = _mask_arg(mask, B, M, f)
    out = _empty((B, O), torch.float32, f.device)
    if B * O == 0:
        return out
    f = f.contiguous()
    _launch(wrap, _low_rank_fwd_kernel, mask, B * O,
            f, mask_arg, out, M, R, B * O, R * B * O, O)
    return out


def low_rank_fusion_backward(f, mask, dout, wrap=_fa._identity):
    """df (M, R, B, O) float32 for the cotangent dout (B, O)."""
    M, R, B, O = _check_low_rank(f)
    _check_dout(dout, (B, O))
    mask_arg = _mask_arg(mask, B, M, f)
    df = _empty((M, R, B, O), torch.float32, f.device)
    if B * O == 0:
        return df
    f, dout = f.contiguous(), dout.contiguous()
    _launch(wrap, _low_rank_bwd_kernel, mask, B * O,
            f, mask_arg, dout, df, M, R, B * O, R * B * O, O)
    return df
