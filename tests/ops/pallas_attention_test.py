"""The JAX GPU path of `fused_attention`: the Pallas kernels, run on the CPU in
Pallas' interpreter (`interpret=True`) against the float64 numpy oracle.

The interpreter executes the same kernel code that Pallas lowers to Triton on
a GPU, including the masked loads of partial tiles (it pads blocks with NaN,
so a load or store that escapes its mask shows up as NaN). A separate test
lowers the kernels for CUDA on this CPU-only machine, which checks that
Pallas' Triton lowering accepts them.
"""

import keras
import numpy as np
import pytest

if keras.backend.backend() != "jax":
    pytest.skip(
        "the Pallas kernels are JAX-only; they are tested once, in the jax "
        "backend's pass",
        allow_module_level=True,
    )

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from numpy_oracle import attention_np  # noqa: E402
from numpy_oracle import rel_error  # noqa: E402
from op_helpers import attention_inputs  # noqa: E402

import mmkeras  # noqa: E402
from mmkeras.backend import jax_attention  # noqa: E402
from mmkeras.pallas_kernels import attention as pa  # noqa: E402

if pa.unavailable_reason() is not None:
    pytest.skip(pa.unavailable_reason(), allow_module_level=True)

# Interpreted kernels are XLA programs of nested loops; optimizing them costs
# more compile time than it saves at these sizes.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _compiled(fn, *args):
    lowered = jax.jit(fn).lower(*args)
    try:
        return lowered.compile(compiler_options=_FAST_COMPILE)
    except Exception:  # noqa: BLE001  an XLA without the option
        return lowered.compile()


def empty_rows(B, T, S, N, mask, is_causal):
    """(B, N, T) bool: query rows that attend no key."""
    valid = np.ones((B, N, T, S), bool)
    if mask is not None:
        valid &= np.broadcast_to(mask, (B, N, T, S))
    if is_causal:
        valid &= np.tril(np.ones((T, S), bool))
    return ~valid.any(-1)


def run_kernels(q, k, v, mask, dout, is_causal, scale=None):
    """out, lse, (dq, dk, dv) from the interpreted kernels, as numpy."""

    def fn(q, k, v, dout, *mask):
        m = mask[0] if mask else None
        out, lse = pa.forward(q, k, v, m, is_causal, scale, interpret=True)
        grads = pa.backward(
            q, k, v, out, lse, dout, m, is_causal, scale, interpret=True
        )
        return out, lse, grads

    args = [q, k, v, dout] + ([jnp.asarray(mask)] if mask is not None else [])
    out, lse, grads = _compiled(fn, *args)(*args)
    return np.asarray(out), np.asarray(lse), [np.asarray(g) for g in grads]


