"""The C++ attention forward with bfloat16 products (the avx512bf16 level):
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
from numpy_attention import attention_np  # noqa: E402
from numpy_attention import rel_error  # noqa: E402

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


def bf16_reference(q, k, v, is_causal):
    """Attention computed as a bfloat16 framework would: probabilities and
    output rounded to bfloat16 (products accumulated in float64)."""
    G = q.shape[2] // k.shape[2]
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    k64, v64 = (np.repeat(x, G, axis=2) for x in (k64, v64))
    s = np.einsum("btnh,bsnh->bnts", q64, k64) / np.sqrt(q.shape[-1])
    if is_causal:
        T, S = s.shape[-2:]
        s = np.where(np.tril(np.ones((T, S), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p = to_bf16(p / p.sum(-1, keepdims=True)).astype(np.float64)
    return to_bf16(np.einsum("bnts,bsnh->btnh", p, v64))


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
    exact = attention_np(q, k, v, None, is_causal)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(lse))
    # The bfloat16 path ran: only the probabilities are rounded, so it
    # differs from float32 (except where every row has one key).
    if S > 1:
        assert not np.array_equal(out, fp32)
    # Rounded to bfloat16, as the op returns it, within twice the error of
    # the same-precision reference (DESIGN.md's rule for low precision).
    reference_error = rel_error(bf16_reference(q, k, v, is_causal), exact)
    assert rel_error(to_bf16(out), exact) <= 2 * reference_error + 1e-7
    # Before that rounding the error is the probabilities' alone.
    assert rel_error(out, exact) <= 4e-3
    # lse comes from float32 scores of exact products: as accurate as fp32.
    assert rel_error(lse, fp32_lse) <= 1e-5


def test_without_bf16_level_products_stay_float32():
    """At a level without AVX512-BF16 (here: avx512, or avx2), asking for
    bfloat16 products computes in float32: the same bits as a float32 call."""
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
        "print('SAME', all(np.array_equal(x, y) for x, y in zip(a, b)))\n"
    )
    proc = run_python(code, level=level)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SAME True" in proc.stdout
