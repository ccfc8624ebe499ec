"""Trains a small FusionClassifier on one device, then with the mirrored plan
over 2 logical CPUs, from the same initial weights and global batches.

Run by tensorflow_test.py in a fresh interpreter (logical devices must be
set before TensorFlow initializes): `python tensorflow_worker.py OUT.npz`.
Writes the initial, single-device and mirrored weights, and a JSON report
(plan description, which kernels ran, where the custom ops were placed).
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mmkeras  # isort: skip  before tensorflow: see mmkeras/_import_guard.py
import tensorflow as tf

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import inspect

import keras
import numpy as np
from model_helpers import encoders, inputs_of, load_small_digits, shapes_of

from mmkeras import distribution, layers, losses, models

NAMES = ["image", "text"]  # text: integer inputs, the case Keras mis-builds
ROWS, BATCH, LR = 35, 16, 0.5  # 3 steps; the last, partial one is trimmed to 2


def build(info, train):
    keras.utils.set_random_seed(0)
    model = models.FusionClassifier(
        encoders(NAMES, info), shapes_of(train, NAMES), layers.GatedFusion(16),
        num_classes=10)
    model.build()
    model.compile(
        optimizer=keras.optimizers.SGD(LR), jit_compile=False,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def build_dual(info, train):
    """A CLIP-style dual encoder: its loss couples the rows of the global
    batch, so the replicas must gather each other's embeddings."""
    keras.utils.set_random_seed(0)
    model = models.DualEncoder(encoders(NAMES, info), shapes_of(train, NAMES),
                               embedding_dim=8)
    model.build()
    model.compile(optimizer=keras.optimizers.SGD(LR), jit_compile=False,
                  loss=losses.ContrastiveLoss(kind="softmax", learnable=True))
    return model


def weights(model):
    return [keras.ops.convert_to_numpy(v.value) for v in model.trainable_weights]


def custom_op_devices(model):
    """Custom op type -> devices it is placed on in the traced train step."""
    # Keras 3.15 keeps the tf.function in the train function's closure.
    step = inspect.getclosurevars(model.train_function).nonlocals[
        "multi_step_on_iterator"]
    found = {}
    for function in step._list_all_concrete_functions():
        graph = function.graph.as_graph_def()
        nodes = list(graph.node)
        for f in graph.library.function:
            nodes.extend(f.node_def)
        for node in nodes:
            if node.op.startswith("Mmkeras"):
                found.setdefault(node.op, set()).add(node.device)
    return {op: sorted(devices) for op, devices in found.items()}


def main(out):
    train, _, info = load_small_digits()
    data = {k: v[:ROWS] for k, v in train.items()}

    plan = distribution.plan("data")
    (x, y), batch_size = plan.shard((inputs_of(data, NAMES), data["label"]),
                                    BATCH)

    single = build(info, train)
    initial = weights(single)
    single.fit(x, y, batch_size=batch_size, shuffle=False, verbose=0)

    mmkeras.kernels.reset_usage()
    with plan.scope():
        model = plan.prepare(build(info, train))
        model.fit(x, y, batch_size=batch_size, shuffle=False, verbose=0)

    dual_single = build_dual(info, train)
    dual_initial = weights(dual_single)
    dual_single.fit(x, np.zeros(len(y)), batch_size=batch_size,
                    shuffle=False, verbose=0)
    with plan.scope():
        dual = plan.prepare(build_dual(info, train))
        dual.fit(x, np.zeros(len(y)), batch_size=batch_size, shuffle=False,
                 verbose=0)
    report = {
        "describe": plan.describe(),
        "replicas": plan.num_replicas,
        "rows": len(y),
        "usage": {k: sorted(v) for k, v in mmkeras.kernels.usage().items()},
        "devices": custom_op_devices(model),
    }
    plan.close()
    arrays = {"report": np.array(json.dumps(report))}
    for name, ws in (("initial", initial), ("single", weights(single)),
                     ("mirrored", weights(model)),
                     ("dual_initial", dual_initial),
                     ("dual_single", weights(dual_single)),
                     ("dual_mirrored", weights(dual))):
        arrays.update({f"{name}_{i}": w for i, w in enumerate(ws)})
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