# (B, T, S, N, K, H, is_causal, mask kind): lengths 1, 17, 129 with T != S,
# head dims 40/64/80/128 (and 8, 16, 24, 256), heads 4/4, 4/2, 4/1, every
# mask layout the kernels specialize on, fully masked rows.
CASES = [
    (1, 17, 17, 4, 4, 64, False, None),
    (1, 1, 1, 4, 4, 40, False, None),
    (2, 129, 17, 4, 2, 80, True, "padding"),
    (1, 17, 129, 4, 1, 128, False, "full"),
    (1, 129, 129, 4, 2, 40, True, "full"),
    (2, 1, 129, 4, 4, 64, True, "padding"),
    (1, 129, 1, 4, 1, 80, False, None),
    (2, 17, 40, 4, 2, 8, False, "heads"),
    (2, 17, 33, 4, 2, 16, True, "rows"),
    (2, 33, 17, 4, 4, 24, False, "flags"),
    (1, 33, 17, 2, 1, 256, True, None),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_float64(case):
    B, T, S, N, K, H, is_causal, mask_kind = case
    q, k, v, mask, dout = attention_inputs(B, T, S, N, K, H, mask_kind)
    out, lse, grads = run_kernels(q, k, v, mask, dout, is_causal)
    ref_out, ref_grads = attention_np(q, k, v, mask, is_causal, dout=dout)

    assert np.all(np.isfinite(out))
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert rel_error(out, ref_out) <= 1e-5
    for name, g, ref in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert g.shape == ref.shape and g.dtype == np.float32, name
        assert rel_error(g, ref) <= 1e-5, name

    empty = empty_rows(B, T, S, N, mask, is_causal)
    assert lse.shape == (B, N, T) and lse.dtype == np.float32
    assert np.all(lse[empty] == np.inf) and np.all(np.isfinite(lse[~empty]))
    empty_btn = empty.transpose(0, 2, 1)  # (B, T, N)
    assert np.all(out[empty_btn] == 0.0) and np.all(grads[0][empty_btn] == 0.0)


def test_custom_scale_and_empty_rows():
    q, k, v, _, dout = attention_inputs(2, 17, 33, 4, 2, 40, None)
    mask = np.ones((2, 1, 17, 33), bool)
    mask[0, :, 5] = False  # row 5 of batch 0 sees nothing
    out, lse, grads = run_kernels(q, k, v, mask, dout, False, scale=0.37)
    ref_out, ref_grads = attention_np(q, k, v, mask, scale=0.37, dout=dout)
    assert rel_error(out, ref_out) <= 1e-5
    assert all(rel_error(g, r) <= 1e-5 for g, r in zip(grads, ref_grads))
    assert np.all(out[0, 5] == 0.0) and np.all(grads[0][0, 5] == 0.0)
    assert np.all(lse[0, :, 5] == np.inf) and np.abs(out[1, 5]).sum() > 0


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_within_twice_the_reference_error(dtype):
    """16-bit inputs straight into the kernels (f32 accumulation)."""
    q, k, v, mask, dout = attention_inputs(2, 33, 40, 4, 2, 64, "padding")
    low = [jnp.asarray(x, dtype) for x in (q, k, v, dout)]
    # The oracle sees the rounded inputs, so only the computation differs.
    q, k, v, dout = (np.asarray(x, np.float32) for x in low)
    ref_out, ref_grads = attention_np(q, k, v, mask, True, dout=dout)
    out, _, grads = run_kernels(*low[:3], mask, low[3], True)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)

    def reference(q, k, v):
        return mmkeras.ops.fused_attention(
            q, k, v, mask=mask, is_causal=True, implementation="reference"
        )

    r_out, pullback = jax.vjp(reference, *low[:3])
    r_grads = pullback(low[3])
    for mine, theirs, exact in zip(
        [out, *grads], [r_out, *r_grads], [ref_out, *ref_grads]
    ):
        mine, theirs = (np.asarray(x, np.float32) for x in (mine, theirs))
        assert rel_error(mine, exact) <= 2 * rel_error(theirs, exact) + 1e-3


def test_custom_vjp_through_the_op(monkeypatch):
    """`fused_attention` on the Pallas path of the glue's custom_vjp (forced
    to the interpreter), differentiated inside `jax.jit`."""
    monkeypatch.setattr(jax_attention, "_FORCE_PATH", jax_attention._INTERPRET)
    q, k, v, mask, dout = attention_inputs(2, 17, 40, 4, 2, 40, "padding")
    assert mmkeras.kernels.native_unavailable_reason(jnp.asarray(q)) is None

    def loss(q, k, v):
        out = mmkeras.ops.fused_attention(
            q, k, v, mask=mask, is_causal=True, implementation="native"
        )
        return jnp.sum(out * dout), out

    grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))
    mmkeras.kernels.reset_usage()
    grads, out = grad_fn(q, k, v)
    assert mmkeras.kernels.usage()["fused_attention"] == {"native"}
    ref_out, ref_grads = attention_np(q, k, v, mask, True, dout=dout)
    assert rel_error(out, ref_out) <= 1e-5
    assert all(rel_error(g, r) <= 1e-5 for g, r in zip(grads, ref_grads))


