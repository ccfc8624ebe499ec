"""keras-hub models before and after `mmkeras.accelerate`: a BERT's forward and
train step, and a small Gemma decoder's greedy `generate()`.

A keras-hub `BertBackbone` (random weights, no download; 2 layers, width 256,
4 heads, sequence length 512 or `--length`, dropout 0 so that training runs the fused op
too) with a small regression head. In one process per backend: median
seconds of `predict_on_batch` and of `train_on_batch` (after a warm-up call
each), then `mmkeras.accelerate(model)`, then the same again, so that the
two are measured side by side on the same model and weights. The largest
difference of the forward outputs is printed as a check.

With `--model gemma`: a keras-hub `GemmaCausalLM` (random weights; 2 layers,
width 256, 4 query heads and 1 key/value head of dim 64) generating greedily
from prompts of half of `--length` tokens up to `--length`, before and after
`accelerate` (its KV-cached attention runs the fused op); the generated tokens
must be identical.

    python -m mmkeras.benchmarks.accelerate [--backends jax,torch] [--steps 5] \
        [--length 512]
    python -m mmkeras.benchmarks.accelerate --model gemma --length 256 --steps 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WIDTH, HEADS, LAYERS, VOCAB = 256, 4, 2, 1000


def build(length):
    import keras
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=HEADS,
        hidden_dim=WIDTH, intermediate_dim=4 * WIDTH,
        max_sequence_length=length, dropout=0.0)
    pooled = backbone.output["pooled_output"]
    model = keras.Model(backbone.input, keras.layers.Dense(1)(pooled))
    model.compile(optimizer="sgd", loss="mse")
    return model


def median_seconds(call, steps):
    call()  # trace / compile / warm up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(batch, steps, length):
    import mmkeras  # before keras_hub, which imports TensorFlow

    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    model = build(length)
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(1, VOCAB, (batch, length)).astype("int32"),
        "segment_ids": np.zeros((batch, length), "int32"),
        "padding_mask": np.ones((batch, length), bool),
    }
    y = rng.standard_normal((batch, 1)).astype("float32")
    result = {}

    def measure(label):
        # Same weights before and after: the train steps of the first round
        # would otherwise have moved them (SGD) before the second forward.
        weights = model.get_weights()
        out = keras.ops.convert_to_numpy(model.predict_on_batch(x))
        result[f"{label}_forward"] = median_seconds(
            lambda: model.predict_on_batch(x), steps)
        result[f"{label}_train"] = median_seconds(
            lambda: model.train_on_batch(x, y), steps)
        model.set_weights(weights)
        return out

    before = measure("keras")
    report = mmkeras.accelerate(model)
    mmkeras.kernels.reset_usage()
    after = measure("accelerated")
    result["fused_layers"] = len(report.changed)
    result["kernels"] = sorted(
        mmkeras.kernels.usage().get("fused_attention", ()))
    result["max_abs_diff"] = float(np.max(np.abs(after - before)))
    return result


def gemma_worker(batch, steps, length):
    import mmkeras  # before keras_hub, which imports TensorFlow

    import keras
    import keras_hub
    import numpy as np

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_query_heads=HEADS,
        num_key_value_heads=1, hidden_dim=WIDTH, intermediate_dim=2 * WIDTH,
        head_dim=WIDTH // HEADS)
    causal_lm = keras_hub.models.GemmaCausalLM(backbone, preprocessor=None)
    causal_lm.compile(sampler="greedy")
    rng = np.random.default_rng(0)
    token_ids = np.zeros((batch, length), "int32")
    padding_mask = np.zeros((batch, length), bool)
    token_ids[:, :length // 2] = rng.integers(1, VOCAB, (batch, length // 2))
    padding_mask[:, :length // 2] = True
    prompt = {"token_ids": token_ids, "padding_mask": padding_mask}

    def generate():
        return causal_lm.generate(prompt, stop_token_ids=None)

    result = {"keras_generate": median_seconds(generate, steps)}
    before = keras.ops.convert_to_numpy(generate()["token_ids"])
    report = mmkeras.accelerate(causal_lm)
    mmkeras.kernels.reset_usage()
    result["accelerated_generate"] = median_seconds(generate, steps)
    after = keras.ops.convert_to_numpy(generate()["token_ids"])
    result["fused_layers"] = len(report.changed)
    result["kernels"] = sorted(
        mmkeras.kernels.usage().get("fused_attention", ()))
    result["same_tokens"] = bool((before == after).all())
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--model", choices=["bert", "gemma"], default="bert")
    parser.add_argument("--worker", action="store_true",
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run = gemma_worker if args.model == "gemma" else worker
        print(json.dumps(run(args.batch, args.steps, args.length)))
        return
    rows = []
    for backend in args.backends.split(","):
        print(f"{backend} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "mmkeras.benchmarks.accelerate", "--worker",
             "--batch", str(args.batch), "--steps", str(args.steps),
             "--length", str(args.length), "--model", args.model],
            env=dict(os.environ, KERAS_BACKEND=backend),
            capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-3000:])
            raise SystemExit(f"{backend} failed")
        rows.append((backend,
                     json.loads(proc.stdout.strip().splitlines()[-1])))
    if args.model == "gemma":
        print(f"\nkeras-hub GemmaCausalLM ({LAYERS} layers, width {WIDTH}, "
              f"{HEADS} query heads, 1 key/value head), greedy generate() from "
              f"{args.length // 2} to {args.length} tokens, batch {args.batch}, "
              f"before and after mmkeras.accelerate; median seconds of "
              f"{args.steps} calls\n")
        print("| backend | generate Keras | generate accelerated | speed-up | "
              "kernel | same tokens |")
        print("|---|---|---|---|---|---|")
        for backend, r in rows:
            print(f"| {backend} | {r['keras_generate']:.3f} | "
                  f"{r['accelerated_generate']:.3f} | "
                  f"{r['keras_generate'] / r['accelerated_generate']:.2f}x | "
                  f"{'+'.join(r['kernels'])} | {r['same_tokens']} |")
        return
    print(f"\nkeras-hub BertBackbone ({LAYERS} layers, width {WIDTH}, {HEADS} "
          f"heads, sequence length {args.length}, batch {args.batch}), before and "
          f"after mmkeras.accelerate; median seconds of {args.steps} calls\n")
    print("| backend | forward Keras | forward accelerated | speed-up | "
          "train step Keras | train step accelerated | speed-up | "
          "kernel | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for backend, r in rows:
        print(f"| {backend} | {r['keras_forward']:.3f} | "
              f"{r['accelerated_forward']:.3f} | "
              f"{r['keras_forward'] / r['accelerated_forward']:.2f}x | "
              f"{r['keras_train']:.3f} | {r['accelerated_train']:.3f} | "
              f"{r['keras_train'] / r['accelerated_train']:.2f}x | "
              f"{'+'.join(r['kernels'])} | {r['max_abs_diff']:.1e} |")


if __name__ == "__main__":
    main()
