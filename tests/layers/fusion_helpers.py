"""Initializer, data and checks shared by the fusion layer tests."""

import json

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="mmkeras_tests")
class NumpyGlorotUniform(keras.initializers.Initializer):
    """Glorot-uniform from numpy. On JAX, `keras.random` compiles once per
    new weight shape (about a second each on this CPU); numpy does not."""

    def __init__(self, seed=0):
        self.seed = seed
        self._calls = 0

    def __call__(self, shape, dtype=None):
        self._calls += 1
        rng = np.random.default_rng([self.seed, self._calls])
        shape = tuple(shape)
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0]
        limit = np.sqrt(6.0 / (fan_in + (shape[-1] if shape else 1)))
        values = rng.uniform(-limit, limit, shape).astype(dtype or "float32")
        return keras.ops.convert_to_tensor(values)

    def get_config(self):
        return {"seed": self.seed}


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def random_inputs(shapes, batch, seed=0):
    """Standard normal float32 inputs `(batch,) + shape`, one per shape."""
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(batch,) + s).astype("float32") for s in shapes]


def without_dropout(layer):
    """The same layer (via its config) with dropout off: on JAX every
    dropout inlines a random-bits kernel that costs seconds to compile."""
    config = layer.get_config()
    if "dropout" in config:
        config["dropout"] = 0.0
    return type(layer).from_config(config)


def make_and_check_layer(factory, shapes, batch):
    """Makes a layer with `factory` and checks that the symbolic and the
    eager output shapes are those of `compute_output_shape` and the eager
    output is finite, for inputs of feature shapes `shapes`, and that the
    config goes through JSON and back. Returns the layer, the eager inputs
    and the config."""
    layer = factory()
    sym = layer([keras.Input(s) for s in shapes])
    expected = layer.compute_output_shape([(None,) + s for s in shapes])
    assert tuple(sym.shape) == tuple(expected)
    xs = random_inputs(shapes, batch)
    out = layer(xs)
    assert tuple(out.shape) == (batch,) + tuple(expected[1:])
    assert np.all(np.isfinite(to_numpy(out)))

    config = layer.get_config()
    json.dumps(config)
    assert type(layer).from_config(config).get_config() == config
    ser = keras.saving.serialize_keras_object(layer)
    assert type(keras.saving.deserialize_keras_object(ser)) is type(layer)
    return layer, xs, config


def check_none_means_absent(layer, xs, positions, tol):
    """Checks that a None entry at each of `positions` gives a finite
    output, the same as a False column of `modality_mask`."""
    n = len(xs)
    for j in positions:
        with_none = [None if i == j else x for i, x in enumerate(xs)]
        column = np.ones((len(xs[0]), n), bool)
        column[:, j] = False
        a = to_numpy(layer(with_none))
        assert np.all(np.isfinite(a))
        b = to_numpy(layer(xs, modality_mask=column))
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def check_fit_and_round_trip(model, data, y, layers, path, rtol):
    """Checks that 5 epochs of fit lower the loss and move every trainable
    weight of `layers` (a dict, label: layer), and that the model saved to
    `path` loads and predicts the same."""
    batch = len(y)
    before = {
        name: [to_numpy(w) for w in layer.trainable_weights]
        for name, layer in layers.items()
    }
    history = model.fit(data, y, epochs=5, batch_size=batch, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    for name, layer in layers.items():
        after = [to_numpy(w) for w in layer.trainable_weights]
        moved = [not np.allclose(a, b) for a, b in zip(before[name], after)]
        assert all(moved), (name, moved)

    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(data, batch_size=batch, verbose=0),
        model.predict(data, batch_size=batch, verbose=0),
        rtol=rtol,
        atol=1e-6,
    )
