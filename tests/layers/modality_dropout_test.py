"""Tests of ModalityDropout (mmkeras/layers/modality_dropout.py)."""

import json

import keras
import numpy as np
import pytest

from mmkeras.layers import GatedFusion
from mmkeras.layers import ModalityDropout

B = 64
SHAPES = [(3,), (5,), (4, 2)]


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _data(batch=B, seed=0):
    rng = np.random.default_rng(seed)
    # Nonzero everywhere, so a zeroed entry can only mean "dropped".
    return [
        (rng.uniform(0.5, 1.5, (batch,) + s)).astype("float32") for s in SHAPES
    ]


def _kept(outs):
    """(B, M): which modalities were kept (not zeroed), from the outputs."""
    return np.stack(
        [np.any(_np(o).reshape(len(_np(o)), -1) != 0, axis=1) for o in outs], 1
    )


def test_inference_is_identity():
    xs = _data()
    layer = ModalityDropout(0.9, return_mask=True)
    outs, mask = layer(xs)
    for o, x in zip(outs, xs):
        np.testing.assert_array_equal(_np(o), x)
    assert _np(mask).all()
    outs, mask = layer([xs[0], None, xs[2]], training=False)
    assert outs[1] is None
    np.testing.assert_array_equal(_np(mask)[:, 1], False)


def test_training_drops_whole_modalities_never_all():
    xs = _data()
    layer = ModalityDropout(0.6, return_mask=True, seed=1)
    outs, mask = layer(xs, training=True)
    mask = _np(mask)
    assert mask.dtype == bool and mask.shape == (B, 3)
    np.testing.assert_array_equal(_kept(outs), mask)
    assert mask.any(axis=1).all()
    assert not mask.all()  # something was dropped
    for o, x, m in zip(outs, xs, mask.T):
        np.testing.assert_array_equal(_np(o)[m], x[m])  # kept: unchanged
    rate = 1.0 - mask.mean()
    assert 0.3 < rate < 0.8


def test_presence_is_respected():
    xs = _data()
    present = np.ones((B, 3), bool)
    present[:, 2] = False
    present[: B // 2, 1] = False  # half the rows have one modality only
    layer = ModalityDropout(0.9, return_mask=True, seed=3)
    outs, mask = layer(xs, modality_mask=present, training=True)
    mask = _np(mask)
    assert not (mask & ~present).any()
    assert mask.any(axis=1).all()
    np.testing.assert_array_equal(mask[: B // 2, 0], True)
    np.testing.assert_array_equal(_np(outs[2]), 0.0)
    # Rows with nothing present stay empty.
    outs, mask = layer(xs, modality_mask=np.zeros((B, 3)), training=True)
    assert not _np(mask).any()


def test_per_modality_rates_and_dicts():
    xs = _data()
    layer = ModalityDropout([0.0, 0.95, 0.0], return_mask=True, seed=0)
    outs, mask = layer({"a": xs[0], "b": xs[1], "c": xs[2]}, training=True)
    assert sorted(outs) == ["a", "b", "c"]
    mask = _np(mask)
    assert mask[:, 0].all() and mask[:, 2].all()
    assert mask[:, 1].mean() < 0.3
    outs = ModalityDropout(0.5)({"b": xs[1], "a": xs[0]}, training=True)
    assert isinstance(outs, dict) and sorted(outs) == ["a", "b"]


def test_none_entries_pass_through_in_training():
    xs = _data()
    layer = ModalityDropout(0.5, return_mask=True)
    layer(xs)
    outs, mask = layer([xs[0], None, xs[2]], training=True)
    assert outs[1] is None
    mask = _np(mask)
    assert not mask[:, 1].any() and mask.any(axis=1).all()


def test_seed_gives_same_draws():
    xs = _data()
    def draw():
        layer = ModalityDropout(0.5, return_mask=True, seed=7)
        return _np(layer(xs, training=True)[1])

    a, b = draw(), draw()
    np.testing.assert_array_equal(a, b)


def test_config_and_symbolic():
    layer = ModalityDropout([0.1, 0.2, 0.3], return_mask=True, seed=4)
    inputs = [keras.Input(s) for s in SHAPES]
    outs, mask = layer(inputs)
    assert [tuple(o.shape) for o in outs] == [(None,) + s for s in SHAPES]
    assert tuple(mask.shape) == (None, 3) and mask.dtype == "bool"
    config = layer.get_config()
    json.dumps(config)
    assert ModalityDropout.from_config(config).get_config() == config
    shapes = layer.compute_output_shape([(None,) + s for s in SHAPES])
    assert shapes[1] == (None, 3)


def test_fit_with_fusion_and_keras_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = [keras.Input(s) for s in SHAPES[:2]]
    kept, mask = ModalityDropout(0.3, return_mask=True, seed=0)(inputs)
    fused = GatedFusion(4)(kept, modality_mask=mask)
    model = keras.Model(inputs, keras.layers.Dense(1)(fused))
    model.compile(keras.optimizers.Adam(0.03), "mse")
    xs = _data(batch=16)[:2]
    y = xs[0][:, :1] - xs[1][:, :1]
    history = model.fit(xs, y, epochs=6, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    path = tmp_path / "moddrop.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(xs, verbose=0), model.predict(xs, verbose=0),
        rtol=1e-6, atol=1e-6,
    )


def test_bad_arguments_raise():
    xs = _data()
    with pytest.raises(ValueError, match="rate.*Received"):
        ModalityDropout(1.0)
    with pytest.raises(ValueError, match="rate.*Received"):
        ModalityDropout([0.1, -0.1])
    with pytest.raises(ValueError, match="one rate per modality.*Received"):
        ModalityDropout([0.1, 0.2])(xs)
    with pytest.raises(ValueError, match="same batch size.*Received"):
        ModalityDropout(0.5)([xs[0], xs[1][:3]])
    with pytest.raises(ValueError, match="list or dict.*Received"):
        ModalityDropout(0.5)(xs[0])
    layer = ModalityDropout(0.5)
    layer({"a": xs[0], "b": xs[1]})
    with pytest.raises(ValueError, match="unknown modality keys.*Received"):
        layer({"a": xs[0], "c": xs[1]})
    with pytest.raises(ValueError, match="modality_mask.*Received"):
        layer({"a": xs[0], "b": xs[1]}, modality_mask=np.ones((B, 3)))
