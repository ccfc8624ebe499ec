"""gated_fusion and low_rank_fusion against float64 numpy, on the current
Keras backend (native and reference implementations)."""

import os

import keras
import numpy as np
import pytest
from backend_grads import vjp
from keras import ops
from numpy_oracle import gated_inputs
from numpy_oracle import gated_np
from numpy_oracle import low_rank_inputs
from numpy_oracle import low_rank_np
from numpy_oracle import rel_error
from op_helpers import compile_fn

import mmkeras

# ------------------------------------------------------------ inputs


# (M, B, D, mask kind): M in {1, 2, 3}, B and D in {1, 17, 129, ...}.
GATED_CASES = [
    (1, 1, 1, None),
    (2, 17, 129, "random"),
    (3, 129, 17, "random"),
    (3, 17, 1, None),
    (1, 129, 64, "random"),
    (2, 1, 17, "absent"),
    (3, 129, 129, None),
    (2, 17, 300, "random"),
]

# (M, R, B, O, mask kind, zero fraction of the factors)
LOW_RANK_CASES = [
    (1, 1, 1, 1, None, 0.0),
    (2, 4, 17, 129, "random", 0.0),
    (3, 3, 129, 17, "random", 0.0),
    (3, 1, 17, 1, None, 0.0),
    (1, 2, 129, 64, "random", 0.0),
    (2, 2, 1, 17, "absent", 0.0),
    (3, 5, 17, 70, "random", 0.3),
    (3, 2, 129, 129, None, 0.3),
]


def run_gated(h, g, mask, dout, implementation, wrap=lambda fn: fn):
    fn = wrap(
        lambda h, g: mmkeras.ops.gated_fusion(
            h, g, modality_mask=mask, implementation=implementation
        )
    )
    return vjp(fn, [h, g], dout)


def run_low_rank(f, mask, dout, implementation, wrap=lambda fn: fn):
    fn = wrap(
        lambda f: mmkeras.ops.low_rank_fusion(
            f, modality_mask=mask, implementation=implementation
        )
    )
    return vjp(fn, [f], dout)


def assert_close(out, grads, ref_out, ref_grads, tol=1e-5):
    assert np.all(np.isfinite(out)), "output has NaN (unwritten element?)"
    assert out.shape == ref_out.shape
    assert rel_error(out, ref_out) <= tol
    for i, (grad, ref) in enumerate(zip(grads, ref_grads)):
        assert np.all(np.isfinite(grad)), f"grad {i} has NaN"
        assert grad.shape == ref.shape, i
        assert rel_error(grad, ref) <= tol, i


# ------------------------------------------------------------ correctness


def with_implementations(cases, reference_cases):
    """Every case natively; the reference (slow to trace op by op on JAX)
    on a subset that still covers M = 1, 2, 3, sizes 1, 17, 129, masks."""
    return [("native", c) for c in cases] + [
        ("reference", cases[i]) for i in reference_cases
    ]


@pytest.mark.parametrize("implementation,case",
                         with_implementations(GATED_CASES, (0, 1, 2, 5)),
                         ids=str)
def test_gated_fusion_matches_float64(case, implementation):
    h, g, mask, dout = gated_inputs(*case)
    out, grads = run_gated(h, g, mask, dout, implementation)
    assert_close(out, grads, *gated_np(h, g, mask, dout))


@pytest.mark.parametrize("implementation,case",
                         with_implementations(LOW_RANK_CASES, (0, 1, 2, 6)),
                         ids=str)
def test_low_rank_fusion_matches_float64(case, implementation):
    f, mask, dout = low_rank_inputs(*case)
    out, grads = run_low_rank(f, mask, dout, implementation)
    assert_close(out, grads, *low_rank_np(f, mask, dout))


@pytest.mark.parametrize("implementation", ["native", "reference"])
def test_all_absent_sample_is_defined(implementation):
    """No modality present: gated gives 0, low-rank gives R (empty
    products), both with zero gradients."""
    h, g, _, dout = gated_inputs(3, 4, 17, None)
    mask = np.ones((4, 3), bool)
    mask[1] = False
    out, (dh, dg) = run_gated(h, g, mask, dout, implementation)
    assert np.all(out[1] == 0.0) and np.abs(out[0]).sum() > 0
    assert np.all(dh[:, 1] == 0.0) and np.all(dg[:, 1] == 0.0)

    f, _, dout = low_rank_inputs(3, 5, 4, 17, None, 0.0)
    out, (df,) = run_low_rank(f, mask, dout, implementation)
    assert np.all(out[1] == 5.0)
    assert np.all(df[:, :, 1] == 0.0) and np.abs(df[:, :, 0]).sum() > 0


