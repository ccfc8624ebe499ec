"""Times the fused fusion and contrastive ops against the same computation in
plain `keras.ops` on each Keras backend, and measures their peak memory.

Ops: `gated_fusion`, `low_rank_fusion`, and `contrastive_loss` (softmax and
sigmoid) at each B x d of --contrastive; each forward (fwd) and forward +
backward (fwd+bwd, the gradients of all inputs). "native" is the mmkeras C++
kernel (`implementation="native"`), "keras.ops" the pure `keras.ops`
reference of the same op (`implementation="reference"`).

    python -m mmkeras.benchmarks.fusion                    # all backends
    python -m mmkeras.benchmarks.fusion --backends jax --only contrastive \\
        --contrastive 8192x512 --json out.json
    mmkeras bench fusion

Each backend runs in its own subprocess (one Keras backend per process), the
way a training step runs: under `jax.jit` on JAX, inside `tf.function` on
TensorFlow, eagerly on PyTorch.

Time: medians of repeated calls after a warm-up call (which compiles); the
two implementations of a row are called alternately, in the same process, so
that their ratio holds up when the machine's load changes.

Peak memory: in a second, fresh subprocess per backend, started with glibc's
`MALLOC_MMAP_THRESHOLD_` fixed at 1 MiB (so every large buffer is mapped from
the OS when allocated and returned to it when freed), the growth of the
process's peak resident set size (Linux VmHWM, reset through
/proc/self/clear_refs) during one call after the warm-up, over the resident
size just before it. It counts everything the call allocates, outputs and the
kernels' own scratch included, and not the inputs. On JAX the run also
records XLA's own temp-buffer accounting (compiled `memory_analysis()`), which
cannot see a native kernel's internal scratch.
"""

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from mmkeras.benchmarks import wait_for

BACKENDS = "tensorflow,jax,torch"
CONTRASTIVE = "1024x256,4096x256,8192x512"
# Time budget per (row, implementation) past its first 3 calls: the slow rows
# of the default run (B = 8192) get 3-5 calls, the fast ones --repeats.
TIME_BUDGET_S = 8.0


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    threads = os.environ.get("MMKERAS_NUM_THREADS") or os.cpu_count()
    return (f"{cpu}, {os.cpu_count()} cores, kernel threads {threads}, "
            f"Python {platform.python_version()}")


def load_note():
    try:
        one, five, _ = os.getloadavg()
        return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"
    except OSError:
        return "load average unknown"


# ------------------------------------------------------------ per backend
# (these run inside a worker, after KERAS_BACKEND is set)


def _backend():
    import keras

    return keras.backend.backend()


def compile_forward(fn):
    """fn(*arrays) -> tensor, compiled the way the backend trains."""
    backend = _backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    return fn


def compile_grad(fn, cotangent, nargs):
    """Returns g(*arrays) -> (grads of sum(fn * cotangent) w.r.t. the
    `nargs` arguments, fn output)."""
    backend = _backend()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def loss(*args):
            out = fn(*args)
            return jnp.sum(out * cotangent), out

        grad = jax.grad(loss, argnums=tuple(range(nargs)), has_aux=True)
        return jax.jit(lambda *args: grad(*args))
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(*args):
            with tf.GradientTape() as tape:
                tape.watch(args)
                out = fn(*args)
                loss = tf.reduce_sum(out * cotangent)
            return tape.gradient(loss, args), out

        return step
    import torch

    def step(*args):
        args = [a.detach().requires_grad_(True) for a in args]
        out = fn(*args)
        grads = torch.autograd.grad((out * cotangent).sum(), args)
        return grads, out

    return step


def median_ms(runs, args, repeats):
    """Times the functions of `runs` ({name: fn}) side by side: one warm-up
    call each (which compiles), then rounds of one call each, alternating
    which goes first, so that a change in the machine's load hits both
    alike. `repeats` rounds (0: up to 20), but at least 3 and, past 3, no
    more than TIME_BUDGET_S per function allows. Returns ({name: median
    ms}, rounds)."""
    for fn in runs.values():
        wait_for(fn(*args))  # warm-up: compiles, allocates
    names = list(runs)
    times = {name: [] for name in names}
    rounds, r = 3, 0
    while r < rounds:
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            wait_for(runs[name](*args))
            times[name].append(time.perf_counter() - start)
        if r == 0:
            slowest = max(t[0] for t in times.values())
            budget = int(TIME_BUDGET_S / max(slowest, 1e-6))
            rounds = max(3, min(repeats or 20, budget))
        r += 1
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}, rounds


