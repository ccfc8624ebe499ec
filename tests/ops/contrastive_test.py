"""contrastive_loss against float64 numpy, on the current Keras backend
(native and reference implementations)."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from backend_grads import vjp
from keras import ops
from numpy_oracle import contrastive_inputs
from numpy_oracle import contrastive_np
from numpy_oracle import rel_error
from op_helpers import compile_fn

import mmkeras

# ------------------------------------------------------------ inputs

# (B, D, kind, scale, bias, normalize): B in {1, 17, 129, 300}, odd D.
CASES = [
    (1, 8, "softmax", 2.0, None, False),
    (17, 33, "softmax", 1 / 0.07, None, True),
    (129, 64, "softmax", 3.0, 0.5, False),
    (300, 17, "softmax", 100.0, None, True),
    (1, 8, "sigmoid", 2.0, -1.0, False),
    (17, 129, "sigmoid", 10.0, -10.0, True),
    (129, 1, "sigmoid", 1.5, None, False),
    (300, 40, "sigmoid", 50.0, -5.0, True),
]


def run(a, b, scale, bias, kind, implementation, dloss=1.0,
        wrap=lambda fn: fn):
    args = [a, b, np.float32(scale)]
    if bias is not None:
        args.append(np.float32(bias))

    def fn(a, b, scale, bias=None):
        return mmkeras.ops.contrastive_loss(
            a, b, scale, bias, kind=kind, implementation=implementation
        )

    return vjp(wrap(fn), args, np.float32(dloss))


def assert_close(loss, grads, ref_loss, ref_grads, tol=1e-5):
    assert loss.shape == ()
    assert np.isfinite(loss)
    assert rel_error(loss, ref_loss) <= tol
    for name, grad, ref in zip(("da", "db", "dscale", "dbias"), grads,
                               ref_grads):
        assert np.all(np.isfinite(grad)), name
        assert grad.shape == np.shape(ref), name
        assert rel_error(grad, ref) <= tol, name


# ------------------------------------------------------------ correctness


# The reference is slow to trace op by op on JAX: it runs on half the cases
# (still B in {1, 17, 129, 300} and both kinds).
IMPLEMENTATION_CASES = [("native", c) for c in CASES] + [
    ("reference", CASES[i]) for i in (0, 2, 5, 7)
]


@pytest.mark.parametrize("implementation,case", IMPLEMENTATION_CASES, ids=str)
def test_matches_float64(case, implementation):
    B, D, kind, scale, bias, normalize = case
    a, b = contrastive_inputs(B, D, normalize)
    loss, grads = run(a, b, scale, bias, kind, implementation, dloss=0.7)
    ref_loss, ref_grads = contrastive_np(a, b, scale, bias, kind, dloss=0.7)
    assert len(grads) == (3 if bias is None else 4)
    assert_close(loss, grads, ref_loss, ref_grads)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_large_batch_native(kind):
    a, b = contrastive_inputs(1000, 24, True, seed=1)
    loss, grads = run(a, b, 20.0, -2.0, kind, "native")
    assert_close(loss, grads, *contrastive_np(a, b, 20.0, -2.0, kind))


def test_native_b4096_allocates_no_b_by_b_matrix():
    """Forward and backward at B = 4096 in a fresh interpreter that loads
    only numpy and the compiled module: the peak RSS grows by far less than
    one (B, B) float32 matrix (64 MiB)."""
    from mmkeras import _cpu_kernels

    script = textwrap.dedent(f"""
        import importlib.machinery, importlib.util, resource
        import numpy as np
        loader = importlib.machinery.ExtensionFileLoader(
            "mmkeras._cpu_kernels", {_cpu_kernels.__file__!r})
        spec = importlib.util.spec_from_loader(loader.name, loader)
        k = importlib.util.module_from_spec(spec)
        loader.exec_module(k)
        rng = np.random.default_rng(0)
        a = rng.standard_normal((4096, 64), dtype=np.float32) * 0.1
        b = rng.standard_normal((4096, 64), dtype=np.float32) * 0.1
        s, t = np.float32(10.0), np.float32(-1.0)
        k.contrastive_forward(a[:64], b[:64], s, t, False)  # warm up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for sigmoid in (False, True):
            loss, lse = k.contrastive_forward(a, b, s, t, sigmoid)
            k.contrastive_backward(a, b, s, t, lse, np.float32(1.0), sigmoid)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) * 1024)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    growth = int(result.stdout.split()[-1])
    assert growth < 16 * 2**20, f"peak RSS grew by {growth / 2**20:.1f} MiB"


def test_outputs_are_poisoned_in_tests():
    # conftest sets this before the kernels load: every native output starts
    # as NaN, so the finiteness checks above catch unwritten elements.
    assert os.environ.get("MMKERAS_POISON_OUTPUTS") == "1"


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_jit_compiled_function(kind):
    a, b = contrastive_inputs(70, 20, True)
    loss, grads = run(a, b, 10.0, -3.0, kind, "native", wrap=compile_fn)
    assert_close(loss, grads, *contrastive_np(a, b, 10.0, -3.0, kind))


@pytest.mark.parametrize("dtype,kind", [("float16", "softmax"),
                                        ("bfloat16", "sigmoid")])
