"""Tests of the FlashAttention-2 Triton kernels, run with TRITON_INTERPRET=1.

The kernels run on CPU torch tensors in Triton's interpreter (see conftest.py),
at small shapes, against the float64 numpy oracle (tests/numpy_oracle.py). The
interpreter uses the same small fixed block config (BLOCK_M != BLOCK_N) as
documented in flash_attention_tuning.py, so odd lengths span several partial
blocks.
"""

import math

import numpy as np
import pytest
from triton_interpreter import skip_unless_interpreted

skip_unless_interpreted(gpu_check="python -m mmkeras.benchmarks.gpu_check")

import torch  # noqa: E402
from numpy_oracle import allowed_np  # noqa: E402
from numpy_oracle import attention_lse_np as reference  # noqa: E402

from mmkeras.triton_kernels import flash_attention as fa  # noqa: E402
from mmkeras.triton_kernels import (  # noqa: E402
    flash_attention_tuning as fa_tuning,
)
from mmkeras.backend import torch_attention_triton as torch_ops  # noqa: E402


def rel_err(x, ref):
    """norm(x - ref) / norm(ref).

    Where the reference is zero in exact arithmetic (dq and dk when every
    query sees a single key: P = 1, so dS = dP - D = 0) the relative error is
    meaningless; the max absolute error is returned instead (fp32 rounding
    noise there is of the order of 1e-7).
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().to(torch.float64).numpy()
    ref = np.asarray(ref, dtype=np.float64)
    den = np.linalg.norm(ref)
    if den <= 1e-12 * math.sqrt(max(ref.size, 1)):
        return np.abs(x - ref).max()
    return np.linalg.norm(x - ref) / den


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """Output buffers start as NaN, so an unwritten element shows up."""

    def empty_like(x):
        return torch.full_like(
            x, float("nan"), memory_format=torch.contiguous_format
        )

    def empty(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(fa, "_empty_like", empty_like)
    monkeypatch.setattr(fa, "_empty", empty)


def make_inputs(B, T, S, N, K, H, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, N, H, generator=gen).to(dtype)
    k = torch.randn(B, S, K, H, generator=gen).to(dtype)
    v = torch.randn(B, S, K, H, generator=gen).to(dtype)
    dout = torch.randn(B, T, N, H, generator=gen).to(dtype)
    return q, k, v, dout


def make_mask(kind, B, N, T, S, seed=1):
    """Masks of several broadcast shapes; some leave query rows empty."""
    if kind is None:
        return None
    gen = torch.Generator().manual_seed(seed)
    if kind == "padding":  # (B, 1, 1, S): each batch keeps a prefix of keys
        lengths = torch.randint(1, S + 1, (B,), generator=gen)
        lengths[0] = S
        keep = torch.arange(S)[None, :] < lengths[:, None]
        return keep[:, None, None, :]
    if kind == "full":  # (B, N, T, S) random, with fully masked rows
        m = torch.rand(B, N, T, S, generator=gen) < 0.6
        m[:, :, T // 2] = False
        m[0, -1, 0] = False
        return m
    if kind == "heads":  # (1, N, T, S)
        m = torch.rand(1, N, T, S, generator=gen) < 0.5
        m[0, 0, -1] = False
        return m
    if kind == "queries":  # (B, 1, T, 1): whole query rows dropped
        m = torch.rand(B, 1, T, 1, generator=gen) < 0.7
        m[0, 0, 0, 0] = False
        return m
    raise ValueError(kind)


def check_finite_outputs(out, lse, grads, empty_rows):
    assert torch.isfinite(out).all(), "out has NaN/inf"
    for name, g in zip(("dq", "dk", "dv"), grads):
        assert torch.isfinite(g).all(), f"{name} has NaN/inf"
    assert not torch.isnan(lse).any(), "lse has NaN"
    # +inf exactly where no key is attended, finite elsewhere.
    np.testing.assert_array_equal(torch.isposinf(lse).numpy(), empty_rows)
    assert torch.isfinite(lse[torch.from_numpy(~empty_rows)]).all()


# --------------------------------------------------------------------------
# fp32 against float64
# --------------------------------------------------------------------------

# (B, T, S, N, K, H, is_causal, mask kind)
FP32_CASES = [
    (1, 17, 17, 4, 4, 64, False, None),
    (1, 17, 17, 4, 4, 64, True, None),
    (2, 1, 17, 2, 1, 40, False, "padding"),
    (1, 129, 33, 4, 1, 40, True, None),  # T > S: late rows see every key
    (1, 17, 129, 8, 2, 80, True, "padding"),  # S > T: late keys never seen
    (1, 33, 17, 4, 1, 128, False, "full"),
    (1, 129, 129, 2, 1, 64, True, "full"),
    (1, 33, 129, 8, 1, 64, False, "padding"),  # GQA 8/1, partial key block
    (2, 17, 20, 4, 2, 96, True, "heads"),
    (2, 20, 17, 4, 4, 80, False, "queries"),
    (1, 17, 1, 2, 2, 8, True, None),  # S = 1, tiny head dim padded to 16
    (1, 3, 5, 2, 1, 256, False, None),
]


def _case_id(c):
    B, T, S, N, K, H, causal, mask = c
    kind = "causal" if causal else "full"
    return f"B{B}-T{T}-S{S}-N{N}K{K}-H{H}-{kind}-{mask}"


@pytest.mark.parametrize("case", FP32_CASES, ids=_case_id)
def test_fp32_forward_backward_match_float64(case):
    B, T, S, N, K, H, is_causal, mask_kind = case
    q, k, v, dout = make_inputs(B, T, S, N, K, H)
    mask = make_mask(mask_kind, B, N, T, S)
    out, lse = fa.forward(q, k, v, mask=mask, is_causal=is_causal)
    grads = fa.backward(q, k, v, out, lse, dout, mask=mask, is_causal=is_causal)

    r_out, r_lse, r_dq, r_dk, r_dv = reference(
        q.numpy(), k.numpy(), v.numpy(), dout.numpy(),
        None if mask is None else mask.numpy(), is_causal,
    )
    empty = np.isinf(r_lse)
    assert out.dtype == torch.float32 and out.shape == q.shape
    assert lse.dtype == torch.float32 and lse.shape == (B, N, T)
    check_finite_outputs(out, lse, grads, empty)
    assert rel_err(out, r_out) <= 1e-5
    assert rel_err(lse.numpy()[~empty], r_lse[~empty]) <= 1e-5
    for name, g, r in zip(("dq", "dk", "dv"), grads, (r_dq, r_dk, r_dv)):
        assert g.shape == r.shape and g.dtype == torch.float32
        assert rel_err(g, r) <= 1e-5, name
    # Rows with nothing to attend: exactly zero output and query gradient.
    if empty.any():
        empty_btn = torch.from_numpy(empty.transpose(0, 2, 1))
        assert (out[empty_btn] == 0).all()
        assert (grads[0][empty_btn] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_grouped_query_split_dkdv_pass(monkeypatch, dtype):
    """dK/dV via per-query-head buffers (used on a GPU with few programs)."""
    monkeypatch.setattr(fa_tuning, "_FORCE_GQA_SPLIT", True)
    B, T, S, N, K, H = 1, 20, 33, 8, 2, 40
    q, k, v, dout = make_inputs(B, T, S, N, K, H, dtype=dtype, seed=13)
    mask = make_mask("padding", B, N, T, S)
    out, lse = fa.forward(q, k, v, mask=mask, is_causal=True)
    dq, dk, dv = fa.backward(q, k, v, out, lse, dout, mask=mask, is_causal=True)
    monkeypatch.setattr(fa_tuning, "_FORCE_GQA_SPLIT", False)
    _, dk_ref, dv_ref = fa.backward(
        q, k, v, out, lse, dout, mask=mask, is_causal=True
    )
    assert dk.dtype == dtype and dv.dtype == dtype and dk.shape == k.shape
    ref = reference(
        q.double().numpy(), k.double().numpy(), v.double().numpy(),
        dout.double().numpy(), mask.numpy(), True,
    )
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert rel_err(dk, ref[3]) <= tol and rel_err(dv, ref[4]) <= tol
    # Same result as the fused group loop, up to the final rounding.
    assert rel_err(dk, dk_ref.double().numpy()) <= tol / 2
    assert rel_err(dv, dv_ref.double().numpy()) <= tol / 2


def test_scale_non_contiguous_inputs_and_broadcast_dout():
    B, T, S, N, K, H = 1, 19, 23, 4, 2, 48
    gen = torch.Generator().manual_seed(3)
    # (B, N, T, H) storage viewed as (B, T, N, H): non-unit, permuted strides.
    q = torch.randn(B, N, T, H, generator=gen).transpose(1, 2)
    k = torch.randn(B, K, S, H, generator=gen).transpose(1, 2)
    v = torch.randn(B, S, K, 2 * H, generator=gen)[..., ::2]  # stride 2 on H
    dout = torch.randn(1, 1, 1, H, generator=gen).expand(B, T, N, H)  # stride 0
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    scale = 0.37
    out, lse = fa.forward(q, k, v, is_causal=True, scale=scale)
    dq, dk, dv = fa.backward(
        q, k, v, out, lse, dout, is_causal=True, scale=scale
    )
    ref = reference(
        q.numpy(), k.numpy(), v.numpy(), dout.numpy(), None, True, scale
    )
    for got, r in zip((out, lse, dq, dk, dv), ref):
        assert rel_err(got, r) <= 1e-5


# --------------------------------------------------------------------------
# fp16 / bf16: at most twice the error of torch computing in that dtype
# --------------------------------------------------------------------------


def torch_low_precision(q, k, v, dout, mask, is_causal):
    """Plain torch attention computed in q's dtype (with autograd)."""
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    g = N // K
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    qh = q.transpose(1, 2)
    kh = k.repeat_interleave(g, 2).transpose(1, 2)
    vh = v.repeat_interleave(g, 2).transpose(1, 2)
    allow = torch.from_numpy(
        allowed_np(
            B, N, T, S, None if mask is None else mask.numpy(), is_causal
        )
    )
    logits = (qh @ kh.transpose(-1, -2)) * (1.0 / math.sqrt(H))
    logits = logits.masked_fill(~allow, float("-inf"))
    p = torch.softmax(logits, -1)
    p = torch.where(allow.any(-1, keepdim=True), p, torch.zeros_like(p))
    out = (p @ vh).transpose(1, 2)
    out.backward(dout)
    return out.detach(), q.grad, k.grad, v.grad


