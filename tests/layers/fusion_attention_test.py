"""Tests of CrossModalAttention and PerceiverFusion
(mmkeras/layers/fusion_attention.py)."""

import keras
import numpy as np
import pytest
from fusion_helpers import NumpyGlorotUniform
from fusion_helpers import check_fit_and_round_trip
from fusion_helpers import check_none_means_absent
from fusion_helpers import make_and_check_layer
from fusion_helpers import random_inputs
from fusion_helpers import to_numpy
from fusion_helpers import without_dropout

from mmkeras.layers import CrossModalAttention
from mmkeras.layers import PerceiverFusion

B = 4
INIT = NumpyGlorotUniform()
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


def _data(shapes):
    return random_inputs(shapes, B)


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
    """Shapes, config round trip, absent modalities and padded tokens."""
    shapes = CASES[name][1]
    layer, xs, config = make_and_check_layer(*CASES[name], B)

    # Absent modalities and padded tokens never reach the output.
    n = len(shapes)
    present = _presence(n)
    pads = _padding(shapes)
    out = to_numpy(layer(xs, modality_mask=present, padding_mask=pads))
    assert np.all(np.isfinite(out))
    if config.get("dropout"):
        dropped = layer(xs, modality_mask=present, padding_mask=pads,
                        training=True)
        assert np.all(np.isfinite(to_numpy(dropped)))
    changed = [x.copy() for x in xs]
    for i in range(n):
        changed[i][~present[:, i]] = np.nan
        changed[i][~pads[i]] = 77.0
    out2 = to_numpy(layer(changed, modality_mask=present, padding_mask=pads))
    if name == "cross":  # the query's padding only marks the output
        out, out2 = out[pads[0]], out2[pads[0]]
    np.testing.assert_allclose(out2, out, rtol=1e-5, atol=1e-5)

    # A None entry means the same as a False column of modality_mask.
    check_none_means_absent(layer, xs, [n - 1], tol=1e-5)


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
    cross = without_dropout(CASES["cross"][0]())
    perceiver = without_dropout(CASES["perceiver"][0]())
    text = cross(inputs[:2], padding_mask=pad_in[:2])
    tokens = [text] + inputs[1:]
    latents = perceiver(tokens, modality_mask=mask_in, padding_mask=pad_in)
    out = keras.layers.Dense(1)(keras.layers.Flatten()(latents))
    model = keras.Model(inputs + pad_in + [mask_in], out)
    model.compile(keras.optimizers.Adam(0.02), "mse")
    data = _data(shapes) + _padding(shapes) + [_presence(3)]
    y = np.random.default_rng(3).normal(size=(B, 1)).astype("float32")
    check_fit_and_round_trip(
        model,
        data,
        y,
        {"cross": cross, "perceiver": perceiver},
        tmp_path / "attention_fusion.keras",
        rtol=1e-5,
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
    got = to_numpy(model([ids, img]))
    emb = embedding(ids)
    explicit = to_numpy(block([img, emb], padding_mask=[None, ids != 0]))
    np.testing.assert_allclose(got, explicit, rtol=1e-5, atol=1e-5)
    # Row 3 has no text token: same as an absent context.
    absent = to_numpy(block([img, emb], modality_mask=np.array([[1, 0]] * B)))
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
    got = to_numpy(layer([x, c], padding_mask=pads))
    config = layer._attention.get_config()
    config.pop("implementation")
    mha = keras.layers.MultiHeadAttention.from_config(config)
    mha.build((None, None, 6), (None, None, 4))
    mha.set_weights(layer._attention.get_weights())
    q, k = layer._norm_query(x), layer._norm_context(c)
    attn = mha(q, k, k, attention_mask=np.repeat(pads[1][:, None], 5, 1))
    h = keras.ops.convert_to_tensor(x) + attn
    h = h + layer._ff_out(layer._ff_in(layer._norm_ff(h)))
    np.testing.assert_allclose(got, to_numpy(h), rtol=1e-4, atol=1e-5)


def test_cross_modal_absent_query_and_context():
    layer = CrossModalAttention(**ARGS)
    x, c = _data([(5, 6), (7, 4)])
    layer([x, c])
    out = to_numpy(layer([x, c], modality_mask=np.array([[0, 1]] * B)))
    np.testing.assert_allclose(out, 0.0)
    no_context = to_numpy(layer([x, None]))
    expected = x + to_numpy(
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
    out = to_numpy(layer(xs, modality_mask=mask))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[1], out[2], rtol=1e-6, atol=1e-6)
    assert not np.allclose(out[0], out[1])


def test_dict_inputs():
    x, c = _data([(5, 6), (7, 4)])
    layer = CrossModalAttention(modalities=["text", "audio"], **ARGS)
    a = to_numpy(layer({"audio": c, "text": x}))
    np.testing.assert_allclose(a, to_numpy(layer([x, c])), rtol=1e-6)
    pads = {"audio": np.ones((B, 7), bool)}
    np.testing.assert_allclose(
        to_numpy(layer({"audio": c, "text": x}, padding_mask=pads)), a, rtol=1e-6
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