def test_outputs_are_poisoned_in_tests():
    # conftest sets this before the kernels load: every native output starts
    # as NaN, so the finiteness checks above catch unwritten elements.
    assert os.environ.get("MMKERAS_POISON_OUTPUTS") == "1"


def test_jit_compiled_functions():
    h, g, mask, dout = gated_inputs(3, 17, 40, "random")
    out, grads = run_gated(h, g, ops.convert_to_tensor(mask), dout, "native",
                           wrap=compile_fn)
    assert_close(out, grads, *gated_np(h, g, mask, dout))

    f, mask, dout = low_rank_inputs(3, 4, 17, 40, "random", 0.2)
    out, grads = run_low_rank(f, ops.convert_to_tensor(mask), dout, "native",
                              wrap=compile_fn)
    assert_close(out, grads, *low_rank_np(f, mask, dout))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_within_twice_the_reference_error(dtype):
    h, g, mask, dout = gated_inputs(3, 33, 70, "random")
    f, _, dout_f = low_rank_inputs(3, 4, 33, 70, None, 0.0)
    rounded = lambda x: np.asarray(  # noqa: E731
        ops.convert_to_numpy(ops.cast(ops.cast(x, dtype), "float32"))
    )
    h, g, f = rounded(h), rounded(g), rounded(f)
    cast = lambda x: ops.cast(x, dtype)  # noqa: E731
    runs = (
        (lambda i: run_gated(cast(h), cast(g), mask, dout, i),
         gated_np(h, g, mask, dout)),
        (lambda i: run_low_rank(cast(f), mask, dout_f, i),
         low_rank_np(f, mask, dout_f)),
    )
    for run, (exact_out, exact_grads) in runs:
        native_out, native_grads = run("native")
        ref_out, ref_grads = run("reference")
        for nat, ref, exact in zip([native_out, *native_grads],
                                   [ref_out, *ref_grads],
                                   [exact_out, *exact_grads]):
            # The reference rounds to the low dtype too; allow 2x its error.
            assert rel_error(nat, exact) <= 2 * rel_error(ref, exact) + 1e-3
    out = mmkeras.ops.gated_fusion(cast(h), cast(g), implementation="native")
    assert keras.backend.standardize_dtype(out.dtype) == dtype


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="torch.library.opcheck is torch-only")
def test_torch_opcheck():
    import torch

    from mmkeras.backend import torch_fusion

    h, g, mask, dout = gated_inputs(3, 17, 33, "random")
    h, g = (torch.tensor(x, requires_grad=True) for x in (h, g))
    mask, dout = torch.tensor(mask), torch.tensor(dout)
    for m in (mask, None):
        torch.library.opcheck(torch_fusion.gated_fusion_fwd, (h, g, m))
        torch.library.opcheck(
            torch_fusion.gated_fusion_bwd, (h.detach(), g.detach(), m, dout)
        )
    f, _, dout_f = low_rank_inputs(3, 4, 17, 33, None, 0.2)
    f, dout_f = torch.tensor(f, requires_grad=True), torch.tensor(dout_f)
    for m in (mask, None):
        torch.library.opcheck(torch_fusion.low_rank_fusion_fwd, (f, m))
        torch.library.opcheck(
            torch_fusion.low_rank_fusion_bwd, (f.detach(), m, dout_f)
        )


def test_symbolic_call_infers_shape():
    h = keras.KerasTensor((3, None, 32))
    mask = keras.KerasTensor((None, 3), dtype="bool")
    out = mmkeras.ops.gated_fusion(h, h, modality_mask=mask)
    assert out.shape == (None, 32)
    f = keras.KerasTensor((2, 4, None, 16), dtype="float16")
    out = mmkeras.ops.low_rank_fusion(f)
    assert out.shape == (None, 16) and out.dtype == "float16"