def _status_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


def peak_growth_mib(fn, args):
    """Peak RSS growth (MiB) during one call after a warm-up call; None
    where the platform cannot tell (not Linux)."""
    wait_for(fn(*args))  # warm-up: compiles
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        base = _status_kib("VmRSS:")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    result = wait_for(fn(*args))
    peak = _status_kib("VmHWM:")
    del result
    return (peak - base) / 1024


# ------------------------------------------------------------ cases


def to_backend(x):
    import keras

    return keras.ops.convert_to_tensor(x)


def gated_case(M, B, D, rng):
    import numpy as np

    import mmkeras

    h = rng.standard_normal((M, B, D), dtype=np.float32)
    g = rng.standard_normal((M, B, D), dtype=np.float32)
    mask_t = to_backend(rng.random((B, M)) > 0.2)

    def make(impl):
        def fn(h, g):
            return mmkeras.ops.gated_fusion(h, g, modality_mask=mask_t,
                                            implementation=impl)

        return fn

    cot = rng.standard_normal((B, D), dtype=np.float32)
    return f"gated_fusion M={M} B={B} D={D}", make, [h, g], cot


def low_rank_case(M, R, B, O, rng):
    import numpy as np

    import mmkeras

    f = rng.standard_normal((M, R, B, O), dtype=np.float32)
    mask_t = to_backend(rng.random((B, M)) > 0.2)

    def make(impl):
        def fn(f):
            return mmkeras.ops.low_rank_fusion(f, modality_mask=mask_t,
                                               implementation=impl)

        return fn

    cot = rng.standard_normal((B, O), dtype=np.float32)
    return f"low_rank_fusion M={M} R={R} B={B} O={O}", make, [f], cot


def contrastive_case(B, D, kind, rng):
    import numpy as np

    import mmkeras

    a = rng.standard_normal((B, D), dtype=np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b = a + 0.5 * rng.standard_normal((B, D), dtype=np.float32)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    scale, bias = np.float32(10.0), np.float32(-10.0)

    # SigLIP learns a bias; CLIP has none (and its loss ignores one).
    arrays = [a, b, scale] + ([bias] if kind == "sigmoid" else [])

    def make(impl):
        def fn(a, b, scale, bias=None):
            return mmkeras.ops.contrastive_loss(
                a, b, scale, bias, kind=kind, implementation=impl
            )

        return fn

    return f"contrastive_loss {kind} B={B} d={D}", make, arrays, np.float32(1.0)


def parse_shapes(text):
    """'1024x256,8192x512' -> [(1024, 256), (8192, 512)]."""
    shapes = []
    for item in text.split(","):
        try:
            B, D = (int(x) for x in item.lower().split("x"))
        except ValueError:
            raise SystemExit(
                f"--contrastive takes BxD pairs like 4096x256; got {item!r}"
            ) from None
        shapes.append((B, D))
    return shapes


def build_cases(only, contrastive):
    import numpy as np

    rng = np.random.default_rng(0)
    cases = []
    if "gated" in only:
        cases.append(gated_case(3, 4096, 512, rng))
    if "low_rank" in only:
        cases.append(low_rank_case(3, 8, 4096, 256, rng))
    if "contrastive" in only:
        for B, D in parse_shapes(contrastive):
            for kind in ("softmax", "sigmoid"):
                cases.append(contrastive_case(B, D, kind, rng))
    return cases


IMPLS = {"keras.ops": "reference", "native": "native"}


def worker(args):
    """Runs one backend's measurements (args.worker: time or memory) and
    prints their results as one JSON list on the last stdout line."""
    import keras

    backend = keras.backend.backend()
    results = []
    for name, make, arrays, cot in build_cases(set(args.only.split(",")),
                                               args.contrastive):
        tensors = [to_backend(x) for x in arrays]
        cot_t = to_backend(cot)
        for label in ("fwd", "fwd+bwd"):
            row = {"backend": backend, "op": name, "pass": label}
            runs = {}
            for impl, implementation in IMPLS.items():
                fn = make(implementation)
                runs[impl] = (compile_forward(fn) if label == "fwd"
                              else compile_grad(fn, cot_t, len(tensors)))
            if args.worker == "time":
                ms, row["rounds"] = median_ms(runs, tensors, args.repeats)
                for impl in IMPLS:
                    row[f"{impl} ms"] = ms[impl]
            else:
                for impl, run in runs.items():
                    row[f"{impl} MiB"] = peak_growth_mib(run, tensors)
                    if backend == "jax":  # XLA's own accounting, for reference
                        mem = run.lower(*tensors).compile().memory_analysis()
                        row[f"{impl} XLA temp MiB"] = (
                            None if mem is None
                            else mem.temp_size_in_bytes / 2**20)
            del runs
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps(results))


