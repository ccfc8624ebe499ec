"""GPU check of mmkeras' Triton flash attention: correctness, then speed.

Run on a machine with an NVIDIA GPU (no network needed, nothing installed):

    python -m mmkeras.benchmarks.gpu_check          # full, < 5 min on an H200
    python -m mmkeras.benchmarks.gpu_check --quick  # fewer shapes

1. Correctness (autotuning off: one default config per kernel, few compiles):
   forward/backward of `flash_attention` on odd lengths, T != S, grouped-query
   heads, head dims 40..256, causal, key-padding and full masks (with fully
   masked rows), fp32/fp16/bf16, against a float64 torch reference computed on
   the GPU. fp32 must be within 1e-5 relative norm; fp16/bf16 within twice
   the error of the same math done by torch in that dtype. Also the torch
   custom-op autograd path and (time permitting) `torch.compile`.
2. Speed (autotuning on): forward and forward+backward at T = S in
   {1024, 4096, 16384} with B*T = 16384 tokens, N = 16 heads, H in {64, 128},
   bf16, causal and not, against torch SDPA with the flash backend and, when
   JAX with a GPU is importable, jax.nn.dot_product_attention(cudnn). Medians
   of repeated runs; TFLOP/s count 4*B*N*T*S*H for the forward (half of it
   when causal) and 2.5x that for the backward.

Exit status: 0 when every correctness check passed (or no GPU), 1 otherwise.
"""

import argparse
import math
import os
import statistics
import sys
import time
import traceback


def _environment():
    """This process's environment with what the check needs: no JAX memory
    preallocation, a Keras backend that does not load TensorFlow next to the
    GPU libraries, and compiled (not interpreted) Triton kernels."""
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env.setdefault("KERAS_BACKEND", "torch")
    env.pop("TRITON_INTERPRET", None)
    return env


_T0 = time.monotonic()


def _elapsed():
    return time.monotonic() - _T0