def test_low_precision_within_twice_the_reference_error(dtype, kind):
    a, b = contrastive_inputs(65, 32, True)
    a, b = (np.asarray(ops.convert_to_numpy(ops.cast(ops.cast(x, dtype),
                                                     "float32")))
            for x in (a, b))
    exact_loss, exact_grads = contrastive_np(a, b, 10.0, -1.0, kind)
    results = {}
    for impl in ("native", "reference"):
        fn = lambda a, b: mmkeras.ops.contrastive_loss(  # noqa: E731
            a, b, 10.0, -1.0, kind=kind, implementation=impl
        )
        loss, grads = vjp(fn, [ops.cast(a, dtype), ops.cast(b, dtype)],
                          np.float32(1.0))
        results[impl] = [loss, *grads]
    for nat, ref, exact in zip(results["native"], results["reference"],
                               [exact_loss, *exact_grads[:2]]):
        # The reference rounds to the low dtype too; allow 2x its error.
        assert rel_error(nat, exact) <= 2 * rel_error(ref, exact) + 1e-3
    loss = mmkeras.ops.contrastive_loss(ops.cast(a, dtype), ops.cast(b, dtype),
                                        10.0, implementation="native")
    assert keras.backend.standardize_dtype(loss.dtype) == dtype


def test_scale_and_bias_accept_numbers_and_shape_1():
    a, b = contrastive_inputs(9, 5, False)
    ref, _ = contrastive_np(a, b, 4.0, -1.0, "sigmoid")
    for scale, bias in ((4.0, -1.0), (4, -1), (np.array([4.0], np.float32),
                                               np.array([-1.0], np.float32))):
        loss = mmkeras.ops.contrastive_loss(a, b, scale, bias, kind="sigmoid",
                                            implementation="native")
        assert rel_error(ops.convert_to_numpy(loss), ref) <= 1e-5


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="torch.library.opcheck is torch-only")
def test_torch_opcheck():
    import torch

    from mmkeras.backend import torch_contrastive

    a, b = contrastive_inputs(70, 20, True)
    a, b = (torch.tensor(x, requires_grad=True) for x in (a, b))
    scale = torch.tensor(10.0, requires_grad=True)
    bias = torch.tensor(-2.0, requires_grad=True)
    for sigmoid in (False, True):
        for t in (bias, None):
            torch.library.opcheck(torch_contrastive.contrastive_fwd,
                                  (a, b, scale, t, sigmoid))
            _, lse = torch_contrastive.contrastive_fwd(a, b, scale, t, sigmoid)
            torch.library.opcheck(
                torch_contrastive.contrastive_bwd,
                (a.detach(), b.detach(), scale.detach(),
                 None if t is None else t.detach(), lse, torch.tensor(1.0),
                 sigmoid),
            )


def test_symbolic_call_infers_shape():
    a = keras.KerasTensor((None, 32))
    loss = mmkeras.ops.contrastive_loss(a, a, 10.0, kind="sigmoid")
    assert loss.shape == ()


# ------------------------------------------------------------ errors

BAD_INPUTS = [
    (dict(a=(4,), b=(4,)), "`a`.*rank 2"),
    (dict(a=(4, 8), b=(5, 8)), "same shape"),
    (dict(a=(4, 8), b=(4, 6)), "same shape"),
    (dict(a=(0, 8), b=(0, 8)), "at least one pair"),
    (dict(a=(4, 8), b=(4, 8), scale=(2,)), "logit_scale.*scalar"),
    (dict(a=(4, 8), b=(4, 8), bias=(4, 1)), "logit_bias.*scalar"),
    (dict(a=(4, 8), b=(4, 8), kind="cosine"), "kind"),
    (dict(a=(4, 8), b=(4, 8), dtype="int32"), "`a`.*floating"),
]


@pytest.mark.parametrize("spec,message", BAD_INPUTS, ids=str)
def test_bad_input_raises_clear_error(spec, message):
    dtype = spec.get("dtype", "float32")
    a, b = np.ones(spec["a"], dtype), np.ones(spec["b"], dtype)
    scale = np.ones(spec.get("scale", ()), np.float32)
    bias = spec.get("bias")
    bias = None if bias is None else np.ones(bias, np.float32)
    with pytest.raises(ValueError, match=message) as info:
        mmkeras.ops.contrastive_loss(a, b, scale, bias,
                                     kind=spec.get("kind", "softmax"))
    assert "Received:" in str(info.value)


def test_native_raises_when_it_cannot_run(monkeypatch):
    a, b = contrastive_inputs(5, 4, False)
    monkeypatch.setattr(
        mmkeras.kernels, "native_unavailable_reason",
        lambda x, family="attention": f"the {family} adapter is not built",
    )
    with pytest.raises(ValueError, match="contrastive_loss.*contrastive adapter is "
                                         "not built.*Received"):
        mmkeras.ops.contrastive_loss(a, b, 2.0, implementation="native")
    # auto falls back to the reference and still computes the right thing
    loss = mmkeras.ops.contrastive_loss(a, b, 2.0)
    expected, _ = contrastive_np(a, b, 2.0, None, "softmax")
    assert rel_error(ops.convert_to_numpy(loss), expected) <= 1e-5


def test_float64_runs_the_reference_where_the_backend_has_it():
    x = ops.convert_to_tensor(np.ones((3, 4), np.float64))
    if keras.backend.standardize_dtype(x.dtype) != "float64":
        pytest.skip("this backend runs without float64 (jax_enable_x64 off)")
    with pytest.raises(ValueError, match="native.*float64.*Received"):
        mmkeras.ops.contrastive_loss(x, x, 1.0, implementation="native")
    loss = mmkeras.ops.contrastive_loss(x, x, 1.0)
    assert keras.backend.standardize_dtype(loss.dtype) == "float64"
