"""Tests of CrossModalAttention and PerceiverFusion
(mmkeras/layers/fusion_attention.py)."""

import json

import keras
import numpy as np
import pytest

from mmkeras.layers import CrossModalAttention
from mmkeras.layers import PerceiverFusion

B = 4


@keras.saving.register_keras_serializable(package="mmkeras_tests")
class AttentionTestInit(keras.initializers.Initializer):
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


INIT = AttentionTestInit()
ARGS = dict(num_heads=2, key_dim=4, ff_dim=8, kernel_initializer=INIT)
PERCEIVER = dict(embeddings_initializer=INIT, **ARGS)

CASES = {
    "cross": (
        lambda: CrossModalAttention(dropout=0.1, kernel_regularizer="l2",
                                    **ARGS),
        [(5, 6), (7, 4)],
    ),
    "perceiver": (
        lambda: PerceiverFusion(num_latents=3, units=6, dropout=0.1,
                                **PERCEIVER),
        [(5, 6), (7, 4), (3, 2)],
    ),
    "perceiver_mean": (
        lambda: PerceiverFusion(num_latents=3, units=6, pooling="mean",
                                **PERCEIVER),
        [(5, 6), (7, 4)],
    ),
}
NAMES = sorted(CASES)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _data(shapes, batch=B, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(batch,) + s).astype("float32") for s in shapes]


def _without_dropout(layer):
    """The same layer (via its config) with dropout off: on JAX every
    dropout inlines a random-bits kernel that costs seconds to compile."""
    config = layer.get_config()
    if "dropout" in config:
        config["dropout"] = 0.0
    return type(layer).from_config(config)


def _padding(shapes, batch=B, seed=2):
    """Random key-padding masks, at least one real token per row, and the
    last row of the last modality fully padded."""
    rng = np.random.default_rng(seed)
    masks = []
    for s in shapes:
        lengths = rng.integers(1, s[0] + 1, batch)
        masks.append(np.arange(s[0])[None, :] < lengths[:, None])
    masks[-1][-1] = False
    return masks


def _presence(n, batch=B):
    m = np.ones((batch, n), bool)
    m[0, -1] = False  # last modality absent in row 0
    m[1, 0] = False  # first modality absent in row 1
    return m