def _run_worker(args, backend, kind):
    env = dict(os.environ, KERAS_BACKEND=backend)
    if kind == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = str(2**20)
    cmd = [sys.executable, "-m", "mmkeras.benchmarks.fusion", "--worker", kind,
           "--only", args.only, "--contrastive", args.contrastive,
           "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"fusion benchmark worker ({backend}, {kind}) failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def report(rows, memory):
    """Prints the results as a Markdown table."""
    print("\n| backend | op | pass | keras.ops ms | native ms | speedup "
          "| keras.ops peak MiB | native peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    mem = {(m["backend"], m["op"], m["pass"]): m for m in memory}
    for r in rows:
        m = mem.get((r["backend"], r["op"], r["pass"]), {})
        ref, nat = r["keras.ops ms"], r["native ms"]
        print(f"| {r['backend']} | {r['op']} | {r['pass']} | {ref:.1f} "
              f"| {nat:.1f} | {ref / nat:.2f}x "
              f"| {_fmt(m.get('keras.ops MiB'), '.1f')} "
              f"| {_fmt(m.get('native MiB'), '.1f')} |")
    xla = [m for m in memory if "keras.ops XLA temp MiB" in m]
    if xla:
        print("\nJAX, XLA's own temp-buffer accounting (compiled "
              "memory_analysis; blind to the native kernel's internal "
              "scratch):")
        for m in xla:
            print(f"  {m['op']} {m['pass']}: keras.ops "
                  f"{_fmt(m['keras.ops XLA temp MiB'], '.1f')} MiB, native "
                  f"{_fmt(m['native XLA temp MiB'], '.1f')} MiB")


def main(argv=None):
    """Runs the benchmark; `argv` as on the command line."""
    parser = argparse.ArgumentParser(
        description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--backends", default=BACKENDS)
    parser.add_argument("--repeats", type=int, default=0,
                        help="timed calls per implementation and row (default: "
                        "up to 20; at least 3, fewer past a few seconds)")
    parser.add_argument("--only", default="gated,low_rank,contrastive")
    parser.add_argument("--contrastive", default=CONTRASTIVE, metavar="BxD,...",
                        help="contrastive_loss batch x embedding sizes "
                        f"(default {CONTRASTIVE})")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory runs")
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument("--worker", choices=["time", "memory"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    parse_shapes(args.contrastive)  # fail early on a typo
    if args.worker:
        return worker(args)

    from importlib import metadata

    from mmkeras.version import __version__

    print(f"machine: {machine()}")
    print(f"keras {metadata.version('keras')}, mmkeras {__version__}; "
          f"at start: {load_note()}")
    rows, memory = [], []
    for backend in args.backends.split(","):
        print(f"timing {backend} ...", file=sys.stderr, flush=True)
        rows += _run_worker(args, backend, "time")
        if not args.no_memory:
            print(f"memory {backend} ...", file=sys.stderr, flush=True)
            memory += _run_worker(args, backend, "memory")
    print(f"at end: {load_note()}")
    print("time: median ms per call; speedup = keras.ops time / native time; "
          "peak MiB: growth of the peak RSS during one call (see "
          "mmkeras/benchmarks/fusion.py)")
    report(rows, memory)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "rows": rows, "memory": memory},
                      f, indent=1)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
