"""fused_attention against float64 numpy, on the current Keras backend."""

import keras
import numpy as np
import pytest
from backend_grads import vjp
from keras import ops
from numpy_oracle import attention_np
from numpy_oracle import rel_error
from op_helpers import attention_inputs
from op_helpers import compile_fn

import mmkeras

# (B, T, S, N, K, H, is_causal, mask kind): covers T, S in {1, 17, 128, 129,
# 300} with T != S, head dims {8, 40, 64, 80, 128}, heads 4/4, 8/2, 8/1.
CASES = [
    (2, 17, 17, 4, 4, 64, False, None),
    (1, 1, 1, 4, 4, 8, False, None),
    (2, 129, 300, 8, 2, 40, True, "padding"),
    (2, 300, 129, 8, 1, 80, True, "full"),
    (1, 128, 128, 4, 4, 128, False, "full"),
    (2, 17, 300, 8, 2, 64, False, "padding"),
    (1, 300, 17, 4, 4, 8, True, None),
    (2, 129, 128, 8, 1, 40, False, "full"),
    (1, 1, 300, 8, 2, 128, False, "padding"),
    (2, 128, 1, 4, 4, 80, False, None),
    (3, 17, 129, 8, 2, 96, False, "heads"),
]


def make_inputs(B, T, S, N, K, H, mask_kind, seed=0):
    """`attention_inputs`, except that the "heads" mask is (N, T, S): the op
    broadcasts a mask of lower rank over the batch."""
    q, k, v, mask, dout = attention_inputs(B, T, S, N, K, H, mask_kind, seed)
    if mask_kind == "heads":
        mask = mask[0]
    return q, k, v, mask, dout


def run(q, k, v, mask, dout, is_causal, implementation):
    def fn(q, k, v):
        return mmkeras.ops.fused_attention(
            q, k, v, mask=mask, is_causal=is_causal,
            implementation=implementation,
        )

    return vjp(fn, [q, k, v], dout)


