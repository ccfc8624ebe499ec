"""Tests of the vector fusion layers (mmkeras/layers/fusion.py)."""

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

import mmkeras
from mmkeras.layers import AttentionFusion
from mmkeras.layers import BilinearFusion
from mmkeras.layers import ConcatFusion
from mmkeras.layers import FiLM
from mmkeras.layers import GatedFusion
from mmkeras.layers import LowRankFusion
from mmkeras.layers import TensorFusion

B = 8
INIT = NumpyGlorotUniform()

# name: (factory, feature shapes of the modalities, without the batch axis)
CASES = {
    "concat": (
        lambda: ConcatFusion(4, activation="relu", dropout=0.1,
                             kernel_regularizer="l2", kernel_initializer=INIT),
        [(3,), (5,), (2,)],
    ),
    "concat_raw": (lambda: ConcatFusion(), [(3,), (5,)]),
    "gated": (
        lambda: GatedFusion(4, dropout=0.1, kernel_initializer=INIT),
        [(3,), (5,), (2,)],
    ),
    "film": (
        lambda: FiLM(activation="tanh", kernel_initializer=INIT),
        [(3,), (5,)],
    ),
    "film_seq": (lambda: FiLM(kernel_initializer=INIT), [(4, 3), (5,)]),
    "tensor": (
        lambda: TensorFusion(4, dropout=0.1, kernel_initializer=INIT),
        [(3,), (5,), (2,)],
    ),
    "low_rank": (
        lambda: LowRankFusion(4, rank=3, bias_regularizer="l1",
                              kernel_initializer=INIT),
        [(3,), (5,), (2,)],
    ),
    "bilinear": (
        lambda: BilinearFusion(4, factor=3, kernel_initializer=INIT),
        [(3,), (5,)],
    ),
    "attention": (
        lambda: AttentionFusion(4, activation="relu", kernel_initializer=INIT),
        [(3,), (5,), (2,)],
    ),
}
NAMES = sorted(CASES)
# (Tests reuse these dims: on JAX every new weight shape costs a compile.)
DIMS = [(3,), (5,), (2,)]


def _data(shapes):
    return random_inputs(shapes, B)


def _mask(batch, n, seed=1):
    """A random (B, M) presence mask with at least one modality per row,
    plus one row with every modality absent."""
    rng = np.random.default_rng(seed)
    m = rng.random((batch, n)) > 0.4
    m[np.arange(batch), rng.integers(0, n, batch)] = True
    m[-1] = False
    return m


@pytest.mark.parametrize("name", NAMES)
def test_layer_contract(name):
    """Symbolic and eager shapes, config round trip, absent modalities."""
    layer, xs, config = make_and_check_layer(*CASES[name], B)

    # Absent entries (modality_mask) never reach the output, even as NaN.
    n = len(xs)
    mask = _mask(B, n)
    if config.get("dropout"):
        dropped = to_numpy(layer(xs, modality_mask=mask, training=True))
        assert np.all(np.isfinite(dropped))
    out = to_numpy(layer(xs, modality_mask=mask))
    assert np.all(np.isfinite(out))
    changed = [x.copy() for x in xs]
    for i in range(n):
        changed[i][~mask[:, i]] = np.nan if i % 2 else 123.0
    out2 = to_numpy(layer(changed, modality_mask=mask.astype("float32")))
    np.testing.assert_allclose(out2, out, rtol=1e-6, atol=1e-6)

    # A None entry means the same as a False column of modality_mask.
    check_none_means_absent(layer, xs, range(n), tol=1e-6)


def test_fit_and_keras_round_trip(tmp_path):
    """Every layer in one model (one compile per backend, not nine): fit
    lowers the loss and moves every layer's weights; `.keras` round trip."""
    keras.utils.set_random_seed(0)
    inputs = {}
    masks = {}
    branches = []
    layers = {}
    for name in NAMES:
        factory, shapes = CASES[name]
        xs = []
        for i, s in enumerate(shapes):
            key = f"x{i}_" + "_".join(map(str, s))
            inputs.setdefault(key, keras.Input(s, name=key))
            xs.append(inputs[key])
        n = len(shapes)
        masks.setdefault(n, keras.Input((n,), dtype="bool", name=f"mask{n}"))
        layers[name] = without_dropout(factory())
        fused = layers[name](xs, modality_mask=masks[n])
        branches.append(keras.layers.Flatten()(fused))
    out = keras.layers.Dense(1)(keras.layers.Concatenate()(branches))
    all_inputs = dict(inputs)
    all_inputs.update({f"mask{n}": m for n, m in masks.items()})
    model = keras.Model(all_inputs, out)
    model.compile(keras.optimizers.Adam(0.03), "mse")
    rng = np.random.default_rng(3)
    data = {k: rng.normal(size=(B,) + tuple(v.shape[1:])).astype("float32")
            for k, v in inputs.items()}
    for n in masks:
        data[f"mask{n}"] = _mask(B, n)
    y = rng.normal(size=(B, 1)).astype("float32")
    check_fit_and_round_trip(
        model, data, y, layers, tmp_path / "fusion.keras", rtol=1e-6
    )