@pytest.mark.parametrize("name", NAMES)
def test_layer_contract(name):
    factory, shapes = CASES[name]
    layer = factory()
    sym = layer([keras.Input(s) for s in shapes])
    expected = layer.compute_output_shape([(None,) + s for s in shapes])
    assert tuple(sym.shape) == tuple(expected)
    xs = _data(shapes)
    out = layer(xs)
    assert tuple(out.shape) == (B,) + tuple(expected[1:])
    assert np.all(np.isfinite(_np(out)))

    config = layer.get_config()
    json.dumps(config)
    assert type(layer).from_config(config).get_config() == config

    # Absent modalities and padded tokens never reach the output.
    n = len(shapes)
    present = _presence(n)
    pads = _padding(shapes)
    out = _np(layer(xs, modality_mask=present, padding_mask=pads))
    assert np.all(np.isfinite(out))
    if config.get("dropout"):
        dropped = layer(xs, modality_mask=present, padding_mask=pads,
                        training=True)
        assert np.all(np.isfinite(_np(dropped)))
    changed = [x.copy() for x in xs]
    for i in range(n):
        changed[i][~present[:, i]] = np.nan
        changed[i][~pads[i]] = 77.0
    out2 = _np(layer(changed, modality_mask=present, padding_mask=pads))
    if name == "cross":  # the query's padding only marks the output
        out, out2 = out[pads[0]], out2[pads[0]]
    np.testing.assert_allclose(out2, out, rtol=1e-5, atol=1e-5)

    # A None entry means the same as a False column of modality_mask.
    j = n - 1
    with_none = [None if i == j else x for i, x in enumerate(xs)]
    column = np.ones((B, n), bool)
    column[:, j] = False
    np.testing.assert_allclose(
        _np(layer(with_none)),
        _np(layer(xs, modality_mask=column)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_fit_and_keras_round_trip(tmp_path):
    """Both layers in one model (one compile per backend): the perceiver
    fuses the cross-attended text with the other modalities. Fit lowers the
    loss and moves every weight; `.keras` round trip gives equal outputs.
    (predict, not eager calls: eager JAX compiles every op of a new shape.)"""
    keras.utils.set_random_seed(0)
    shapes = CASES["perceiver"][1]
    inputs = [keras.Input(s) for s in shapes]
    pad_in = [keras.Input((s[0],), dtype="bool") for s in shapes]
    mask_in = keras.Input((3,), dtype="bool")
    cross = _without_dropout(CASES["cross"][0]())
    perceiver = _without_dropout(CASES["perceiver"][0]())
    text = cross(inputs[:2], padding_mask=pad_in[:2])
    tokens = [text] + inputs[1:]
    latents = perceiver(tokens, modality_mask=mask_in, padding_mask=pad_in)
    out = keras.layers.Dense(1)(keras.layers.Flatten()(latents))
    model = keras.Model(inputs + pad_in + [mask_in], out)
    model.compile(keras.optimizers.Adam(0.02), "mse")
    data = _data(shapes) + _padding(shapes) + [_presence(3)]
    y = np.random.default_rng(3).normal(size=(B, 1)).astype("float32")
    layers = (cross, perceiver)
    before = [[_np(w) for w in layer.trainable_weights] for layer in layers]
    history = model.fit(data, y, epochs=5, batch_size=B, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    for layer, old in zip(layers, before):
        new = [_np(w) for w in layer.trainable_weights]
        moved = [not np.allclose(a, b) for a, b in zip(old, new)]
        assert all(moved), (layer.name, moved)

    path = tmp_path / "attention_fusion.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(data, batch_size=B, verbose=0),
        model.predict(data, batch_size=B, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


def test_keras_masks_are_the_padding():
    """Embedding(mask_zero=True) masks act as padding_mask, in a model."""
    tokens = keras.Input((5,), dtype="int32")
    embedding = keras.layers.Embedding(11, 6, mask_zero=True)
    text = embedding(tokens)
    image = keras.Input((7, 4))
    block = CrossModalAttention(**ARGS)
    out = block([image, text])
    model = keras.Model([tokens, image], out)
    ids = np.array([[3, 4, 0, 0, 0], [1, 2, 3, 4, 5], [7, 0, 0, 0, 0],
                    [0, 0, 0, 0, 0]], "int32")
    img = _data([(7, 4)])[0]
    got = _np(model([ids, img]))
    emb = embedding(ids)
    explicit = _np(block([img, emb], padding_mask=[None, ids != 0]))
    np.testing.assert_allclose(got, explicit, rtol=1e-5, atol=1e-5)
    # Row 3 has no text token: same as an absent context.
    absent = _np(block([img, emb], modality_mask=np.array([[1, 0]] * B)))
    np.testing.assert_allclose(got[3], absent[3], rtol=1e-5, atol=1e-5)
    # The query's Keras mask stays on the output.
    out2 = CrossModalAttention(**ARGS)([text, image])
    assert out2._keras_mask is not None


def test_cross_modal_matches_keras_composition():
    """x + MHA(LN(x), LN(c)) + FF(LN(.)) with a plain Keras MHA."""
    layer = CrossModalAttention(**ARGS)
    x, c = _data([(5, 6), (7, 4)])
    pads = _padding([(5, 6), (7, 4)])
    pads[1][-1, :2] = True  # (Keras averages fully masked rows)
    got = _np(layer([x, c], padding_mask=pads))
    config = layer._attention.get_config()
    config.pop("implementation")
    mha = keras.layers.MultiHeadAttention.from_config(config)
    mha.build((None, None, 6), (None, None, 4))
    mha.set_weights(layer._attention.get_weights())
    q, k = layer._norm_query(x), layer._norm_context(c)
    attn = mha(q, k, k, attention_mask=np.repeat(pads[1][:, None], 5, 1))
    h = keras.ops.convert_to_tensor(x) + attn
    h = h + layer._ff_out(layer._ff_in(layer._norm_ff(h)))
    np.testing.assert_allclose(got, _np(h), rtol=1e-4, atol=1e-5)


def test_cross_modal_absent_query_and_context():
    layer = CrossModalAttention(**ARGS)
    x, c = _data([(5, 6), (7, 4)])
    layer([x, c])
    out = _np(layer([x, c], modality_mask=np.array([[0, 1]] * B)))
    np.testing.assert_allclose(out, 0.0)
    no_context = _np(layer([x, None]))
    expected = x + _np(
        layer._ff_out(layer._ff_in(layer._norm_ff(x)))
    )
    np.testing.assert_allclose(no_context, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="query.*Received"):
        layer([None, c])


def test_perceiver_all_absent_rows_are_input_independent():
    layer = PerceiverFusion(num_latents=3, units=6, **PERCEIVER)
    xs = _data([(5, 6), (7, 4)])
    mask = np.ones((B, 2), bool)
    mask[1:3] = False
    out = _np(layer(xs, modality_mask=mask))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[1], out[2], rtol=1e-6, atol=1e-6)
    assert not np.allclose(out[0], out[1])


def test_dict_inputs():
    x, c = _data([(5, 6), (7, 4)])
    layer = CrossModalAttention(modalities=["text", "audio"], **ARGS)
    a = _np(layer({"audio": c, "text": x}))
    np.testing.assert_allclose(a, _np(layer([x, c])), rtol=1e-6)
    pads = {"audio": np.ones((B, 7), bool)}
    np.testing.assert_allclose(
        _np(layer({"audio": c, "text": x}, padding_mask=pads)), a, rtol=1e-6
    )
    with pytest.raises(ValueError, match="unknown modality keys"):
        layer({"audio": c, "video": x})
    with pytest.raises(ValueError, match="padding_mask.*unknown"):
        layer({"audio": c, "text": x}, padding_mask={"video": None})
    p = PerceiverFusion(num_latents=2, units=6, **PERCEIVER)
    out = p({"b": c, "a": x})
    assert p.modality_names == ("a", "b")
    assert tuple(out.shape) == (B, 2, 6)


def test_bad_inputs_raise():
    x, c = _data([(5, 6), (7, 4)])
    with pytest.raises(ValueError, match="exactly 2.*Received"):
        CrossModalAttention(**ARGS)([x, c, c])
    with pytest.raises(ValueError, match="exactly 2.*Received"):
        CrossModalAttention(**ARGS)([x])
    with pytest.raises(ValueError, match="rank 3.*Received"):
        CrossModalAttention(**ARGS)([x[:, 0], c])
    with pytest.raises(ValueError, match="rank 3.*Received"):
        PerceiverFusion(2, 6, 2)([x, c[:, 0]])
    with pytest.raises(ValueError, match="same batch size.*Received"):
        PerceiverFusion(2, 6, 2)([x, c[:2]])
    layer = PerceiverFusion(num_latents=2, units=6, **PERCEIVER)
    layer([x, c])
    with pytest.raises(ValueError, match="padding_mask.*Received"):
        layer([x, c], padding_mask=[None, np.ones((B, 6), bool)])
    with pytest.raises(ValueError, match="padding_mask.*Received"):
        layer([x, c], padding_mask=[None])
    with pytest.raises(ValueError, match="modality_mask.*Received"):
        layer([x, c], modality_mask=np.ones((B, 3), bool))
    with pytest.raises(ValueError, match="pooling"):
        PerceiverFusion(2, 6, 2, pooling="max")
    with pytest.raises(ValueError, match="num_heads"):
        CrossModalAttention(num_heads=0)
