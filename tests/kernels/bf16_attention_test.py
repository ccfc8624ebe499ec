"""The C++ attention with bfloat16 products (the avx512bf16 level):
held to float64 at odd sizes, within twice the error of a reference computed
in bfloat16, and never used where the caller did not ask for it.

Like isa_test.py, these run once, in the torch backend's pass: the kernel
library is shared by every backend's adapter. Each backend's op tests cover
bfloat16 inputs through its own adapter (tests/ops/attention_test.py).
"""

import os

import numpy as np
import pytest

if os.environ.get("KERAS_BACKEND", "tensorflow") != "torch":
    pytest.skip(
        "the kernel library is shared by every backend's adapter, so its "
        "bfloat16 path is checked once, in the torch backend's pass",
        allow_module_level=True,
    )

from isa_test import levels_this_cpu_runs  # noqa: E402
from isa_test import run_python  # noqa: E402
from numpy_oracle import attention_np  # noqa: E402
from numpy_oracle import rel_error  # noqa: E402

from mmkeras.backend import cpu_module  # noqa: E402

HAS_BF16 = "avx512bf16" in levels_this_cpu_runs()

# (B, T, S, N, K, H, is_causal): odd lengths, T != S, head dims 40/80/96,
# grouped-query heads.
CASES = [
    (1, 1, 1, 1, 1, 8, False),
    (2, 17, 129, 4, 2, 40, False),
    (1, 129, 17, 8, 1, 80, True),
    (2, 64, 300, 4, 4, 96, False),
    (1, 300, 300, 2, 1, 64, True),
    (1, 5, 7, 2, 2, 1, False),
]


def to_bf16(x):
    """x rounded to the nearest bfloat16 (ties to even), as float32."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32)


def inputs(B, T, S, N, K, H, seed=0):
    rng = np.random.default_rng(seed)
    return [to_bf16(rng.standard_normal(shape, dtype=np.float32))
            for shape in ((B, T, N, H), (B, S, K, H), (B, S, K, H))]


def bf16_reference(q, k, v, is_causal, dout):
    """Attention and its gradients computed as a bfloat16 framework would:
    probabilities, dS and every result rounded to bfloat16 (products
    accumulated in float64). Returns out, (dq, dk, dv)."""
    G = q.shape[2] // k.shape[2]
    scale = 1.0 / np.sqrt(q.shape[-1])
    q64, k64, v64, do64 = (x.astype(np.float64) for x in (q, k, v, dout))
    kk, vv = (np.repeat(x, G, axis=2) for x in (k64, v64))
    s = np.einsum("btnh,bsnh->bnts", q64, kk) * scale
    if is_causal:
        T, S = s.shape[-2:]
        s = np.where(np.tril(np.ones((T, S), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p = to_bf16(p / p.sum(-1, keepdims=True)).astype(np.float64)
    out = np.einsum("bnts,bsnh->btnh", p, vv)
    dp = np.einsum("btnh,bsnh->bnts", do64, vv)
    d = np.einsum("btnh,btnh->bnt", do64, out)[..., None]
    ds = to_bf16(p * (dp - d)).astype(np.float64)
    dq = np.einsum("bnts,bsnh->btnh", ds, kk) * scale
    dk = np.einsum("bnts,btnh->bsnh", ds, q64) * scale
    dv = np.einsum("bnts,btnh->bsnh", p, do64)

    def per_kv_head(x):  # sum the G query heads of each key/value head
        B, S, _, H = x.shape
        return x.reshape(B, S, -1, G, H).sum(3)

    return to_bf16(out), [to_bf16(g) for g in
                          (dq, per_kv_head(dk), per_kv_head(dv))]


def kernels():
    module, reason = cpu_module.load()
    assert module is not None, reason
    return module


@pytest.mark.skipif(not HAS_BF16, reason=(
    "this CPU has no AVX512-BF16, so the kernels run bfloat16 inputs in "
    "float32 (test_without_bf16_level_products_stay_float32 covers that); "
    "isa_test.test_every_level_compiles compiles the bfloat16 code"))
@pytest.mark.parametrize("case", CASES, ids=str)
def test_bf16_products_match_float64(case):
    B, T, S, N, K, H, is_causal = case
    q, k, v = inputs(B, T, S, N, K, H)
    scale = 1.0 / np.sqrt(H)
    out, lse = kernels().attention_forward(q, k, v, None, is_causal, scale,
                                           bf16_products=True)
    fp32, fp32_lse = kernels().attention_forward(q, k, v, None, is_causal,
                                                 scale)
    assert np.all(np.isfinite(lse))
    dout = inputs(B, T, S, N, K, H, seed=1)[0]
    grads = kernels().attention_backward(q, k, v, out, lse, dout, None,
                                         is_causal, scale, bf16_products=True)
    fp32_grads = kernels().attention_backward(q, k, v, out, lse, dout, None,
                                              is_causal, scale)
    exact_out, exact_grads = attention_np(q, k, v, None, is_causal, dout=dout)
    ref_out, ref_grads = bf16_reference(q, k, v, is_causal, dout)
    # Rounded to bfloat16, as the op returns them, within twice the error
    # of the same-precision reference (docs/architecture.md's low-precision rule).
    for name, got, ref, exact in zip(("out", "dq", "dk", "dv"),
                                     [out, *grads], [ref_out, *ref_grads],
                                     [exact_out, *exact_grads]):
        assert np.all(np.isfinite(got)), name
        assert (rel_error(to_bf16(got), exact)
                <= 2 * rel_error(ref, exact) + 1e-7), name
    # The bfloat16 path ran: it rounds P (and dS), so it differs from
    # float32 (except with a single key, where P is 1).
    if S > 1:
        assert not np.array_equal(out, fp32), "out"
        for name, g, g32 in zip(("dq", "dk", "dv"), grads, fp32_grads):
            assert not np.array_equal(g, g32), name
    # lse comes from float32 scores of exact products: as accurate as fp32.
    assert rel_error(lse, fp32_lse) <= 1e-5


def test_without_bf16_level_products_stay_float32():
    """At a level without AVX512-BF16 (here: avx512, or avx2), asking for
    bfloat16 products computes in float32: the same bits as a float32 call,
    forward and backward."""
    level = "avx512" if "avx512" in levels_this_cpu_runs() else "avx2"
    code = (
        "import numpy as np\n"
        "from mmkeras import _cpu_kernels as k\n"
        f"assert k.isa() == {level!r}, k.isa()\n"
        "rng = np.random.default_rng(0)\n"
        "q, kk, v = (rng.standard_normal((2, 33, 4, 40), dtype=np.float32)"
        " for _ in range(3))\n"
        "a = k.attention_forward(q, kk, v, None, True, 0.2)\n"
        "b = k.attention_forward(q, kk, v, None, True, 0.2,"
        " bf16_products=True)\n"
        "ga = k.attention_backward(q, kk, v, *a, q, None, True, 0.2)\n"
        "gb = k.attention_backward(q, kk, v, *a, q, None, True, 0.2,"
        " bf16_products=True)\n"
        "print('SAME', all(np.array_equal(x, y) for x, y in"
        " zip([*a, *ga], [*b, *gb])))\n"
    )
    proc = run_python(code, level=level)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SAME True" in proc.stdout