def test_dict_inputs_follow_sorted_keys_and_missing_keys():
    xs = _data([(3,), (5,)])
    layer = GatedFusion(4, kernel_initializer=INIT)
    out = to_numpy(layer({"text": xs[1], "image": xs[0]}))
    assert layer.modality_names == ("image", "text")
    # modality_mask columns follow the sorted keys: column 0 is "image".
    mask = np.array([[False, True]] * B)
    masked = to_numpy(layer({"image": xs[0], "text": xs[1]}, modality_mask=mask))
    missing = to_numpy(layer({"text": xs[1]}))
    np.testing.assert_allclose(masked, missing, rtol=1e-6, atol=1e-6)
    assert not np.allclose(out, masked)
    with pytest.raises(ValueError, match="unknown modality keys"):
        layer({"image": xs[0], "audio": xs[1]})
    with pytest.raises(ValueError, match="built with a list"):
        l2 = GatedFusion(4, kernel_initializer=INIT)
        l2(xs)
        l2({"a": xs[0], "b": xs[1]})


def test_dict_inputs_with_modalities_order():
    xs = _data([(3,), (5,)])
    film = FiLM(modalities=["video", "meta"], kernel_initializer=INIT)
    out = film({"meta": xs[1], "video": xs[0]})
    assert tuple(out.shape) == (B, 3)
    same = film([xs[0], xs[1]])
    np.testing.assert_allclose(to_numpy(out), to_numpy(same), rtol=1e-6)
    with pytest.raises(ValueError, match="modalities"):
        FiLM(modalities=["a", "a"])
    with pytest.raises(ValueError, match="exactly 2"):
        FiLM(modalities=["a", "b", "c"])


@pytest.mark.parametrize(
    "name", ["gated", "low_rank", "attention", "bilinear", "tensor"]
)
def test_bad_inputs_raise(name):
    factory, shapes = CASES[name]
    xs = _data(shapes)
    with pytest.raises(ValueError, match="at least 2.*Received"):
        factory()(xs[:1])
    with pytest.raises(ValueError, match="same batch size.*Received"):
        factory()([xs[0][:2]] + xs[1:])
    with pytest.raises(ValueError, match="rank 2.*Received"):
        factory()([xs[0][:, None]] + xs[1:])
    with pytest.raises(ValueError, match="list or dict.*Received"):
        factory()(xs[0])
    layer = factory()
    layer(xs)
    with pytest.raises(ValueError, match="built with.*Received"):
        layer(xs + xs[:1])
    with pytest.raises(ValueError, match="same batch size.*Received"):
        layer([xs[0][:2]] + xs[1:])
    with pytest.raises(ValueError, match="modality_mask.*Received"):
        layer(xs, modality_mask=np.ones((B, len(xs) + 1), bool))
    with pytest.raises(ValueError, match="modality_mask.*Received"):
        layer(xs, modality_mask=np.ones((B + 1, len(xs)), bool))
    with pytest.raises(ValueError, match="shape like.*Received"):
        layer([xs[0][:, :1]] + xs[1:])
    with pytest.raises(ValueError, match="at least one tensor"):
        layer([None] * len(xs))
    with pytest.raises(ValueError, match="every modality must be present"):
        factory()([None] + xs[1:])
    with pytest.raises(ValueError, match="rank 2.*Received"):
        factory()([keras.Input((3, 2))] + [keras.Input(s) for s in shapes[1:]])


def test_film_bad_inputs():
    xs = _data([(3,), (5,)])
    with pytest.raises(ValueError, match="exactly 2"):
        FiLM()(xs + xs[:1])
    with pytest.raises(ValueError, match="rank 2.*Received"):
        FiLM()([xs[0], xs[1][:, None]])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="units"):
        GatedFusion(0)
    with pytest.raises(ValueError, match="dropout"):
        ConcatFusion(4, dropout=1.5)
    with pytest.raises(ValueError, match="rank"):
        LowRankFusion(4, rank=0)
    with pytest.raises(ValueError, match="epsilon"):
        BilinearFusion(4, epsilon=0)
    with pytest.raises(ValueError, match="modalities"):
        GatedFusion(4, modalities="ab")


