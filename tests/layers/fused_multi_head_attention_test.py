"""FusedMultiHeadAttention as a drop-in for keras.layers.MultiHeadAttention."""

import keras
import numpy as np
import pytest

import mmkeras
from mmkeras.layers import FusedMultiHeadAttention


def _pair(**kwargs):
    """A Keras MHA and a FusedMHA with the same config and weights."""
    keras_mha = keras.layers.MultiHeadAttention(**kwargs)
    fused = FusedMultiHeadAttention.from_config(keras_mha.get_config())
    return keras_mha, fused


def _inputs(seed=0, B=2, T=9, S=13, D=24):
    rng = np.random.default_rng(seed)
    query = rng.standard_normal((B, T, D)).astype("float32")
    value = rng.standard_normal((B, S, D)).astype("float32")
    return query, value


@pytest.mark.parametrize(
    "call_kwargs",
    [
        {},
        {"use_causal_mask": True},
        {"value_mask": np.array([[1] * 13, [1] * 5 + [0] * 8], bool)},
        {"attention_mask": np.tril(np.ones((2, 9, 13), bool), k=2)},
        {"use_causal_mask": True,
         "value_mask": np.array([[1] * 13, [1] * 5 + [0] * 8], bool)},
    ],
    ids=["plain", "causal", "value_mask", "attention_mask", "causal+value_mask"],
)
def test_same_output_as_keras_with_copied_weights(call_kwargs):
    keras_mha, fused = _pair(num_heads=4, key_dim=8, value_dim=8)
    query, value = _inputs()
    expected = keras_mha(query, value, **call_kwargs)
    fused(query, value, **call_kwargs)  # build
    fused.set_weights(keras_mha.get_weights())
    assert [w.path.split("/")[-2:] for w in fused.weights] == [
        w.path.split("/")[-2:] for w in keras_mha.weights
    ]
    got = fused(query, value, **call_kwargs)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(got),
        keras.ops.convert_to_numpy(expected),
        rtol=1e-5, atol=1e-5,
    )


def test_scores_and_dropout_fall_back_to_keras():
    keras_mha, fused = _pair(num_heads=2, key_dim=8, dropout=0.5, seed=1)
    query, value = _inputs()
    keras_mha(query, value)
    fused(query, value)
    fused.set_weights(keras_mha.get_weights())
    out, scores = fused(query, value, return_attention_scores=True)
    assert tuple(scores.shape) == (2, 2, 9, 13)
    expected = keras_mha(query, value, return_attention_scores=True)[0]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out),
                               keras.ops.convert_to_numpy(expected),
                               rtol=1e-5, atol=1e-5)
    out, scores = fused(query, value, return_attention_scores=True,
                        use_causal_mask=True)
    expected = keras_mha(query, value, return_attention_scores=True,
                         use_causal_mask=True)[0]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out),
                               keras.ops.convert_to_numpy(expected),
                               rtol=1e-5, atol=1e-5)
    trained = fused(query, value, training=True)  # dropout on the scores
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(trained)))


def test_config_round_trip_and_keras_config_loads():
    keras_mha, fused = _pair(num_heads=3, key_dim=5, output_shape=7)
    config = fused.get_config()
    assert config["implementation"] is None
    again = FusedMultiHeadAttention.from_config(config)
    assert again.get_config() == config
    keras_config = keras_mha.get_config()
    assert {k: v for k, v in config.items() if k != "implementation"} == keras_config


def _model(implementation=None):
    text = keras.Input((9, 24), name="text")
    image = keras.Input((13, 24), name="image")
    x = FusedMultiHeadAttention(num_heads=4, key_dim=6,
                                implementation=implementation)(text, image)
    x = keras.layers.GlobalAveragePooling1D()(x)
    out = keras.layers.Dense(1)(x)
    return keras.Model([text, image], out)


def test_keras_file_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    model = _model()
    query, value = _inputs(B=4)
    before = model.predict([query, value], verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.layers[2], FusedMultiHeadAttention)
    after = loaded.predict([query, value], verbose=0)
    np.testing.assert_array_equal(before, after)


def test_fit_loss_falls():
    keras.utils.set_random_seed(0)
    model = _model(implementation="native")
    rng = np.random.default_rng(0)
    text = rng.standard_normal((64, 9, 24)).astype("float32")
    image = rng.standard_normal((64, 13, 24)).astype("float32")
    target = (text.mean(axis=(1, 2)) + image.mean(axis=(1, 2)))[:, None]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    history = model.fit([text, image], target, epochs=8, batch_size=16,
                        verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses


def test_native_kernel_runs_inside_fit(monkeypatch):
    # A model built with implementation="native" must not fall back silently:
    # make the native path fail loudly and check fit reaches it.
    calls = []
    module, _ = mmkeras.kernels.backend_glue()
    original = module.fused_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "fused_attention", counting)
    model = _model(implementation="native")
    model.compile(optimizer="sgd", loss="mse")
    query, value = _inputs(B=4)
    model.fit([query, value], np.zeros((4, 1)), epochs=1, verbose=0)
    assert calls
