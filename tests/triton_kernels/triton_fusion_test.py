"""Tests of the Triton fusion (gated, low-rank) and contrastive kernels, run
with TRITON_INTERPRET=1 on CPU torch tensors, against the float64 numpy
oracles of tests/numpy_oracle.py (gated_np, low_rank_np, contrastive_np).

The interpreter uses small tiles (see fusion.py / contrastive.py), so the
odd sizes below span several partial blocks, several column tiles and, for
the contrastive backward, several output-feature chunks.
"""

import numpy as np
import pytest
from triton_interpreter import skip_unless_interpreted

skip_unless_interpreted()

import torch  # noqa: E402
from numpy_oracle import contrastive_inputs  # noqa: E402
from numpy_oracle import contrastive_np  # noqa: E402
from numpy_oracle import gated_inputs  # noqa: E402
from numpy_oracle import gated_np  # noqa: E402
from numpy_oracle import logsumexp_np  # noqa: E402
from numpy_oracle import low_rank_inputs  # noqa: E402
from numpy_oracle import low_rank_np  # noqa: E402
from numpy_oracle import rel_error  # noqa: E402

from mmkeras.triton_kernels import contrastive as co  # noqa: E402
from mmkeras.triton_kernels import fusion as fu  # noqa: E402
from mmkeras.backend import torch_contrastive_triton as tco  # noqa: E402
from mmkeras.backend import torch_fusion_triton as tfo  # noqa: E402


