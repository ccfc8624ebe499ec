"""Runs in a fresh process with 4 virtual CPU devices (the test sets
XLA_FLAGS before JAX starts); prints one JSON line of results."""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"

import jax
import keras
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from model_helpers import (
    encoders,
    inputs_of,
    load_small_digits,
    shapes_of,
)

import mmkeras
from mmkeras import (
    distribution,
    layers,
    models,
)

NAMES = ("image", "text")


def train(mode, steps=4, batch_size=16):
    """Weights after `steps` SGD steps, single device when mode is None."""
    train_split, _, info = load_small_digits()
    n = steps * batch_size
    x = {k: v[:n] for k, v in inputs_of(train_split, NAMES).items()}
    y = train_split["label"][:n]
    plan = distribution.plan(mode) if mode else distribution.Plan()
    with plan.scope():
        keras.utils.set_random_seed(0)
        model = models.FusionClassifier(
            encoders(NAMES, info), shapes_of(train_split, NAMES),
            layers.GatedFusion(16), num_classes=10, dropout=0.0)
        model.compile(keras.optimizers.SGD(0.1),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        x, batch_size = plan.shard(x, batch_size)
        model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False,
                  verbose=0)
        layouts = {v.path: str(getattr(v.value.sharding, "spec", None)) for v in model.weights
                   if "self_attention/query/kernel" in v.path}
    return [np.asarray(w) for w in model.weights], layouts, plan.describe()


def attention_hlo():
    """The compiled forward+backward of fused_attention with q/k/v sharded
    over batch and heads on a 2x2 mesh."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 2),
                             ("batch", "model"))
    rng = np.random.default_rng(0)
    q = rng.standard_normal((4, 17, 4, 8), dtype=np.float32)
    kv = rng.standard_normal((4, 9, 2, 8), dtype=np.float32)
    mask = rng.random((4, 1, 1, 9)) > 0.3
    heads = NamedSharding(mesh, P("batch", None, "model", None))
    args = [jax.device_put(a, heads) for a in (q, kv, kv)]
    args.append(jax.device_put(mask, NamedSharding(mesh, P("batch"))))

    def loss(q, k, v, mask):
        out = mmkeras.ops.fused_attention(q, k, v, mask=mask,
                                          implementation="native")
        return (out ** 2).sum()

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    sharded = step(*args)
    single = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(
        q, kv, kv, mask)
    error = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for a, b in zip(jax.tree.leaves(sharded),
                                jax.tree.leaves(single)))
    return step.lower(*args).compile().as_text(), error


def main():
    assert len(jax.devices()) == 4, jax.devices()
    what = sys.argv[1]
    if what == "hlo":
        hlo, error = attention_hlo()
        print(json.dumps({"hlo": hlo, "error": error}))
        return
    # what == "train": single device, then each mode from the same start.
    single, _, _ = train(None)
    initial = _initial()
    results = {}
    for mode in ("data", "model"):
        mmkeras.kernels.reset_usage()
        weights, layouts, described = train(mode)
        results[mode] = {
            "max_diff": max(float(np.abs(a - b).max())
                            for a, b in zip(single, weights)),
            "max_scale": max(float(np.abs(a).max()) for a in single),
            "changed": max(float(np.abs(a - b).max())
                           for a, b in zip(single, initial)),
            "layouts": layouts,
            "describe": described,
            "kernels": {op: sorted(i)
                        for op, i in mmkeras.kernels.usage().items()},
        }
    print(json.dumps(results))


def _initial():
    train_split, _, info = load_small_digits()
    keras.utils.set_random_seed(0)
    model = models.FusionClassifier(
        encoders(NAMES, info), shapes_of(train_split, NAMES),
        layers.GatedFusion(16), num_classes=10, dropout=0.0)
    model.build()
    return [np.asarray(w) for w in model.weights]


if __name__ == "__main__":
    main()
