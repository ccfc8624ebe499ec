"""Times fused attention side by side on each Keras backend.

Forward and forward+backward at the (B, T = S) of --shapes (N=8, H=64) in
each of --dtypes: mmkeras native vs `keras.ops.dot_product_attention`, and on
torch vs `torch.nn.functional.scaled_dot_product_attention`. Then peak extra memory of
one forward at T = S = --memory-length. Each backend runs in its own
subprocess (one Keras backend per process); the table is printed at the end
and written as JSON with --json.

    python -m mmkeras.benchmarks.attention               # all backends
    python -m mmkeras.benchmarks.attention --backends jax --shapes 1x512,8x256 \
        --dtypes float32,bfloat16
    mmkeras bench attention --plot                       # the same, + PNG
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from mmkeras.benchmarks import wait_for

N, H = 8, 64


def flops(B, T, S, backward):
    fwd = 4 * B * N * T * S * H
    return fwd * 3.5 if backward else fwd  # bwd = 2.5x forward matmuls


def _timer(fns, repeats):
    """Median seconds of each of `fns` ({name: fn}), called alternately so
    that a change of the machine's load hits them all alike."""
    for fn in fns.values():
        wait_for(fn())  # warm-up (and compile)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            wait_for(fn())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _functions(backend, B, T, dtype):
    """Returns {name: (forward_fn, fwd_bwd_fn)}."""
    import keras
    import numpy as np

    import mmkeras

    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((B, T, N, H), dtype=np.float32)
               for _ in range(3))
    q, k, v = (keras.ops.convert_to_tensor(x, dtype=dtype) for x in (q, k, v))

    def native(q, k, v):
        return mmkeras.ops.fused_attention(q, k, v, implementation="native")

    def keras_ops(q, k, v):
        return keras.ops.dot_product_attention(q, k, v)

    candidates = {"mmkeras": native, "keras.ops": keras_ops}
    if backend == "jax":
        import jax

        def grad_of(f):
            return jax.jit(jax.grad(
                lambda q, k, v: f(q, k, v).astype("float32").sum(),
                argnums=(0, 1, 2)))

        fns = {n: (lambda f=jax.jit(f): f(q, k, v),
                   lambda g=grad_of(f): g(q, k, v))
               for n, f in candidates.items()}
    elif backend == "tensorflow":
        import tensorflow as tf

        def grad_of(f):
            @tf.function
            def g(q, k, v):
                with tf.GradientTape() as tape:
                    tape.watch([q, k, v])
                    loss = tf.reduce_sum(tf.cast(f(q, k, v), tf.float32))
                return tape.gradient(loss, [q, k, v])
            return g

        fns = {n: (lambda f=tf.function(f): f(q, k, v),
                   lambda g=grad_of(f): g(q, k, v))
               for n, f in candidates.items()}
    else:
        import torch.nn.functional as F

        qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))
        candidates["torch SDPA"] = None

        def fwd_bwd(f, args):
            args = [a.detach().requires_grad_(True) for a in args]
            f(*args).float().sum().backward()
            return args[0].grad

        fns = {}
        for n, f in candidates.items():
            if f is None:
                sdpa = F.scaled_dot_product_attention
                fns[n] = (lambda: sdpa(qt, kt, vt),
                          lambda: fwd_bwd(sdpa, (qt, kt, vt)))
            else:
                fns[n] = (lambda f=f: f(q, k, v),
                          lambda f=f: fwd_bwd(f, (q, k, v)))
    return fns


def worker(args):
    backend = args.backend
    results = []
    for dtype in args.dtypes:
        for B, T in args.shapes:
            fns = _functions(backend, B, T, dtype)
            for i, mode in enumerate(("forward", "forward+backward")):
                medians = _timer({name: pair[i] for name, pair in fns.items()},
                                 args.repeats)
                for name, seconds in medians.items():
                    results.append(dict(
                        backend=backend, impl=name, dtype=dtype, B=B, T=T,
                        mode=mode, seconds=seconds,
                        gflops=flops(B, T, T, mode != "forward") / seconds
                        / 1e9,
                    ))
                    print(json.dumps(results[-1]), file=sys.stderr,
                          flush=True)
    print(json.dumps(results))