TOL = 1e-5


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """Output buffers start as NaN, so an unwritten element shows up."""

    def empty(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(fu, "_empty", empty)
    monkeypatch.setattr(co, "_empty", empty)


def _t(x):
    return None if x is None else torch.from_numpy(np.asarray(x))


def _np(x):
    return x.detach().to(torch.float64).numpy()


def assert_close(got, ref, name, tol=TOL):
    got = _np(got)
    assert got.shape == np.shape(ref), name
    assert np.all(np.isfinite(got)), f"{name} has NaN/inf (unwritten?)"
    err = rel_error(got, ref)
    assert err <= tol, f"{name}: rel error {err:.3g}"


# ------------------------------------------------------------ gated fusion

# (M, B, D, mask kind): M in {1, 2, 3}, B and D in {1, 17, 129}; "random"
# masks leave sample 0 with no modality, "absent" has none anywhere.
GATED_CASES = [
    (1, 1, 1, None),
    (2, 17, 129, "random"),
    (3, 129, 17, "random"),
    (3, 17, 1, None),
    (1, 129, 17, "random"),
    (2, 1, 17, "absent"),
    (3, 129, 129, None),
]


@pytest.mark.parametrize("case", GATED_CASES, ids=str)
def test_gated_fusion_matches_float64(case):
    h, g, mask, dout = gated_inputs(*case)
    ref_out, (ref_dh, ref_dg) = gated_np(h, g, mask, dout)
    out = fu.gated_fusion_forward(_t(h), _t(g), _t(mask))
    dh, dg = fu.gated_fusion_backward(_t(h), _t(g), _t(mask), _t(dout))
    assert out.dtype == dh.dtype == dg.dtype == torch.float32
    assert_close(out, ref_out, "out")
    assert_close(dh, ref_dh, "dh")
    assert_close(dg, ref_dg, "dg")


# ---------------------------------------------------------- low-rank fusion

# (M, R, B, O, mask kind, fraction of zero factors)
LOW_RANK_CASES = [
    (1, 1, 1, 1, None, 0.0),
    (2, 4, 17, 129, "random", 0.0),
    (3, 3, 129, 17, "random", 0.3),
    (3, 2, 17, 1, None, 0.3),
    (1, 2, 129, 17, "random", 0.0),
    (2, 2, 1, 17, "absent", 0.0),
    (2, 1, 129, 129, None, 0.3),
]


@pytest.mark.parametrize("case", LOW_RANK_CASES, ids=str)
def test_low_rank_fusion_matches_float64(case):
    f, mask, dout = low_rank_inputs(*case)
    ref_out, (ref_df,) = low_rank_np(f, mask, dout)
    out = fu.low_rank_fusion_forward(_t(f), _t(mask))
    df = fu.low_rank_fusion_backward(_t(f), _t(mask), _t(dout))
    assert out.dtype == df.dtype == torch.float32
    assert_close(out, ref_out, "out")
    assert_close(df, ref_df, "df")


def test_all_absent_sample_is_defined():
    """No modality present: gated gives 0, low-rank gives R (empty
    products), both with exactly zero gradients; absent factors may be
    NaN without leaking (they are never read)."""
    h, g, _, dout = gated_inputs(3, 4, 17, None)
    mask = np.ones((4, 3), bool)
    mask[1] = False
    mask[2, 1] = False
    h[1, 2] = np.nan  # absent modality 1 of sample 2
    out = fu.gated_fusion_forward(_t(h), _t(g), _t(mask))
    dh, dg = fu.gated_fusion_backward(_t(h), _t(g), _t(mask), _t(dout))
    assert (out[1] == 0).all() and out[0].abs().sum() > 0
    assert (dh[:, 1] == 0).all() and (dg[:, 1] == 0).all()
    assert torch.isfinite(out).all() and (dh[1, 2] == 0).all()

    f, _, dout = low_rank_inputs(3, 5, 4, 17, None, 0.0)
    f[1, :, 2] = np.nan
    out = fu.low_rank_fusion_forward(_t(f), _t(mask))
    df = fu.low_rank_fusion_backward(_t(f), _t(mask), _t(dout))
    assert (out[1] == 5.0).all()
    assert (df[:, :, 1] == 0).all() and df[:, :, 0].abs().sum() > 0
    assert torch.isfinite(out).all() and torch.isfinite(df).all()
    assert (df[1, :, 2] == 0).all()


# ---------------------------------------------------------- contrastive loss

# (B, D, kind, scale, bias, normalize): B in {1, 17, 129}, odd D (D = 40
# spans two output chunks of the interpreter's backward tiles).
CONTRASTIVE_CASES = [
    (1, 8, "softmax", 2.0, None, False),
    (17, 33, "softmax", 1 / 0.07, None, True),
    (129, 40, "softmax", 3.0, 0.5, False),
    (129, 17, "softmax", 100.0, None, True),
    (1, 8, "sigmoid", 2.0, -1.0, False),
    (17, 129, "sigmoid", 10.0, -10.0, True),
    (129, 1, "sigmoid", 1.5, None, False),
    (129, 40, "sigmoid", 50.0, -5.0, True),
]


def _scalars(scale, bias, shape=()):
    s = torch.tensor(scale, dtype=torch.float32).reshape(shape)
    t = None if bias is None else torch.tensor(bias, dtype=torch.float32)
    return s, (None if t is None else t.reshape(shape))


@pytest.mark.parametrize("case", CONTRASTIVE_CASES, ids=str)
def test_contrastive_matches_float64(case):
    B, D, kind, scale, bias, normalize = case
    a, b = contrastive_inputs(B, D, normalize)
    sigmoid = kind == "sigmoid"
    s, t = _scalars(scale, bias)
    loss, lse = co.forward(_t(a), _t(b), s, t, sigmoid)
    da, db, dscale, dbias = co.backward(
        _t(a), _t(b), s, t, lse, torch.tensor(0.7), sigmoid
    )
    ref_loss, ref_grads = contrastive_np(a, b, scale, bias, kind, dloss=0.7)
    assert loss.shape == () and loss.dtype == torch.float32
    assert_close(loss, ref_loss, "loss")
    for name, got, ref in zip(("da", "db", "dscale"), (da, db, dscale),
                              ref_grads):
        assert_close(got, ref, name)
    # The saved residual: row / column logsumexps, or zeros for sigmoid.
    assert lse.shape == (2, B) and lse.dtype == torch.float32
    if sigmoid:
        assert (lse == 0).all()
        if bias is None:
            assert dbias == 0
        else:
            assert_close(dbias, ref_grads[3], "dbias")
    else:
        L = scale * (a.astype(np.float64) @ b.T.astype(np.float64))
        L += 0.0 if bias is None else bias
        assert_close(lse[0], logsumexp_np(L, 1), "lse rows")
        assert_close(lse[1], logsumexp_np(L, 0), "lse cols")
        assert dbias == 0  # the bias cancels in the softmax loss


def _autograd_contrastive(a, b, scale, bias, sigmoid, dloss, shape=()):
    a_t, b_t = (torch.tensor(x, requires_grad=True) for x in (a, b))
    s, t = _scalars(scale, bias, shape)
    s.requires_grad_()
    if t is not None:
        t.requires_grad_()
    loss = tco.contrastive_loss(a_t, b_t, s, t, sigmoid)
    (loss * dloss).backward()
    return loss, a_t.grad, b_t.grad, s.grad, (None if t is None else t.grad)


@pytest.mark.parametrize("sigmoid", [False, True], ids=["softmax", "sigmoid"])
def test_contrastive_autograd_entry_point(sigmoid):
    kind = "sigmoid" if sigmoid else "softmax"
    a, b = contrastive_inputs(17, 20, True, seed=3)
    loss, da, db, ds, dt = _autograd_contrastive(a, b, 8.0, -2.0, sigmoid, 1.3)
    ref_loss, ref_grads = contrastive_np(a, b, 8.0, -2.0, kind, dloss=1.3)
    assert_close(loss, ref_loss, "loss")
    for name, got, ref in zip(("da", "db", "dscale", "dbias"),
                              (da, db, ds, dt), ref_grads):
        assert_close(got, ref, name)
    # Scale and bias of shape (1,): gradients keep that shape.
    _, _, _, ds1, dt1 = _autograd_contrastive(a, b, 8.0, -2.0, sigmoid, 1.3,
                                              shape=(1,))
    assert ds1.shape == (1,) and dt1.shape == (1,)
    assert_close(ds1[0], ref_grads[2], "dscale (1,)")


def test_contrastive_allocates_only_o_of_b(monkeypatch):
    """Every buffer the launchers allocate is O(B) or O(B * D)."""
    shapes = []
    real = co._empty

    def record(shape, dtype, device):
        shapes.append(tuple(shape))
        return real(shape, dtype, device)

    monkeypatch.setattr(co, "_empty", record)
    B, D = 40, 3
    a, b = contrastive_inputs(B, D, True)
    for sigmoid in (False, True):
        loss, lse = co.forward(_t(a), _t(b), torch.tensor(5.0), None, sigmoid)
        co.backward(_t(a), _t(b), torch.tensor(5.0), None, lse,
                    torch.tensor(1.0), sigmoid)
    assert shapes and all(int(np.prod(s)) <= 2 * B * D for s in shapes)


# ------------------------------------------------------------ autograd glue


def test_fusion_autograd_entry_points():
    h, g, mask, dout = gated_inputs(3, 17, 20, "random", seed=4)
    h_t, g_t = (torch.tensor(x, requires_grad=True) for x in (h, g))
    out = tfo.gated_fusion(h_t, g_t, _t(mask))
    out.backward(_t(dout))
    ref_out, (ref_dh, ref_dg) = gated_np(h, g, mask, dout)
    assert_close(out, ref_out, "gated out")
    assert_close(h_t.grad, ref_dh, "dh")
    assert_close(g_t.grad, ref_dg, "dg")

    f, mask, dout = low_rank_inputs(2, 3, 17, 20, "random", 0.2, seed=5)
    f_t = torch.tensor(f, requires_grad=True)
    out = tfo.low_rank_fusion(f_t, _t(mask))
    out.backward(_t(dout))
    ref_out, (ref_df,) = low_rank_np(f, mask, dout)
    assert_close(out, ref_out, "low-rank out")
    assert_close(f_t.grad, ref_df, "df")


def test_opcheck_custom_ops():
    h, g, mask, dout = gated_inputs(2, 5, 7, "random", seed=6)
    h, g = (torch.tensor(x, requires_grad=True) for x in (h, g))
    mask, dout = _t(mask), _t(dout)
    for m in (mask, None):
        torch.library.opcheck(tfo.triton_gated_fusion_fwd, (h, g, m))
    torch.library.opcheck(
        tfo.triton_gated_fusion_bwd, (h.detach(), g.detach(), mask, dout)
    )
    f, _, dout_f = low_rank_inputs(2, 3, 5, 7, None, 0.2, seed=7)
    f, dout_f = torch.tensor(f, requires_grad=True), _t(dout_f)
    for m in (mask, None):
        torch.library.opcheck(tfo.triton_low_rank_fusion_fwd, (f, m))
    torch.library.opcheck(
        tfo.triton_low_rank_fusion_bwd, (f.detach(), mask, dout_f)
    )
    a, b = contrastive_inputs(5, 6, True, seed=8)
    a, b = (torch.tensor(x, requires_grad=True) for x in (a, b))
    scale = torch.tensor(10.0, requires_grad=True)
    bias = torch.tensor(-2.0, requires_grad=True)
    # (sigmoid, bias of the forward check, bias of the backward check)
    for sigmoid, t_fwd, t_bwd in ((False, bias, None), (True, None, bias)):
        torch.library.opcheck(tco.triton_contrastive_fwd,
                              (a, b, scale, t_fwd, sigmoid))
        with torch.no_grad():
            _, lse = tco.triton_contrastive_fwd(a, b, scale, t_bwd, sigmoid)
        torch.library.opcheck(
            tco.triton_contrastive_bwd,
            (a.detach(), b.detach(), scale.detach(),
             None if t_bwd is None else t_bwd.detach(), lse,
             torch.tensor(1.0), sigmoid),
        )


# ------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: fu.gated_fusion_forward(torch.zeros(2, 3, 4),
                                         torch.zeros(2, 3, 5)),
         ValueError, "shape"),
        (lambda: fu.gated_fusion_forward(torch.zeros(2, 3, 4).double(),
                                         torch.zeros(2, 3, 4).double()),
         TypeError, "float32"),
        (lambda: fu.gated_fusion_forward(torch.zeros(2, 3, 4),
                                         torch.zeros(2, 3, 4),
                                         torch.ones(3, 3, dtype=torch.bool)),
         ValueError, "mask"),
        (lambda: fu.low_rank_fusion_forward(torch.zeros(2, 0, 3, 4)),
         ValueError, "R >= 1"),
        (lambda: fu.low_rank_fusion_forward(torch.zeros(2, 1, 3, 4),
                                            torch.ones(3, 2)),
         TypeError, "mask"),
        (lambda: co.forward(torch.zeros(3, 4), torch.zeros(3, 5),
                            torch.tensor(1.0)),
         ValueError, "shape"),
        (lambda: co.forward(torch.zeros(3, 4), torch.zeros(3, 4),
                            torch.ones(2)),
         ValueError, "scalar"),
    ],
)
def test_bad_inputs_raise(call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert "Received" in str(info.value)


def test_empty_batch_fusion():
    out = fu.gated_fusion_forward(torch.zeros(2, 0, 4), torch.zeros(2, 0, 4))
    assert out.shape == (0, 4)
    df = fu.low_rank_fusion_backward(torch.zeros(2, 3, 5, 0), None,
                                     torch.zeros(5, 0))
    assert df.shape == (2, 3, 5, 0)
