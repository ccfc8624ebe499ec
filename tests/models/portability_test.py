"""Mixed precision, and .keras files moving between backends."""

import json
import os
import subprocess
import sys

import keras
import numpy as np

from model_helpers import encoders, inputs_of, shapes_of
from mmkeras import layers, models

NAMES = ["image", "text", "audio"]


def _classifier(train, info):
    keras.utils.set_random_seed(0)
    return models.FusionClassifier(encoders(NAMES, info),
                                   shapes_of(train, NAMES),
                                   layers.GatedFusion(16), num_classes=10)


def test_mixed_bfloat16_trains_without_nan(digits):
    train, _, info = digits
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _classifier(train, info)
        model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False,
                      loss=keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        history = model.fit(inputs_of(train, NAMES), train["label"], epochs=2,
                            batch_size=32, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]


LOAD_AND_PREDICT = """
import json, sys
import numpy as np
import mmkeras, keras
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
x = dict(np.load(sys.argv[2]))
print(json.dumps(model.predict(x, verbose=0).tolist()))
"""


def test_saved_model_predicts_the_same_on_the_other_backends(digits, tmp_path):
    train, test, info = digits
    model = _classifier(train, info)
    x = inputs_of(test, NAMES)
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "inputs.npz", **x)
    here = keras.backend.backend()
    for backend in {"tensorflow", "jax", "torch"} - {here}:
        proc = subprocess.run(
            [sys.executable, "-c", LOAD_AND_PREDICT,
             str(tmp_path / "model.keras"), str(tmp_path / "inputs.npz")],
            env=dict(os.environ, KERAS_BACKEND=backend),
            capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4,
                                   err_msg=f"saved on {here}, loaded on {backend}")