# ------------------------------------------------------------ errors

GATED_BAD = [
    (dict(h=(2, 5), g=(2, 5)), "projections.*rank 3"),
    (dict(h=(2, 5, 4), g=(2, 5, 3)), "same shape"),
    (dict(h=(0, 5, 4), g=(0, 5, 4)), "at least one modality"),
    (dict(h=(2, 5, 4), g=(2, 5, 4), mask=(5, 3)), "modality_mask.*shape"),
    (dict(h=(2, 5, 4), g=(2, 5, 4), mask=(2, 5)), "modality_mask.*shape"),
    (dict(h=(2, 5, 4), g=(2, 5, 4), mask="float"), "modality_mask.*boolean"),
    (dict(h=(2, 5, 4), g=(2, 5, 4), dtype="int32"), "projections.*floating"),
]


@pytest.mark.parametrize("spec,message", GATED_BAD, ids=str)
def test_gated_bad_input_raises_clear_error(spec, message):
    dtype = spec.get("dtype", "float32")
    h, g = np.zeros(spec["h"], dtype), np.zeros(spec["g"], dtype)
    mask = spec.get("mask")
    if mask == "float":
        mask = np.ones((5, 2), np.float32)
    elif mask is not None:
        mask = np.ones(mask, bool)
    with pytest.raises(ValueError, match=message) as info:
        mmkeras.ops.gated_fusion(h, g, modality_mask=mask)
    assert "Received:" in str(info.value)


LOW_RANK_BAD = [
    (dict(f=(2, 3, 5)), "factors.*rank 4"),
    (dict(f=(0, 3, 5, 4)), "modalities >= 1"),
    (dict(f=(2, 0, 5, 4)), "rank >= 1"),
    (dict(f=(2, 3, 5, 4), mask=(5, 3)), "modality_mask.*shape"),
    (dict(f=(2, 3, 5, 4), dtype="int32"), "factors.*floating"),
]


@pytest.mark.parametrize("spec,message", LOW_RANK_BAD, ids=str)
def test_low_rank_bad_input_raises_clear_error(spec, message):
    f = np.zeros(spec["f"], spec.get("dtype", "float32"))
    mask = spec.get("mask")
    mask = None if mask is None else np.ones(mask, bool)
    with pytest.raises(ValueError, match=message) as info:
        mmkeras.ops.low_rank_fusion(f, modality_mask=mask)
    assert "Received:" in str(info.value)


def test_unknown_implementation_raises():
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="implementation="):
        mmkeras.ops.gated_fusion(x, x, implementation="fast")


def test_native_raises_when_it_cannot_run(monkeypatch):
    h = np.ones((2, 3, 4), np.float32)
    f = np.ones((2, 1, 3, 4), np.float32)
    monkeypatch.setattr(
        mmkeras.kernels, "native_unavailable_reason",
        lambda x, family="attention": f"the {family} adapter is not built",
    )
    with pytest.raises(ValueError, match="gated_fusion.*fusion adapter is "
                                         "not built.*Received"):
        mmkeras.ops.gated_fusion(h, h, implementation="native")
    with pytest.raises(ValueError,
                       match="low_rank_fusion.*not built.*Received"):
        mmkeras.ops.low_rank_fusion(f, implementation="native")
    # auto falls back to the reference and still computes the right thing
    out = mmkeras.ops.gated_fusion(h, h)
    expected = 2 * (1 / (1 + np.exp(-1.0))) * np.tanh(1.0)
    assert np.allclose(ops.convert_to_numpy(out), expected)
    assert np.allclose(ops.convert_to_numpy(mmkeras.ops.low_rank_fusion(f)), 1)


def test_float64_runs_the_reference_where_the_backend_has_it():
    x = ops.convert_to_tensor(np.ones((2, 3, 4), np.float64))
    if keras.backend.standardize_dtype(x.dtype) != "float64":
        pytest.skip("this backend runs without float64 (jax_enable_x64 off)")
    with pytest.raises(ValueError, match="native.*float64.*Received"):
        mmkeras.ops.gated_fusion(x, x, implementation="native")
    out = mmkeras.ops.gated_fusion(x, x)
    assert keras.backend.standardize_dtype(out.dtype) == "float64"