def _log(msg):
    print(f"[{_elapsed():6.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------
# References
#
# Plain torch math on the GPU rather than the package's keras.ops reference
# (mmkeras.ops.attention_reference): the check needs the log-sum-exp, which
# that reference does not return, and for fp16/bf16 the same math computed in
# the input dtype (the "twice the error of torch in that dtype" bound), where
# that reference computes in float32. In float64 the two are the same function.
# --------------------------------------------------------------------------


def _allowed(B, N, T, S, mask, is_causal, device):
    import torch

    allow = torch.ones(B, N, T, S, dtype=torch.bool, device=device)
    if is_causal:
        allow &= torch.ones(T, S, dtype=torch.bool, device=device).tril()
    if mask is not None:
        allow &= mask
    return allow


def torch_math_attention(q, k, v, mask, is_causal, scale=None):
    """Attention in q's dtype with plain torch ops (differentiable).

    Rows with no attended key give 0 (and zero gradients), like mmkeras.
    Returns out (B,T,N,H) and lse (B,N,T) (+inf on empty rows).
    """
    import torch

    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    g = N // K
    scale = 1.0 / math.sqrt(H) if scale is None else scale
    qh = q.transpose(1, 2)
    kh = k.repeat_interleave(g, 2).transpose(1, 2)
    vh = v.repeat_interleave(g, 2).transpose(1, 2)
    allow = _allowed(B, N, T, S, mask, is_causal, q.device)
    empty = ~allow.any(-1)
    s = (qh @ kh.transpose(-1, -2)) * scale
    s = s.masked_fill(~allow, float("-inf"))
    s = torch.where(empty[..., None], torch.zeros_like(s), s)
    lse = torch.logsumexp(s.float(), -1)
    p = torch.softmax(s, -1) * allow
    out = (p @ vh).transpose(1, 2)
    lse = torch.where(empty, torch.full_like(lse, float("inf")), lse)
    return out, lse


def rel(a, b):
    a = a.double()
    b = b.double()
    den = b.norm().item()
    num = (a - b).norm().item()
    return num / den if den > 0 else num


def make_mask(kind, B, N, T, S, device, gen):
    import torch

    if kind is None:
        return None
    if kind == "padding":
        lengths = torch.randint(1, S + 1, (B,), generator=gen, device=device)
        lengths[0] = S
        keep = torch.arange(S, device=device)[None, :] < lengths[:, None]
        return keep[:, None, None, :]
    if kind == "full":
        m = torch.rand(B, N, T, S, generator=gen, device=device) < 0.6
        m[:, :, T // 2] = False
        return m
    raise ValueError(kind)


# --------------------------------------------------------------------------
# 1. Correctness
# --------------------------------------------------------------------------

CORRECTNESS_CASES = [
    # dtype, B, T, S, N, K, H, causal, mask
    ("float32", 1, 300, 300, 4, 2, 40, True, None),
    ("float32", 1, 129, 257, 4, 4, 64, False, "full"),
    ("bfloat16", 2, 1000, 1000, 8, 2, 64, True, None),  # mask-free causal path
    ("bfloat16", 1, 777, 1333, 8, 8, 128, True, "padding"),
    ("float16", 2, 513, 257, 4, 1, 80, False, "full"),
    ("bfloat16", 1, 64, 2048, 4, 4, 256, False, None),
    ("float16", 1, 1, 129, 4, 2, 96, False, "padding"),
    ("bfloat16", 1, 2000, 2000, 8, 1, 128, True, None),
    # Enough (batch, kv head, key block) programs: dK/dV group loop, no split.
    ("bfloat16", 8, 512, 2048, 8, 4, 64, False, "padding"),
]


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def check_case(case, fa, dev="cuda"):
    import torch

    dname, B, T, S, N, K, H, causal, mask_kind = case
    dtype = getattr(torch, dname)
    gen = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(B, T, N, H, device=dev, generator=gen).to(dtype)
    k = torch.randn(B, S, K, H, device=dev, generator=gen).to(dtype)
    v = torch.randn(B, S, K, H, device=dev, generator=gen).to(dtype)
    dout = torch.randn(B, T, N, H, device=dev, generator=gen).to(dtype)
    mask = make_mask(mask_kind, B, N, T, S, dev, gen)

    out, lse = fa.forward(q, k, v, mask=mask, is_causal=causal)
    dq, dk, dv = fa.backward(
        q, k, v, out, lse, dout, mask=mask, is_causal=causal
    )
    _sync(dev)

    def ref_in(dt):
        xs = [x.detach().to(dt).requires_grad_() for x in (q, k, v)]
        o, l = torch_math_attention(*xs, mask, causal)
        grads = torch.autograd.grad(o, xs, dout.to(dt))
        return o.detach(), l.detach(), grads

    r_out, r_lse, r_grads = ref_in(torch.float64)
    problems = []
    for name, x in (("out", out), ("dq", dq), ("dk", dk), ("dv", dv)):
        if not torch.isfinite(x).all():
            problems.append(f"{name} not finite")
    same_inf = torch.equal(torch.isinf(lse), torch.isinf(r_lse))
    if torch.isnan(lse).any() or not same_inf:
        problems.append("lse inf/NaN pattern differs")
    fin = torch.isfinite(r_lse)
    errs = {
        "out": rel(out, r_out),
        "lse": rel(lse[fin], r_lse[fin]),
        "dq": rel(dq, r_grads[0]),
        "dk": rel(dk, r_grads[1]),
        "dv": rel(dv, r_grads[2]),
    }
    if dtype == torch.float32:
        bounds = {n: 1e-5 for n in errs}
    else:
        b_out, _, b_grads = ref_in(dtype)
        base = {
            "out": rel(b_out, r_out),
            "dq": rel(b_grads[0], r_grads[0]),
            "dk": rel(b_grads[1], r_grads[1]),
            "dv": rel(b_grads[2], r_grads[2]),
        }
        bounds = {n: 2 * base[n] for n in base}
        bounds["lse"] = 1e-5
    for n, e in errs.items():
        if not e <= bounds[n]:
            problems.append(f"{n} err {e:.2e} > {bounds[n]:.2e}")
    detail = " ".join(f"{n}={e:.1e}" for n, e in errs.items())
    return problems, detail


def check_autograd_and_compile(
    torch_ops, do_compile, dev="cuda", shape=(2, 300, 300, 8, 2, 64)
):
    import torch

    problems = []
    gen = torch.Generator(device=dev).manual_seed(1)
    B, T, S, N, K, H = shape
    q, k, v, dout = (
        torch.randn(B, L, M, H, device=dev, generator=gen, dtype=torch.bfloat16)
        for L, M in ((T, N), (S, K), (S, K), (T, N))
    )
    mask = make_mask("padding", B, N, T, S, dev, gen)

    def run(fn):
        xs = [x.detach().clone().requires_grad_() for x in (q, k, v)]
        o = fn(*xs, mask=mask, is_causal=True)
        o.backward(dout)
        _sync(dev)
        return [o.detach()] + [x.grad for x in xs]

    eager = run(torch_ops.attention)
    xs = [x.detach().float().requires_grad_() for x in (q, k, v)]
    r_o, _ = torch_math_attention(*xs, mask, True)
    r_g = torch.autograd.grad(r_o, xs, dout.float())
    names = ("out", "dq", "dk", "dv")
    for name, a, b in zip(names, eager, [r_o.detach(), *r_g]):
        e = rel(a, b)
        if not e < 2e-2:
            problems.append(f"autograd {name} err {e:.2e} vs fp32 math")
    if do_compile:
        try:
            compiled = torch.compile(torch_ops.attention, fullgraph=True)
            got = run(compiled)
            for name, a, b in zip(("out", "dq", "dk", "dv"), got, eager):
                e = rel(a, b)
                if not e < 1e-2:
                    problems.append(
                        f"torch.compile {name} differs from eager: {e:.2e}"
                    )
        except Exception as e:  # report, keep going
            problems.append(
                f"torch.compile failed: {type(e).__name__}: {str(e)[:300]}"
            )
    return problems


# --------------------------------------------------------------------------
# 0. Parallel precompilation
#
# Triton compiles an autotuned kernel's configs one after the other, and this
# check needs ~100 kernel binaries. Worker processes compile them ahead of
# time with `warmup` (same specialization as the real launch), which fills
# Triton's on-disk cache; the real launches then load from it.
# --------------------------------------------------------------------------

_MAX_CONFIGS = 6  # config indices tried per autotuned kernel


class _Precompile:
    """A `wrap` hook for the launchers that compiles instead of launching.

    Only (kernel name, config index) pairs accepted by `select` compile.
    """

    def __init__(self, select):
        self.select = select

    def __call__(self, kernel):
        hook = self

        class _Grid:
            def __getitem__(self, grid):
                def launch(*args, **kwargs):
                    hook.warm(kernel, grid, args, kwargs)

                return launch

        return _Grid()

    def warm(self, kernel, grid, args, kwargs):
        from triton.runtime.autotuner import Autotuner

        if isinstance(kernel, Autotuner):
            kernel.nargs = dict(zip(kernel.arg_names, args))
            configs = kernel.prune_configs(kwargs)
            kernel.nargs = None
            for i, c in enumerate(configs):
                if self.select(kernel.base_fn.__name__, i):
                    kernel.fn.warmup(
                        *args, grid=grid, **kwargs, **c.all_kwargs()
                    )
        elif self.select(kernel.__name__, 0):
            kernel.warmup(*args, grid=grid, **kwargs)


def _precompile_job(job):
    """Compiles one kernel config of one call; runs in a worker process."""
    import torch

    from mmkeras.triton_kernels import flash_attention as fa

    (dname, B, T, S, N, K, H, causal, mask_kind), autotune, name, index = job
    try:
        fa.set_autotune(autotune)
        dtype = getattr(torch, dname)
        gen = torch.Generator(device="cuda").manual_seed(0)
        q = torch.zeros(B, T, N, H, device="cuda", dtype=dtype)
        k = torch.zeros(B, S, K, H, device="cuda", dtype=dtype)
        v = torch.zeros_like(k)
        mask = make_mask(mask_kind, B, N, T, S, "cuda", gen)
        hook = _Precompile(lambda n, i: n == name and i == index)
        fa._forward_impl(q, k, v, mask, causal, None, wrap=hook)
        lse = torch.zeros(B, N, T, device="cuda", dtype=torch.float32)
        fa._backward_impl(q, k, v, q, lse, q, mask, causal, None, wrap=hook)
        return None
    except Exception as e:  # the real launch will compile (and report) it
        return f"{name}[{index}] {job[0]}: {type(e).__name__}: {str(e)[:200]}"


def precompile(calls, workers):
    """calls: [(case, autotune)]; compiles every kernel config they use."""
    import multiprocessing as mp

    from mmkeras.triton_kernels import flash_attention as fa

    names = [
        fa._attn_fwd_kernel.__name__,
        fa._attn_bwd_dkdv_kernel.__name__,
        fa._attn_bwd_dq_kernel.__name__,
    ]
    jobs = []
    for case, autotune in calls:
        jobs.append((case, autotune, fa._bwd_preprocess_kernel.__name__, 0))
        for name in names:
            for i in range(_MAX_CONFIGS if autotune else 1):
                jobs.append((case, autotune, name, i))
    t0 = time.monotonic()
    with mp.get_context("spawn").Pool(workers) as pool:
        errors = [e for e in pool.imap_unordered(_precompile_job, jobs) if e]
    _log(f"precompiled {len(jobs)} kernel jobs on {workers} processes in "
         f"{time.monotonic() - t0:.0f}s ({len(errors)} errors)")
    for e in errors[:5]:
        _log(f"  precompile error: {e}")


# --------------------------------------------------------------------------
# 2. Speed
# --------------------------------------------------------------------------


def _jax_gpu():
    try:
        import jax

        if any(d.platform == "gpu" for d in jax.devices()):
            return jax
    except Exception:
        pass
    return None


def bench_jax(jax, B, T, N, H, causal, reps):
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    q, k, v, do = (
        jax.random.normal(kk, (B, T, N, H), jnp.bfloat16) for kk in keys
    )

    def attn(q, k, v):
        return jax.nn.dot_product_attention(
            q, k, v, is_causal=causal, implementation="cudnn"
        )

    fwd = jax.jit(attn)

    @jax.jit
    def fwd_bwd(q, k, v, do):
        out, vjp = jax.vjp(attn, q, k, v)
        return out, vjp(do)

    def timed(fn, *args):
        jax.block_until_ready(fn(*args))  # compile
        jax.block_until_ready(fn(*args))
        inner = 5
        samples = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(inner):
                r = fn(*args)
            jax.block_until_ready(r)
            samples.append((time.perf_counter() - t0) * 1e3 / inner)
        return statistics.median(samples)

    return timed(fwd, q, k, v), timed(fwd_bwd, q, k, v, do)


_BENCH_HEADS = 16


def bench_shapes(quick):
    lengths = [1024, 4096] if quick else [1024, 4096, 16384]
    heads = [128] if quick else [64, 128]
    return [(H, T, c) for H in heads for T in lengths for c in (False, True)]


def run_benchmarks(fa, torch_ops, args):
    import torch
    import torch.nn.functional as F
    import triton.testing
    from torch.nn.attention import SDPBackend, sdpa_kernel

    jax = None if args.no_jax else _jax_gpu()
    _log("JAX cuDNN baseline: "
         + ("enabled" if jax else "not available (skipped)"))
    rows = []
    N = _BENCH_HEADS
    for H, T, causal in bench_shapes(args.quick):
        if _elapsed() > args.budget:
            _log(f"time budget {args.budget}s reached: "
                 "skipping remaining shapes")
            return rows
        B = max(1, 16384 // T)
        row = dict(H=H, T=T, B=B, causal=causal)
        flops_fwd = 4.0 * B * N * T * T * H * (0.5 if causal else 1.0)
        flops_fb = 3.5 * flops_fwd
        gen = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, dout = (
            torch.randn(
                B, T, N, H, device="cuda", dtype=torch.bfloat16, generator=gen
            )
            for _ in range(4)
        )
        for x in (q, k, v):
            x.requires_grad_()
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # (B,N,T,H) views
        dout_t = dout.transpose(1, 2)

        def ours_fwd():
            return fa.forward(q, k, v, is_causal=causal)

        def ours_fb():
            torch_ops.attention(q, k, v, is_causal=causal).backward(dout)

        def sdpa_fwd():  # no autograd bookkeeping, like ours_fwd
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.no_grad():
                return F.scaled_dot_product_attention(
                    qt, kt, vt, is_causal=causal
                )

        def sdpa_fb():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                o = F.scaled_dot_product_attention(
                    qt, kt, vt, is_causal=causal
                )
                o.backward(dout_t)

        def bench(fn):
            fn()  # autotune / warm up outside the timing
            torch.cuda.synchronize()
            return triton.testing.do_bench(
                fn, warmup=25, rep=args.rep_ms, grad_to_none=[q, k, v],
                return_mode="median",
            )

        try:
            t_tune = time.monotonic()
            row["ours_fwd"] = bench(ours_fwd)
            row["ours_fb"] = bench(ours_fb)
            row["tune_s"] = time.monotonic() - t_tune
            with torch.no_grad():
                o_ours = ours_fwd()[0]
                o_ref = sdpa_fwd().transpose(1, 2)
            row["diff"] = rel(o_ours, o_ref)
        except Exception as e:
            row["error"] = f"ours: {type(e).__name__}: {str(e)[:200]}"
        try:
            row["sdpa_fwd"] = bench(sdpa_fwd)
            row["sdpa_fb"] = bench(sdpa_fb)
        except Exception as e:
            row.setdefault("error", f"sdpa: {type(e).__name__}: {str(e)[:200]}")
        if jax is not None:
            try:
                row["jax_fwd"], row["jax_fb"] = bench_jax(
                    jax, B, T, N, H, causal, args.jax_reps
                )
            except Exception as e:
                row["jax_error"] = f"{type(e).__name__}: {str(e)[:200]}"
        for kind, fl in (("fwd", flops_fwd), ("fb", flops_fb)):
            for who in ("ours", "sdpa", "jax"):
                ms = row.get(f"{who}_{kind}")
                if ms:
                    row[f"{who}_{kind}_tf"] = fl / (ms * 1e-3) / 1e12
        rows.append(row)
        _log(
            f"H={H} T={T} B={B} causal={causal}: "
            + ", ".join(
                f"{n}={row[n]:.3f}ms" for n in
                ("ours_fwd", "sdpa_fwd", "jax_fwd",
                 "ours_fb", "sdpa_fb", "jax_fb")
                if n in row
            )
            + (f" (ours: {row['tune_s']:.1f}s incl. autotuning)"
               if "tune_s" in row else "")
            + (f" ERROR {row['error']}" if "error" in row else "")
        )
        del q, k, v, dout, qt, kt, vt, dout_t
        torch.cuda.empty_cache()
    return rows


def print_table(rows):
    def f(x, fmt="{:.0f}"):
        return fmt.format(x) if x is not None else "-"

    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "-"

    def group(title):
        return (f"{title:>8} {'sdpa':>6} {'jax':>6} "
                f"{'o/sdpa':>6} {'o/jax':>6}")

    def cells(kind):
        o, sd, jx = (g(f"{w}_{kind}_tf") for w in ("ours", "sdpa", "jax"))
        return (f"{f(o):>8} {f(sd):>6} {f(jx):>6} "
                f"{ratio(o, sd):>6} {ratio(o, jx):>6}")

    head = (
        f"{'H':>4} {'T':>6} {'B':>3} {'causal':>6} | "
        f"{group('fwd ours')} | {group('f+b ours')} | {'diff':>7}"
    )
    print()
    print("TFLOP/s (median); ratios = ours / baseline (> 1: ours faster); "
          "diff = rel. norm of ours vs SDPA output")
    print(head)
    print("-" * len(head))
    for r in rows:
        g = r.get
        print(
            f"{r['H']:>4} {r['T']:>6} {r['B']:>3} {str(r['causal']):>6} | "
            f"{cells('fwd')} | {cells('fb')} | "
            f"{f(g('diff'), '{:.1e}'):>7}"
        )
    for r in rows:
        for key in ("error", "jax_error"):
            if key in r:
                print(f"  H={r['H']} T={r['T']} causal={r['causal']}: "
                      f"{key}: {r[key]}")


# --------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    flag = dict(action="store_true")
    p.add_argument("--quick", **flag, help="fewer benchmark shapes")
    p.add_argument("--no-jax", **flag, help="skip the JAX cuDNN baseline")
    p.add_argument("--no-bench", **flag, help="correctness only")
    p.add_argument("--no-compile-check", **flag,
                   help="skip the torch.compile check")
    p.add_argument("--budget", type=float, default=250.0,
                   help="seconds after which remaining benchmark shapes "
                   "are skipped")
    p.add_argument("--rep-ms", type=int, default=100,
                   help="do_bench rep time per measurement")
    p.add_argument("--jax-reps", type=int, default=10)
    p.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 1),
                   help="processes that precompile the kernels "
                   "(0: no precompilation)")
    args = p.parse_args(argv)

    try:
        import torch
    except ImportError:
        print("torch is not installed: nothing to check.")
        return 0
    if not torch.cuda.is_available():
        print("No CUDA GPU visible to torch: the Triton attention GPU "
              "check needs one. Nothing to do.")
        return 0
    try:
        import triton
    except ImportError:
        print("triton is not installed: nothing to check.")
        return 0

    props = torch.cuda.get_device_properties(0)
    _log(
        f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB, "
        f"sm_{props.major}{props.minor}), torch {torch.__version__}, "
        f"triton {triton.__version__}"
    )
    from mmkeras.triton_kernels import flash_attention as fa
    from mmkeras.backend import torch_attention_triton as torch_ops

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    if args.jobs > 0:
        calls = [(case, False) for case in CORRECTNESS_CASES]
        if not args.no_bench:
            # One call per tuning variant; the lengths only need the same
            # divisibility, so 1024 stands for every benchmark length.
            variants = sorted({(H, c) for H, _, c in bench_shapes(args.quick)})
            n = _BENCH_HEADS
            calls += [
                (("bfloat16", 1, 1024, 1024, n, n, H, c, None), True)
                for H, c in variants
            ]
        try:
            precompile(calls, args.jobs)
        except Exception as e:
            _log(f"precompilation failed ({type(e).__name__}: {e}); "
                 "compiling on first use")

    failures = []
    _log("correctness (autotuning off: default config per kernel)")
    fa.set_autotune(False)
    for case in CORRECTNESS_CASES:
        try:
            problems, detail = check_case(case, fa)
        except Exception as e:
            traceback.print_exc()
            problems, detail = [f"raised {type(e).__name__}: {e}"], ""
        status = "ok  " if not problems else "FAIL"
        _log(f"{status} {case}: {detail} {'; '.join(problems)}")
        if problems:
            failures.append((case, problems))
    do_compile = not args.no_compile_check
    if do_compile and _elapsed() > 0.5 * args.budget:
        _log("torch.compile check skipped: over half of the time budget used")
        do_compile = False
    try:
        problems = check_autograd_and_compile(torch_ops, do_compile)
    except Exception as e:
        traceback.print_exc()
        problems = [f"raised {type(e).__name__}: {e}"]
    _log(("ok   " if not problems else "FAIL ") + "torch custom op autograd"
         + (" + torch.compile" if do_compile else "") + " "
         + "; ".join(problems))
    if problems:
        failures.append(("torch_ops", problems))
    fa.set_autotune(True)
    # Forget the untuned choices so that benchmark shapes sharing a tuning
    # key with a correctness case get tuned.
    for kern in (fa._attn_fwd, fa._attn_bwd_dkdv, fa._attn_bwd_dq):
        kern.cache.clear()

    if not args.no_bench:
        _log("benchmarks (autotuning on; first call per shape tunes)")
        rows = run_benchmarks(fa, torch_ops, args)
        print_table(rows)

    print()
    if failures:
        print(f"CORRECTNESS FAILURES: {len(failures)}")
        for case, problems in failures:
            print(f"  {case}: {'; '.join(problems)}")
    else:
        print("All correctness checks passed.")
    _log("done")
    return 1 if failures else 0


if __name__ == "__main__":
    if _environment() != dict(os.environ):
        # `python -m` imported mmkeras, and with it Keras (its backend chosen)
        # and JAX, before this module ran: start again with the environment
        # set before anything is imported.
        os.execve(sys.executable,
                  [sys.executable, "-m", "mmkeras.benchmarks.gpu_check",
                   *sys.argv[1:]], _environment())
    sys.exit(main())
