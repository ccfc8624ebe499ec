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
from model_helpers import encoders
from model_helpers import inputs_of
from model_helpers import load_small_digits
from model_helpers import shapes_of

import mmkeras
from mmkeras import distribution
from mmkeras import layers
from mmkeras import losses
from mmkeras import models

NAMES = ("image", "text")


def _classifier(train_split, info):
    model = models.FusionClassifier(
        encoders(NAMES, info), shapes_of(train_split, NAMES),
        layers.GatedFusion(16), num_classes=10, dropout=0.0)
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, inputs_of(train_split, NAMES), train_split["label"]


def _text_to_image(train_split, info):
    model = models.EncoderDecoder(
        encoders(["text"], info), shapes_of(train_split, ["text"]),
        target="image", target_shape=train_split["image"].shape[1:],
        patch_size=4, hidden_dim=16, num_layers=1, num_heads=2)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model, {"text": train_split["text"]}, train_split["image"]


def _dual_encoder(train_split, info):
    model = models.DualEncoder(encoders(NAMES, info),
                               shapes_of(train_split, NAMES), embedding_dim=8)
    model.compile(keras.optimizers.SGD(0.1),
                  losses.ContrastiveLoss(kind="softmax", learnable=True))
    return model, inputs_of(train_split, NAMES), np.zeros(
        len(train_split["label"]))


MODELS = {"FusionClassifier": _classifier, "EncoderDecoder": _text_to_image,
          "DualEncoder": _dual_encoder}


def train(make, mode, steps=3, batch_size=16):
    """(initial weights, weights after `steps` SGD steps, query kernel
    layouts, plan description); one device when mode is None."""
    train_split, _, info = load_small_digits()
    n = steps * batch_size
    train_split = {k: v[:n] for k, v in train_split.items()}
    plan = distribution.plan(mode) if mode else distribution.Plan()
    with plan.scope():
        keras.utils.set_random_seed(0)
        model, x, y = make(train_split, info)
        model.build()
        initial = [np.asarray(w) for w in model.weights]
        (x, y), batch_size = plan.shard((x, y), batch_size)
        model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False,
                  verbose=0)
        layouts = {v.path: str(getattr(v.value.sharding, "spec", None))
                   for v in model.weights if "query/kernel" in v.path}
    return (initial, [np.asarray(w) for w in model.weights], layouts,
            plan.describe())


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

    def forward(q, k, v, mask):
        return mmkeras.ops.fused_attention(q, k, v, mask=mask,
                                           implementation="native")

    def loss(q, k, v, mask):
        return (forward(q, k, v, mask) ** 2).sum()

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    (loss_sharded, grads_sharded), out_sharded = (
        step(*args), jax.jit(forward)(*args))
    (loss_single, grads_single), out_single = (
        jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, kv, kv, mask),
        jax.jit(forward)(q, kv, kv, mask))
    # The kernel's outputs and gradients; the scalar loss is XLA's sum of
    # per-shard partial sums, whose order (so last bit) may differ.
    error = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for a, b in zip([out_sharded, *grads_sharded],
                                [out_single, *grads_single]))
    loss_error = abs(float(loss_sharded) - float(loss_single)) / abs(
        float(loss_single))
    return step.lower(*args).compile().as_text(), error, loss_error


def fusion_hlo():
    """The compiled forward+backward of gated_fusion and low_rank_fusion
    with batch and features sharded on a 2x2 mesh."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 2),
                             ("batch", "model"))
    rng = np.random.default_rng(1)
    h = rng.standard_normal((3, 8, 6), dtype=np.float32)
    f = rng.standard_normal((3, 2, 8, 6), dtype=np.float32)
    mask = rng.random((8, 3)) > 0.3
    put = jax.device_put
    args = (put(h, NamedSharding(mesh, P(None, "batch", "model"))),
            put(f, NamedSharding(mesh, P(None, None, "batch", "model"))),
            put(mask, NamedSharding(mesh, P("batch"))))

    def loss(h, f, mask):
        gated = mmkeras.ops.gated_fusion(h, h * 0.5, mask,
                                         implementation="native")
        low = mmkeras.ops.low_rank_fusion(f, mask, implementation="native")
        return (gated ** 2).sum() + (low ** 2).sum()

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    sharded = step(*args)
    single = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(h, f, mask)
    error = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for a, b in zip(jax.tree.leaves(sharded),
                                jax.tree.leaves(single)))
    return step.lower(*args).compile().as_text(), error


def main():
    assert len(jax.devices()) == 4, jax.devices()
    what = sys.argv[1]
    if what == "hlo":
        hlo, error, loss_error = attention_hlo()
        fusion, fusion_error = fusion_hlo()
        # The GPU (Pallas) kernels under the same partitioning, run by
        # Pallas' interpreter on these CPU devices.
        from mmkeras.backend import jax_attention
        jax_attention._FORCE_PATH = "interpret"
        _, pallas_error, _ = attention_hlo()
        print(json.dumps({"hlo": hlo, "error": error,
                          "loss_error": loss_error, "fusion_hlo": fusion,
                          "fusion_error": fusion_error,
                          "pallas_error": pallas_error}))
        return
    # what == "train": each model on one device, then in each mode.
    results = {}
    for name, make in MODELS.items():
        initial, single, _, _ = train(make, None)
        for mode in ("data", "model"):
            mmkeras.kernels.reset_usage()
            _, weights, layouts, described = train(make, mode)
            results[f"{name}/{mode}"] = {
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


if __name__ == "__main__":
    main()