LOW_CASES = [
    (torch.float16, (1, 33, 40, 4, 1, 64, True, "full")),
    (torch.float16, (2, 17, 17, 4, 2, 80, False, "padding")),
    (torch.bfloat16, (1, 33, 40, 4, 1, 64, True, "full")),
    (torch.bfloat16, (2, 17, 17, 4, 2, 40, False, None)),
]


@pytest.mark.parametrize(
    "dtype,case",
    LOW_CASES,
    ids=[f"{str(d)[6:]}-{_case_id(c)}" for d, c in LOW_CASES],
)
def test_low_precision_within_twice_torch_error(dtype, case):
    B, T, S, N, K, H, is_causal, mask_kind = case
    q, k, v, dout = make_inputs(B, T, S, N, K, H, dtype=dtype, seed=5)
    mask = make_mask(mask_kind, B, N, T, S)
    out, lse = fa.forward(q, k, v, mask=mask, is_causal=is_causal)
    grads = fa.backward(q, k, v, out, lse, dout, mask=mask, is_causal=is_causal)
    assert out.dtype == dtype and lse.dtype == torch.float32
    assert all(g.dtype == dtype for g in grads)

    # float64 truth on the (exactly representable) low-precision inputs.
    r_out, r_lse, r_dq, r_dk, r_dv = reference(
        q.double().numpy(), k.double().numpy(), v.double().numpy(),
        dout.double().numpy(), None if mask is None else mask.numpy(),
        is_causal,
    )
    t_out, t_dq, t_dk, t_dv = torch_low_precision(
        q, k, v, dout, mask, is_causal
    )
    empty = np.isinf(r_lse)
    check_finite_outputs(out, lse, grads, empty)
    assert rel_err(lse.numpy()[~empty], r_lse[~empty]) <= 1e-5
    for name, got, base, r in (
        ("out", out, t_out, r_out),
        ("dq", grads[0], t_dq, r_dq),
        ("dk", grads[1], t_dk, r_dk),
        ("dv", grads[2], t_dv, r_dv),
    ):
        ours, theirs = rel_err(got, r), rel_err(base, r)
        assert ours <= 2 * theirs, (
            f"{name}: {ours:.3g} > 2 x torch {theirs:.3g}"
        )