@pytest.mark.parametrize("implementation", ["native", "reference"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_float64(case, implementation):
    B, T, S, N, K, H, is_causal, mask_kind = case
    q, k, v, mask, dout = make_inputs(B, T, S, N, K, H, mask_kind)
    out, grads = run(q, k, v, mask, dout, is_causal, implementation)
    ref_out, ref_grads = attention_np(q, k, v, mask, is_causal, dout=dout)
    assert np.all(np.isfinite(out)) and all(np.all(np.isfinite(g)) for g in grads)
    assert rel_error(out, ref_out) <= 1e-5
    for name, g, ref in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert g.shape == ref.shape, name
        assert rel_error(g, ref) <= 1e-5, name


def test_fully_masked_rows_are_zero_with_zero_grads():
    q, k, v, _, dout = make_inputs(2, 17, 33, 4, 2, 40, None)
    mask = np.ones((2, 1, 17, 33), bool)
    mask[0, :, 5] = False  # row 5 of batch 0 sees nothing
    out, (dq, _, _) = run(q, k, v, mask, dout, False, "native")
    assert np.all(out[0, 5] == 0.0)
    assert np.all(dq[0, 5] == 0.0)
    assert np.abs(out[1, 5]).sum() > 0


def test_custom_scale():
    q, k, v, mask, dout = make_inputs(1, 17, 129, 4, 4, 64, "padding")
    out, grads = vjp(
        lambda q, k, v: mmkeras.ops.fused_attention(
            q, k, v, mask=mask, scale=0.37, implementation="native"
        ),
        [q, k, v],
        dout,
    )
    ref_out, ref_grads = attention_np(q, k, v, mask, scale=0.37, dout=dout)
    assert rel_error(out, ref_out) <= 1e-5
    assert all(rel_error(g, r) <= 1e-5 for g, r in zip(grads, ref_grads))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_within_twice_the_reference_error(dtype):
    q, k, v, mask, dout = make_inputs(2, 129, 128, 8, 2, 64, "padding")
    q, k, v, dout = (np.asarray(ops.convert_to_numpy(ops.cast(ops.cast(x, dtype), "float32")))
                     for x in (q, k, v, dout))
    ref_out, ref_grads = attention_np(q, k, v, mask, dout=dout)
    cast = lambda x: ops.cast(x, dtype)  # noqa: E731
    results = {}
    for impl in ("native", "reference"):
        out, grads = vjp(
            lambda q, k, v: mmkeras.ops.fused_attention(
                q, k, v, mask=mask, implementation=impl
            ),
            [cast(q), cast(k), cast(v)],
            dout,
        )
        results[impl] = [out, *grads]
    expected_dtype = dtype
    native_out = mmkeras.ops.fused_attention(
        cast(q), cast(k), cast(v), mask=mask, implementation="native"
    )
    assert keras.backend.standardize_dtype(native_out.dtype) == expected_dtype
    for native, reference, exact in zip(
        results["native"], results["reference"], [ref_out, *ref_grads]
    ):
        # The reference rounds to the low dtype too; allow 2x its error.
        assert rel_error(native, exact) <= 2 * rel_error(reference, exact) + 1e-3


def test_jit_compiled_function():
    q, k, v, mask_np, dout = make_inputs(2, 17, 129, 8, 2, 40, "padding")
    mask = ops.convert_to_tensor(mask_np)

    def fn(q, k, v):
        return mmkeras.ops.fused_attention(q, k, v, mask=mask, is_causal=True,
                                           implementation="native")

    out, grads = vjp(compile_fn(fn), [q, k, v], dout)
    ref_out, ref_grads = attention_np(q, k, v, mask_np, True, dout=dout)
    assert rel_error(out, ref_out) <= 1e-5
    assert all(rel_error(g, r) <= 1e-5 for g, r in zip(grads, ref_grads))


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="jax.vmap is JAX-only")
def test_jax_vmap():
    import jax

    q, k, v, mask, _ = make_inputs(2, 17, 40, 4, 2, 16, "padding")
    stack = lambda x: np.stack([x, x[::-1] * 0.5])  # noqa: E731
    fn = lambda q, k, v: mmkeras.ops.fused_attention(  # noqa: E731
        q, k, v, mask=mask, implementation="native"
    )
    out = np.asarray(jax.vmap(fn)(stack(q), stack(k), stack(v)))
    for i in range(2):
        ref = attention_np(stack(q)[i], stack(k)[i], stack(v)[i], mask)
        assert rel_error(out[i], ref) <= 1e-5


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch.library.opcheck is torch-only")
def test_torch_opcheck():
    import torch

    from mmkeras.backend import torch_attention

    q, k, v, mask, _ = make_inputs(2, 17, 33, 4, 2, 16, "padding")
    args = (
        torch.tensor(q, requires_grad=True),
        torch.tensor(k, requires_grad=True),
        torch.tensor(v, requires_grad=True),
        torch.tensor(mask),
        True,
        0.25,
    )
    torch.library.opcheck(torch_attention.attention_fwd, args)
    out, lse = torch_attention.attention_fwd(*args)
    dout = torch.randn_like(out)
    torch.library.opcheck(
        torch_attention.attention_bwd,
        (*(a.detach() for a in args[:3]), out.detach(), lse, dout, args[3], True, 0.25),
    )


def test_symbolic_call_infers_shape():
    q = keras.KerasTensor((None, 12, 8, 32))
    kv = keras.KerasTensor((None, 20, 2, 32))
    out = mmkeras.ops.fused_attention(q, kv, kv)
    assert out.shape == (None, 12, 8, 32)


BAD_INPUTS = [
    (dict(q=(2, 5, 4), k=(2, 5, 4, 8), v=(2, 5, 4, 8)), "query"),
    (dict(q=(2, 5, 4, 8), k=(3, 5, 4, 8), v=(3, 5, 4, 8)), "batch size"),
    (dict(q=(2, 5, 4, 8), k=(2, 5, 4, 16), v=(2, 5, 4, 16)), "head dim"),
    (dict(q=(2, 5, 6, 8), k=(2, 5, 4, 8), v=(2, 5, 4, 8)), "multiple"),
    (dict(q=(2, 5, 4, 8), k=(2, 5, 4, 8), v=(2, 5, 4, 8), mask=(2, 1, 3, 5)), "broadcastable"),
    (dict(q=(2, 5, 4, 8), k=(2, 5, 4, 8), v=(2, 5, 4, 8), mask="float"), "boolean"),
]


@pytest.mark.parametrize("shapes,message", BAD_INPUTS, ids=lambda x: str(x))
def test_bad_input_raises_clear_error(shapes, message):
    q = np.zeros(shapes["q"], np.float32)
    k = np.zeros(shapes["k"], np.float32)
    v = np.zeros(shapes["v"], np.float32)
    mask = shapes.get("mask")
    if mask == "float":
        mask = np.ones((2, 1, 1, 5), np.float32)
    elif mask is not None:
        mask = np.ones(mask, bool)
    with pytest.raises(ValueError, match=message) as info:
        mmkeras.ops.fused_attention(q, k, v, mask=mask)
    assert "Received:" in str(info.value)


def test_unknown_implementation_raises():
    x = np.zeros((1, 2, 1, 4), np.float32)
    with pytest.raises(ValueError, match="implementation="):
        mmkeras.ops.fused_attention(x, x, x, implementation="fast")


def test_native_raises_when_it_cannot_run(monkeypatch):
    x = np.zeros((1, 2, 1, 4), np.float32)
    monkeypatch.setattr(
        mmkeras.kernels, "native_unavailable_reason",
        lambda x, family="attention": "the adapter is not built",
    )
    with pytest.raises(ValueError, match="not built.*Received"):
        mmkeras.ops.fused_attention(x, x, x, implementation="native")
    # auto falls back to the reference and still computes the right thing
    out = mmkeras.ops.fused_attention(x + 1, x, x)
    assert np.allclose(ops.convert_to_numpy(out), 0.0)


def test_native_rejects_float64_where_the_backend_has_it():
    x = ops.convert_to_tensor(np.zeros((1, 2, 1, 4), np.float64))
    if keras.backend.standardize_dtype(x.dtype) != "float64":
        pytest.skip("this backend runs without float64 (jax_enable_x64 off)")
    with pytest.raises(ValueError, match="native.*float64.*Received"):
        mmkeras.ops.fused_attention(x, x, x, implementation="native")
    out = mmkeras.ops.fused_attention(x, x, x)
    assert keras.backend.standardize_dtype(out.dtype) == "float64"


def test_environment_variable_sets_default(monkeypatch):
    monkeypatch.setenv("MMKERAS_KERNELS", "reference")
    assert mmkeras.kernels.resolve_implementation(None) == "reference"
    monkeypatch.setenv("MMKERAS_KERNELS", "bogus")
    with pytest.raises(ValueError, match="MMKERAS_KERNELS"):
        mmkeras.kernels.resolve_implementation(None)


def test_native_kernels_are_usable_here():
    rows = mmkeras.kernels.available()
    cpu_rows = [r for r in rows if "CPU" in r["kernel"]]
    assert cpu_rows and all(r["usable"] for r in cpu_rows), rows