def test_vmap_of_the_custom_vjp():
    q, k, v, mask, _ = attention_inputs(2, 17, 20, 4, 2, 16, "padding")
    stack = lambda x: np.stack([x, x[::-1] * 0.5])  # noqa: E731

    def fn(q, k, v):
        return jax_attention._attention(
            q, k, v, jnp.asarray(mask), False, 0.25, jax_attention._INTERPRET
        )

    out = np.asarray(jax.vmap(fn)(stack(q), stack(k), stack(v)))
    for i in range(2):
        ref = attention_np(stack(q)[i], stack(k)[i], stack(v)[i], mask,
                           scale=0.25)
        assert rel_error(out[i], ref) <= 1e-5


def test_lowers_to_triton_for_cuda():
    """Pallas' Triton lowering accepts every kernel (no GPU needed: the
    kernels are lowered for CUDA, not compiled or run)."""
    q = jax.ShapeDtypeStruct((2, 129, 8, 80), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((2, 300, 2, 80), jnp.bfloat16)
    mask = jax.ShapeDtypeStruct((2, 8, 129, 300), jnp.bool_)

    def fn(q, k, v, dout, mask):
        out, lse = pa.forward(q, k, v, mask, True)
        return out, pa.backward(q, k, v, out, lse, dout, mask, True)

    target = "__gpu$xla.gpu.triton"
    unchecked = jax.export.DisabledSafetyCheck.custom_call(target)
    try:
        exported = jax.export.export(
            jax.jit(fn), platforms=["cuda"], disabled_checks=[unchecked]
        )(q, kv, kv, q, mask)
    except (ImportError, NotImplementedError) as e:
        pytest.skip(f"this jaxlib cannot lower Pallas for CUDA: {e}")
    assert exported.mlir_module().count(f"@{target}") == 3


def test_bad_inputs_raise_clear_errors():
    x = jnp.zeros((1, 4, 3, 8), jnp.float32)
    kv = jnp.zeros((1, 4, 2, 8), jnp.float32)
    with pytest.raises(ValueError, match="multiple of.*Received"):
        pa.forward(x, kv, kv, interpret=True)
    with pytest.raises(ValueError, match="mask.*Received"):
        pa.forward(x, x, x, jnp.ones((1, 3, 4, 2), bool), interpret=True)
    with pytest.raises(TypeError, match="bool.*Received"):
        pa.forward(x, x, x, jnp.ones((1, 1, 1, 4), jnp.int32), interpret=True)
    big = jnp.zeros((1, 4, 1, 257), jnp.float32)
    with pytest.raises(ValueError, match="Head dim.*Received"):
        pa.forward(big, big, big, interpret=True)


def test_empty_inputs():
    q = jnp.ones((1, 3, 2, 8), jnp.float32)
    kv = jnp.ones((1, 0, 2, 8), jnp.float32)
    out, lse = pa.forward(q, kv, kv, interpret=True)
    assert np.all(np.asarray(out) == 0) and np.all(np.asarray(lse) == np.inf)
    dq, dk, dv = pa.backward(q, kv, kv, out, lse, q, interpret=True)
    assert dq.shape == q.shape and dk.shape == kv.shape
    assert np.all(np.asarray(dq) == 0)


def test_platform_dispatch_and_status(monkeypatch):
    x = jnp.zeros((1, 2, 1, 4), jnp.float32)
    monkeypatch.setattr(jax_attention, "platforms", lambda a: {"gpu"})
    assert jax_attention._path(x) == (jax_attention._GPU, None)
    assert jax_attention.unavailable_reason(x) is None
    monkeypatch.setattr(jax_attention, "platforms", lambda a: {"tpu"})
    assert "tpu" in jax_attention.unavailable_reason(x)
    monkeypatch.undo()
    assert jax_attention._path(x) == (jax_attention._CPU, None)
    rows = {name: (usable, detail) for name, usable, detail
            in jax_attention.status()}
    usable, detail = rows["jax GPU (Pallas)"]
    has_gpu = any(d.platform == "gpu" for d in jax.devices())
    assert usable == has_gpu and (has_gpu or detail == "no GPU")