# --------------------------------------------------------------------------
# Edge cases and validation (no or tiny launches)
# --------------------------------------------------------------------------


def test_empty_key_sequence_gives_zeros_and_inf():
    q, k, v, dout = make_inputs(1, 3, 0, 2, 1, 16)
    out, lse = fa.forward(q, k, v)
    assert (out == 0).all() and torch.isposinf(lse).all()
    dq, dk, dv = fa.backward(q, k, v, out, lse, dout)
    assert (dq == 0).all() and dk.shape == k.shape and dv.shape == v.shape


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(k_shape=(1, 5, 3, 16)), ValueError, "multiple"),
        (dict(h=300), ValueError, "Head dim"),
        (dict(mask_shape=(1, 2, 4, 3)), ValueError, "mask"),
        (dict(mask_shape=(4, 5)), ValueError, "mask"),
        (dict(mask_dtype=torch.float32), TypeError, "mask"),
        (dict(kv_dtype=torch.float16), TypeError, "dtype"),
        (dict(q_dtype=torch.float64), TypeError, "float16"),
    ],
)
def test_bad_inputs_raise(kwargs, error, match):
    h = kwargs.get("h", 16)
    q = torch.zeros(1, 4, 2, h, dtype=kwargs.get("q_dtype", torch.float32))
    k = torch.zeros(
        kwargs.get("k_shape", (1, 5, 1, h)),
        dtype=kwargs.get("kv_dtype", q.dtype),
    )
    v = torch.zeros(k.shape, dtype=q.dtype)
    mask = None
    if "mask_shape" in kwargs or "mask_dtype" in kwargs:
        mask = torch.ones(
            kwargs.get("mask_shape", (1, 1, 1, 5)),
            dtype=kwargs.get("mask_dtype", torch.bool),
        )
    with pytest.raises(error, match=match) as info:
        fa.forward(q, k, v, mask=mask)
    assert "Received" in str(info.value)