def test_tensor_fusion_math_and_size_limit():
    xs = _data([(2,), (3,)])
    out = to_numpy(TensorFusion()(xs))
    a = np.concatenate([xs[0], np.ones((B, 1))], -1)
    b = np.concatenate([xs[1], np.ones((B, 1))], -1)
    expected = (a[:, :, None] * b[:, None, :]).reshape(B, -1)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    # An absent modality reads as [0; 1].
    layer = TensorFusion()
    layer(xs)
    absent = to_numpy(layer([xs[0], None]))
    b0 = np.concatenate([np.zeros((B, 3)), np.ones((B, 1))], -1)
    expected0 = (a[:, :, None] * b0[:, None, :]).reshape(B, -1)
    np.testing.assert_allclose(absent, expected0, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="max_fused_size.*Received"):
        TensorFusion(4, max_fused_size=11)(xs)
    with pytest.raises(ValueError, match="max_fused_size"):
        TensorFusion(4, max_fused_size=11).compute_output_shape(
            [(None, 2), (None, 3)]
        )


def test_gated_fusion_math():
    xs = _data(DIMS)
    layer = GatedFusion(4, kernel_initializer=INIT)
    out = to_numpy(layer(xs))
    w = [to_numpy(v) for v in layer.weights]  # proj_0 (kernel, bias) ... gate
    h = [np.tanh(x @ w[2 * i] + w[2 * i + 1]) for i, x in enumerate(xs)]
    g = np.concatenate(xs, -1) @ w[6] + w[7]
    z = 1.0 / (1.0 + np.exp(-g.reshape(B, 3, 4)))
    expected = sum(z[:, i] * h[i] for i in range(3))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_low_rank_fusion_math():
    xs = _data(DIMS)
    layer = LowRankFusion(4, rank=3, kernel_initializer=INIT)
    out = to_numpy(layer(xs))
    factors = [to_numpy(layer._factors[i]) for i in range(3)]
    w, bias = to_numpy(layer.rank_weights), to_numpy(layer.bias)
    prod = 1.0
    for x, f in zip(xs, factors):
        x1 = np.concatenate([x, np.ones((B, 1))], -1)
        prod = prod * np.einsum("bd,rdu->bru", x1, f)
    expected = np.einsum("bru,r->bu", prod, w) + bias
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_bilinear_output_is_unit_norm_and_zero_when_all_absent():
    xs = _data([(3,), (5,)])
    layer = BilinearFusion(4, factor=3, kernel_initializer=INIT)
    out = to_numpy(layer(xs, modality_mask=_mask(B, 2)))
    norms = np.linalg.norm(out, axis=-1)
    np.testing.assert_allclose(norms[:-1], 1.0, rtol=1e-5)
    np.testing.assert_allclose(out[-1], 0.0)


def test_attention_fusion_weights():
    xs = _data(DIMS)
    layer = AttentionFusion(4, kernel_initializer=INIT)
    mask = _mask(B, 3)
    out, weights = layer(xs, modality_mask=mask, return_attention_weights=True)
    weights = to_numpy(weights)
    np.testing.assert_allclose(weights[~mask], 0.0)
    np.testing.assert_allclose(weights[:-1].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(out)[-1], 0.0)
    sym, sym_w = layer(
        [keras.Input(s) for s in DIMS],
        return_attention_weights=True,
    )
    assert tuple(sym_w.shape) == (None, 3)


def test_film_identity_without_condition_and_keeps_mask():
    x = np.random.default_rng(0).normal(size=(B, 4, 3)).astype("float32")
    c = np.random.default_rng(1).normal(size=(B, 5)).astype("float32")
    layer = FiLM(kernel_initializer=INIT)
    layer([x, c])
    np.testing.assert_allclose(to_numpy(layer([x, None])), x, rtol=1e-6)
    mask = np.array([[False, True]] * B)
    np.testing.assert_allclose(to_numpy(layer([x, c], modality_mask=mask)), 0.0)
    # The Keras mask of the features is kept on the output.
    tokens = keras.Input((4,), dtype="int32")
    seq = keras.layers.Embedding(10, 3, mask_zero=True)(tokens)
    cond = keras.Input((5,))
    out = FiLM(kernel_initializer=INIT)([seq, cond])
    assert out._keras_mask is not None


def test_regularizers_add_losses():
    layer = ConcatFusion(4, kernel_regularizer="l2", kernel_initializer=INIT)
    layer(_data(DIMS))
    assert len(layer.losses) == 1
    layer = LowRankFusion(
        4, rank=3, kernel_regularizer="l2", bias_regularizer="l1",
        kernel_initializer=INIT,
    )
    layer(_data(DIMS))
    assert len(layer.losses) == 5  # 3 factors, rank weights, bias


def test_public_names():
    for name in ("ConcatFusion", "GatedFusion", "FiLM", "TensorFusion",
                 "LowRankFusion", "BilinearFusion", "AttentionFusion",
                 "FusedMultiHeadAttention"):
        assert name in mmkeras.layers.__all__
        assert hasattr(mmkeras.layers, name)
