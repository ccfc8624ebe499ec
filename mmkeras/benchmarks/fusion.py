"""Times the fused fusion and contrastive ops, native vs keras.ops reference,
on the current Keras backend (KERAS_BACKEND), forward and forward+backward.

Usage:
    KERAS_BACKEND=jax python benchmarks/bench_fusion.py [--repeats N]
        [--only gated,low_rank,contrastive] [--batches 256,1024,4096]

Both implementations run the way a training step runs them: under `jax.jit`
on JAX, inside `tf.function` on TensorFlow, eagerly on PyTorch. Each timing
is the median of repeated calls after a warm-up (which compiles); the two
implementations of a row are measured side by side in one process.
"""

import argparse
import os
import platform
import statistics
import time

import keras
import numpy as np

import mmkeras

BACKEND = keras.backend.backend()


def describe_machine():
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    threads = os.environ.get("MMKERAS_NUM_THREADS") or os.cpu_count()
    return f"{cpu}, {os.cpu_count()} cores, kernel threads {threads}"


# ------------------------------------------------------------ per backend


def compile_forward(fn):
    """fn(*arrays) -> tensor, compiled the way the backend trains."""
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    return fn


def compile_grad(fn, cotangent, nargs):
    """Returns g(*arrays) -> (grads of sum(fn * cotangent) w.r.t. the
    `nargs` arguments, fn output)."""
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        def loss(*args):
            out = fn(*args)
            return jnp.sum(out * cotangent), out

        grad = jax.grad(loss, argnums=tuple(range(nargs)), has_aux=True)
        return jax.jit(lambda *args: grad(*args))
    if BACKEND == "tensorflow":
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


def block(result):
    """Waits for a result (JAX dispatches asynchronously)."""
    if BACKEND == "jax":
        import jax

        jax.block_until_ready(result)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        tf.nest.map_structure(lambda t: t.numpy() if t is not None else t,
                              result)
    return result


def median_ms(fn, args, repeats):
    block(fn(*args))  # warm-up: compiles, allocates
    start = time.perf_counter()
    block(fn(*args))
    first = time.perf_counter() - start
    n = repeats or int(min(20, max(3, 2.0 / max(first, 1e-6))))
    times = []
    for _ in range(n):
        start = time.perf_counter()
        block(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


# ------------------------------------------------------------ cases


def to_backend(x):
    return keras.ops.convert_to_tensor(x)


def gated_case(M, B, D, rng):
    h = rng.standard_normal((M, B, D), dtype=np.float32)
    g = rng.standard_normal((M, B, D), dtype=np.float32)
    mask = rng.random((B, M)) > 0.2
    mask_t = to_backend(mask)

    def make(impl):
        def fn(h, g):
            return mmkeras.ops.gated_fusion(h, g, modality_mask=mask_t,
                                            implementation=impl)

        return fn

    cot = rng.standard_normal((B, D), dtype=np.float32)
    return f"gated_fusion M={M} B={B} D={D}", make, [h, g], cot


def low_rank_case(M, R, B, O, rng):
    f = rng.standard_normal((M, R, B, O), dtype=np.float32)
    mask = rng.random((B, M)) > 0.2
    mask_t = to_backend(mask)

    def make(impl):
        def fn(f):
            return mmkeras.ops.low_rank_fusion(f, modality_mask=mask_t,
                                               implementation=impl)

        return fn

    cot = rng.standard_normal((B, O), dtype=np.float32)
    return f"low_rank_fusion M={M} R={R} B={B} O={O}", make, [f], cot


def contrastive_case(B, D, kind, rng):
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

    return f"contrastive_loss {kind} B={B} D={D}", make, arrays, np.float32(1.0)


def main(argv=None):
    """Runs the benchmark; `argv` as on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=0,
                        help="timed calls per measurement (default: adaptive)")
    parser.add_argument("--only", default="gated,low_rank,contrastive")
    parser.add_argument("--batches", default="256,1024,4096",
                        help="contrastive batch sizes")
    parser.add_argument("--dim", type=int, default=256,
                        help="contrastive embedding dim")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    rng = np.random.default_rng(0)

    cases = []
    if "gated" in only:
        cases += [gated_case(2, 1024, 512, rng), gated_case(3, 4096, 512, rng)]
    if "low_rank" in only:
        cases += [low_rank_case(3, 4, 1024, 256, rng),
                  low_rank_case(3, 8, 4096, 256, rng)]
    if "contrastive" in only:
        for kind in ("softmax", "sigmoid"):
            for B in map(int, args.batches.split(",")):
                cases.append(contrastive_case(B, args.dim, kind, rng))

    print(f"backend {BACKEND}, keras {keras.__version__}, "
          f"mmkeras {mmkeras.__version__}")
    print(f"machine: {describe_machine()}")
    print("times: median ms per call (reference = the keras.ops "
          "implementation; speedup = reference / native)\n")
    header = (f"{'op':<44} {'pass':<8} {'reference':>10} {'native':>10} "
              f"{'speedup':>8}")
    print(header)
    print("-" * len(header))
    for name, make, arrays, cot in cases:
        tensors = [to_backend(x) for x in arrays]
        cot_t = to_backend(cot)
        for label in ("fwd", "fwd+bwd"):
            ms = {}
            for impl in ("reference", "native"):
                fn = make(impl)
                run = (compile_forward(fn) if label == "fwd"
                       else compile_grad(fn, cot_t, len(tensors)))
                ms[impl] = median_ms(run, tensors, args.repeats)
            print(f"{name:<44} {label:<8} {ms['reference']:>10.2f} "
                  f"{ms['native']:>10.2f} "
                  f"{ms['reference'] / ms['native']:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