# --------------------------------------------------------------------------
# torch custom ops and autograd
# --------------------------------------------------------------------------


def test_attention_autograd_matches_reference_including_lse_grad():
    B, T, S, N, K, H = 1, 17, 21, 4, 2, 40
    q, k, v, dout = make_inputs(B, T, S, N, K, H, seed=7)
    mask = make_mask("padding", B, N, T, S)
    qr, kr, vr = (x.clone().requires_grad_() for x in (q, k, v))
    out = torch_ops.attention(qr, kr, vr, mask=mask, is_causal=True)
    out.backward(dout)
    ref = reference(
        q.numpy(), k.numpy(), v.numpy(), dout.numpy(), mask.numpy(), True
    )
    assert rel_err(out, ref[0]) <= 1e-5
    for g, r in zip((qr.grad, kr.grad, vr.grad), ref[2:]):
        assert rel_err(g, r) <= 1e-5

    # Gradient flowing into lse as well (d lse / d logits = P).
    dlse = torch.randn(B, N, T, generator=torch.Generator().manual_seed(8))
    qr, kr, vr = (x.clone().requires_grad_() for x in (q, k, v))
    out, lse = torch.ops.mmkeras.triton_attention_fwd(
        qr, kr, vr, mask, True, 0.2
    )
    ((out * dout).sum() + (lse * dlse).sum()).backward()
    ref = reference(
        q.numpy(), k.numpy(), v.numpy(), dout.numpy(), mask.numpy(), True, 0.2,
        dlse=dlse.numpy(),
    )
    for g, r in zip((qr.grad, kr.grad, vr.grad), ref[2:]):
        assert rel_err(g, r) <= 1e-5