def _reset_peak_rss():
    """Resets the kernel's high-water mark of this process's RSS (Linux), so
    that temporaries freed before the measurement do not hide its peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_kib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_worker(args):
    """Peak RSS growth of one forward at T = S = args.memory_length."""
    import keras
    import numpy as np

    import mmkeras

    B, T = 1, args.memory_length
    small = np.zeros((1, 64, N, H), np.float32)
    mmkeras.ops.fused_attention(small, small, small, implementation="native")
    rng = np.random.default_rng(0)
    q, k, v = (keras.ops.convert_to_tensor(
        rng.standard_normal((B, T, N, H), dtype=np.float32)) for _ in range(3))
    if args.impl == "torch SDPA":
        import torch.nn.functional as F

        qt = q.transpose(1, 2).contiguous()
    _reset_peak_rss()
    before = _peak_rss_kib()
    start = time.perf_counter()
    if args.impl == "torch SDPA":
        out = F.scaled_dot_product_attention(qt, qt, qt)
    else:
        out = mmkeras.ops.fused_attention(q, k, v, implementation="native")
    keras.ops.convert_to_numpy(out[0, 0, 0])
    seconds = time.perf_counter() - start
    peak = _peak_rss_kib()
    qkvo = 4 * B * T * N * H * 4
    print(json.dumps(dict(
        backend=args.backend, impl=args.impl, T=T, seconds=seconds,
        extra_mib=(peak - before) / 1024, qkvo_mib=qkvo / 2**20,
    )))


def _run(cmd, backend):
    env = dict(os.environ, KERAS_BACKEND=backend)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"benchmark worker for {backend} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    """Runs the benchmark; `argv` as on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--shapes", default="1x512,1x2048,1x4096,8x256",
                        help="comma-separated BxT (batch x sequence length)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-length", type=int, default=16384,
                        help="T = S for the memory check; 0 skips it")
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument("--plot", help="write a PNG of GFLOP/s against the "
                        "sequence length to this file")
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["time", "memory"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.shapes = _parse_shapes(args.shapes)
    args.dtypes = str(args.dtypes).split(",")
    bad = set(args.dtypes) - {"float32", "bfloat16", "float16"}
    if bad:
        parser.error("--dtypes must be float32, bfloat16 and/or float16. "
                     f"Received: {sorted(bad)}")
    if args.worker == "time":
        return worker(args)
    if args.worker == "memory":
        return memory_worker(args)

    backends = args.backends.split(",")
    me = [sys.executable, "-m", "mmkeras.benchmarks.attention"]
    timings, memory = [], []
    for backend in backends:
        print(f"timing {backend} ...", file=sys.stderr, flush=True)
        timings += _run(me + ["--worker", "time", "--backend", backend,
                              "--shapes", ",".join(f"{b}x{t}" for b, t in
                                                   args.shapes),
                              "--dtypes", ",".join(args.dtypes),
                              "--repeats", str(args.repeats)], backend)
        if args.memory_length:
            impls = ["mmkeras"] + (["torch SDPA"] if backend == "torch" else [])
            for impl in impls:
                print(f"memory {backend} {impl} ...", file=sys.stderr, flush=True)
                memory.append(_run(me + [
                    "--worker", "memory", "--backend", backend, "--impl", impl,
                    "--memory-length", str(args.memory_length)], backend))
    report(timings, memory)
    if args.plot:
        from mmkeras import plots

        plots.throughput(args.plot, [r for r in timings if r["B"] == 1 and
                                     r["dtype"] == "float32"])
        print(f"\nwrote {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine(), timings=timings, memory=memory),
                      f, indent=1)


def machine():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _parse_shapes(text):
    shapes = []
    for item in str(text).split(","):
        try:
            b, t = (int(x) for x in item.lower().split("x"))
        except ValueError:
            b = t = 0
        if b < 1 or t < 1:
            raise SystemExit("--shapes must be comma-separated BxT with "
                             f"positive B and T. Received: {item!r}")
        shapes.append((b, t))
    return shapes


def report(timings, memory):
    print(f"\nMachine: {machine()}")
    print("N=8, H=64; medians; GFLOP/s (higher is better); torch SDPA is "
          "measured in the torch worker, the common yardstick of every row\n")
    print("| backend | dtype | mode | B | T=S | mmkeras | keras.ops | "
          "torch SDPA | mmkeras / keras.ops | mmkeras / SDPA |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    key = {(r["backend"], r["dtype"], r["mode"], r["B"], r["T"], r["impl"]):
           r["gflops"] for r in timings}
    sdpa = {k[1:5]: g for k, g in key.items() if k[5] == "torch SDPA"}
    rows = sorted({k[:5] for k in key})
    for row in rows:
        mine, ko = key[(*row, "mmkeras")], key[(*row, "keras.ops")]
        s = sdpa.get(row[1:])
        print(f"| {' | '.join(map(str, row))} | {mine:.1f} | {ko:.1f} | "
              f"{f'{s:.1f}' if s else '-'} | {mine / ko:.2f}x | "
              f"{f'{mine / s:.2f}x' if s else '-'} |")
    low = [r for r in rows if r[1] != "float32"]
    if low:
        print("\nmmkeras in low precision against mmkeras in float32:\n")
        print("| backend | dtype | mode | B | T=S | ratio |")
        print("|---|---|---|---|---|---|")
        for row in low:
            base = key.get((row[0], "float32", *row[2:], "mmkeras"))
            if base:
                ratio = key[(*row, "mmkeras")] / base
                print(f"| {' | '.join(map(str, row))} | {ratio:.2f}x |")
    if memory:
        print("\nPeak extra memory of one forward (RSS growth):\n")
        print("| backend | impl | T=S | extra MiB | q+k+v+out MiB | ratio | s |")
        print("|---|---|---|---|---|---|---|")
        for r in memory:
            print(f"| {r['backend']} | {r['impl']} | {r['T']} | "
                  f"{r['extra_mib']:.0f} | {r['qkvo_mib']:.0f} | "
                  f"{r['extra_mib'] / r['qkvo_mib']:.2f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
