"""Training-step time of an encoder-decoder: mmkeras layers vs Keras MHA.

The same model (4 encoder + 4 decoder blocks, width 256, 8 heads, source
length 1024, target length 128) built twice: with mmkeras'
`FusedMultiHeadAttention` (fused kernels) and with
`keras.layers.MultiHeadAttention`. Each backend runs in its own subprocess;
medians of `train_on_batch` after a warm-up step.

    python -m mmkeras.benchmarks.models [--backends jax,torch] [--steps 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SOURCE, TARGET, WIDTH, HEADS, LAYERS, VOCAB = 1024, 128, 256, 8, 4, 1000


def build(attention):
    import keras

    from mmkeras import layers
    from mmkeras.layers import transformer

    if attention == "keras":
        # The same blocks with Keras' own attention layer inside.
        def keras_attention(self, hidden_dim, name):
            return keras.layers.MultiHeadAttention(
                num_heads=self.num_heads, key_dim=hidden_dim // self.num_heads,
                output_shape=hidden_dim, name=name)
        transformer._Block._attention = keras_attention

    source = keras.Input((SOURCE, WIDTH), name="source")
    tokens = keras.Input((TARGET,), dtype="int32", name="target")
    x = source
    for i in range(LAYERS):
        x = layers.TransformerEncoderBlock(HEADS, 4 * WIDTH,
                                           name=f"enc_{i}")(x)
    y = keras.layers.Embedding(VOCAB, WIDTH)(tokens)
    for i in range(LAYERS):
        y = layers.TransformerDecoderBlock(HEADS, 4 * WIDTH,
                                           name=f"dec_{i}")(y, x)
    logits = keras.layers.Dense(VOCAB)(y)
    model = keras.Model([source, tokens], logits)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    return model


def worker(attention, batch, steps):
    import numpy as np

    model = build(attention)
    rng = np.random.default_rng(0)
    x = [rng.standard_normal((batch, SOURCE, WIDTH)).astype("float32"),
         rng.integers(1, VOCAB, (batch, TARGET)).astype("int32")]
    y = rng.integers(1, VOCAB, (batch, TARGET)).astype("int32")
    model.train_on_batch(x, y)  # compile / warm up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch, args.steps)))
        return
    rows = []
    for backend in args.backends.split(","):
        result = {}
        for attention in ("mmkeras", "keras"):
            print(f"{backend} {attention} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(
                [sys.executable, "-m", "mmkeras.benchmarks.models", "--worker",
                 attention, "--batch", str(args.batch), "--steps",
                 str(args.steps)],
                env=dict(os.environ, KERAS_BACKEND=backend),
                capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit(f"{backend} {attention} failed")
            result[attention] = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append((backend, result["mmkeras"], result["keras"]))
    print(f"\nEncoder-decoder training step ({LAYERS}+{LAYERS} layers, width "
          f"{WIDTH}, {HEADS} heads, source {SOURCE}, target {TARGET}, batch "
          f"{args.batch}); median seconds per step\n")
    print("| backend | mmkeras | keras MHA | speed-up |")
    print("|---|---|---|---|")
    for backend, mine, theirs in rows:
        print(f"| {backend} | {mine:.2f} | {theirs:.2f} | {theirs / mine:.2f}x |")


if __name__ == "__main__":
    main()