def test_opcheck_custom_ops():
    B, T, S, N, K, H = 1, 5, 7, 2, 1, 16
    q, k, v, dout = make_inputs(B, T, S, N, K, H, seed=9)
    mask = make_mask("padding", B, N, T, S)
    q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
    fwd = torch.ops.mmkeras.triton_attention_fwd.default
    bwd = torch.ops.mmkeras.triton_attention_bwd.default
    torch.library.opcheck(fwd, (q, k, v, mask, True, 0.25))
    torch.library.opcheck(fwd, (q, k, v, None, False, 0.25))
    with torch.no_grad():
        out, lse = fwd(q, k, v, mask, True, 0.25)
    dlse = torch.randn(B, N, T)
    args = (q.detach(), k.detach(), v.detach(), out, lse, dout)
    torch.library.opcheck(bwd, (*args, dlse, mask, True, 0.25))
    torch.library.opcheck(bwd, (*args, None, None, False, 0.25))


def test_reference_gradients_match_torch_autograd():
    """Self-check of the numpy reference's hand-written backward."""
    B, T, S, N, K, H = 2, 5, 6, 4, 2, 3
    q, k, v, dout = (x.double() for x in make_inputs(B, T, S, N, K, H, seed=11))
    gen = torch.Generator().manual_seed(12)
    mask = torch.rand(B, N, T, S, generator=gen) < 0.6
    mask[..., 0] = True  # no empty rows: torch's softmax would give NaN there
    qr, kr, vr = (x.clone().requires_grad_() for x in (q, k, v))
    g = N // K
    logits = torch.einsum(
        "btnh,bsnh->bnts", qr, kr.repeat_interleave(g, 2)
    ) / math.sqrt(H)
    allow = torch.from_numpy(allowed_np(B, N, T, S, mask.numpy(), True))
    p = torch.softmax(logits.masked_fill(~allow, float("-inf")), -1)
    out = torch.einsum("bnts,bsnh->btnh", p, vr.repeat_interleave(g, 2))
    out.backward(dout)
    ref = reference(
        q.numpy(), k.numpy(), v.numpy(), dout.numpy(), mask.numpy(), True
    )
    for got, r in zip((out, qr.grad, kr.grad, vr.grad), (ref[0], *ref[2:])):
        assert rel_err(got, r) <= 1e-12


def test_autotune_space_pruning(monkeypatch):
    """The GPU config choice (only exercised here: one config in interpret)."""
    space = {
        64: [(128, 64, 8, 3), (64, 64, 4, 3), (128, 128, 8, 2)],
        128: [(64, 32, 4, 2)],
        256: [(16, 32, 4, 2)],
    }
    space_fp32 = {h: [(32, 32, 4, 2)] for h in (64, 128, 256)}
    tuner = fa_tuning.make_autotune(space, space_fp32)(fa._attn_fwd_kernel)
    prune = tuner.early_config_prune

    def picked(t, s, block_h, precision=None):
        args = {"T_BUCKET": t, "S_BUCKET": s}
        configs = prune(
            tuner.configs, args, BLOCK_H=block_h, PRECISION=precision
        )
        return [
            (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps,
             c.num_stages)
            for c in configs
        ]

    assert len(tuner.configs) == 6  # union without duplicates
    assert picked(4096, 4096, 64) == space[64]
    assert picked(4096, 4096, 32) == space[64]  # head dims <= 64 share
    assert picked(4096, 4096, 128) == space[128]
    assert picked(4096, 4096, 256) == space[256]
    assert picked(4096, 4096, 64, "ieee") == space_fp32[64]
    assert picked(4096, 4096, 64, "tf32x3") == space_fp32[64]
    # Short sequences drop tiles longer than 64 along that axis.
    assert picked(16, 4096, 64) == [(64, 64, 4, 3)]
    assert picked(4096, 32, 64) == [(128, 64, 8, 3), (64, 64, 4, 3)]
    monkeypatch.setattr(fa_tuning, "_AUTOTUNE", False)
    assert picked(4096, 4096, 64) == [(128, 64, 8, 3)]
