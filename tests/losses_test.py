"""Tests of mmkeras.losses: contrastive_loss_reference, ContrastiveLoss,
LogitScale."""

import json

import keras
import numpy as np
import pytest
from backend_grads import vjp
from numpy_oracle import contrastive_np

import mmkeras
from mmkeras.losses import ContrastiveLoss
from mmkeras.losses import LogitScale
from mmkeras.losses import contrastive_loss_reference


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _numpy_loss(a, b, scale, bias=None, kind="softmax"):
    """The exact formula, in float64 numpy (the shared oracle's loss)."""
    return contrastive_np(a, b, scale, bias, kind)[0]


def _pair(n=7, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)).astype("float32"),
            rng.normal(size=(n, d)).astype("float32"))


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("bias", [None, -2.5])
@pytest.mark.parametrize("scale", [1.0, 14.3])
def test_reference_matches_float64_numpy(kind, bias, scale):
    a, b = _pair()
    got = float(_np(contrastive_loss_reference(a, b, scale, bias, kind=kind)))
    expected = _numpy_loss(a, b, scale, bias, kind)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Asymmetric: a and b are not interchangeable in general, but the
    # softmax loss is symmetric in (a, b).
    if kind == "softmax":
        swapped = _np(contrastive_loss_reference(b, a, scale, bias, kind=kind))
        np.testing.assert_allclose(swapped, expected, rtol=1e-5)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_reference_is_stable_with_large_logits(kind):
    a, b = _pair(n=5, d=3)
    a, b = a * 30, b * 30  # logits ~ 1e5
    got = _np(contrastive_loss_reference(a, b, 100.0, 10.0, kind=kind))
    assert np.isfinite(got)
    np.testing.assert_allclose(got, _numpy_loss(a, b, 100.0, 10.0, kind),
                               rtol=1e-4)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_gradients_finite_and_match_finite_differences(kind):
    a, b = _pair(n=5, d=3, seed=1)
    scale, bias = np.float32(3.0), np.float32(-1.0)

    def fn(a, b, s, t):
        return contrastive_loss_reference(a, b, s, t, kind=kind)

    _, grads = vjp(fn, [a, b, scale, bias], np.float32(1.0))
    for g in grads:
        assert np.all(np.isfinite(g))
    # Central differences of the float64 formula.
    args = [np.float64(a), np.float64(b), 3.0, -1.0]
    eps = 1e-6

    def f(i, v):
        vals = list(args)
        vals[i] = v
        return _numpy_loss(*vals, kind=kind)

    for i in range(4):
        x = np.array(args[i], dtype="float64")
        num = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            hi, lo = x.copy(), x.copy()
            hi[idx] += eps
            lo[idx] -= eps
            num[idx] = (f(i, hi) - f(i, lo)) / (2 * eps)
        np.testing.assert_allclose(grads[i], num, rtol=2e-3, atol=2e-4)


def test_loss_class_unpacks_y_pred():
    a, b = _pair()
    y_pred = np.concatenate([a, b], -1)
    dummy = np.zeros((7, 1), "float32")
    for kind, bias in (("softmax", None), ("sigmoid", -3.0)):
        loss = ContrastiveLoss(kind=kind, logit_scale=5.0, logit_bias=bias)
        np.testing.assert_allclose(
            _np(loss(dummy, y_pred)), _numpy_loss(a, b, 5.0, bias, kind),
            rtol=1e-5,
        )
    default = ContrastiveLoss()(dummy, y_pred)
    np.testing.assert_allclose(_np(default), _numpy_loss(a, b, 10.0),
                               rtol=1e-5)
    layer = LogitScale(initial_scale=4.0, initial_bias=-2.0)
    packed = layer([a, b])
    assert tuple(packed.shape) == (7, 12)
    learned = ContrastiveLoss(kind="sigmoid", learnable=True)
    np.testing.assert_allclose(
        _np(learned(dummy, packed)), _numpy_loss(a, b, 4.0, -2.0, "sigmoid"),
        rtol=1e-5,
    )


def test_logit_scale_layer():
    layer = LogitScale(initial_scale=200.0, max_scale=1000.0)
    a, b = _pair(n=3, d=2)
    out = _np(layer([a, b]))
    np.testing.assert_allclose(out[:, :2], a)
    np.testing.assert_allclose(out[:, 2:4], b)
    np.testing.assert_allclose(out[:, 4], 200.0, rtol=1e-5)
    np.testing.assert_allclose(out[:, 5], 0.0)
    assert len(layer.trainable_weights) == 1
    layer.log_scale.assign(np.log(5000.0))
    np.testing.assert_allclose(_np(layer.scale), 1000.0, rtol=1e-5)
    sym = layer([keras.Input((2,)), keras.Input((2,))])
    assert tuple(sym.shape) == (None, 6)
    config = layer.get_config()
    json.dumps(config)
    assert LogitScale.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="same shape.*Received"):
        LogitScale()([a, b[:, :1]])
    with pytest.raises(ValueError, match=r"list \[a, b\].*Received"):
        LogitScale()([a, b, a])
    with pytest.raises(ValueError, match="initial_scale.*Received"):
        LogitScale(initial_scale=-1.0)
    with pytest.raises(ValueError, match="initial_scale.*max_scale"):
        LogitScale(initial_scale=200.0)


def test_loss_config_and_errors():
    loss = ContrastiveLoss(kind="sigmoid", logit_scale=3.0, logit_bias=-1.0)
    config = loss.get_config()
    json.dumps(config)
    assert ContrastiveLoss.from_config(config).get_config() == config
    ser = keras.saving.serialize_keras_object(loss)
    assert keras.saving.deserialize_keras_object(ser).get_config() == config
    a, b = _pair()
    dummy = np.zeros((7,), "float32")
    with pytest.raises(ValueError, match="kind.*Received"):
        ContrastiveLoss(kind="hinge")
    with pytest.raises(ValueError, match="learnable=True.*Received"):
        ContrastiveLoss(logit_scale=2.0, learnable=True)
    with pytest.raises(ValueError, match="logit_scale.*Received"):
        ContrastiveLoss(logit_scale=0.0)
    with pytest.raises(ValueError, match="y_pred.*Received"):
        ContrastiveLoss()(dummy, np.concatenate([a, b[:, :2]], -1))  # odd
    with pytest.raises(ValueError, match="y_pred.*LogitScale.*Received"):
        ContrastiveLoss(learnable=True)(
            dummy, np.concatenate([a, b, a[:, :1]], -1)  # 2 * 5 + 1
        )
    with pytest.raises(ValueError, match="y_pred.*Received"):
        ContrastiveLoss()(dummy, a[:, None])
    with pytest.raises(ValueError, match="sample_weight.*Received"):
        ContrastiveLoss()(dummy, np.concatenate([a, b], -1), np.ones(7))
    with pytest.raises(ValueError, match="Received"):
        mmkeras.ops.contrastive_loss(a, b[:, :2], 1.0)
    with pytest.raises(ValueError, match="rank.*Received"):
        mmkeras.ops.contrastive_loss(a[None], b[None], 1.0)
    with pytest.raises(ValueError, match="kind.*Received"):
        mmkeras.ops.contrastive_loss(a, b, 1.0, kind="hinge")


def _dual_encoder(head):
    image = keras.Input((8,), name="image")
    text = keras.Input((6,), name="text")
    norm = keras.layers.UnitNormalization
    a = norm()(keras.layers.Dense(4, name="image_proj")(image))
    b = norm()(keras.layers.Dense(4, name="text_proj")(text))
    return keras.Model([image, text], head([a, b]))


def _pairs(n=16, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(n, 8)).astype("float32")
    text = (image @ rng.normal(size=(8, 6)) + 0.1 * rng.normal(size=(n, 6)))
    return image, text.astype("float32")


@pytest.mark.parametrize("learnable", [False, True], ids=["fixed", "learned"])
def test_dual_encoder_trains_with_fit(learnable, tmp_path):
    keras.utils.set_random_seed(0)
    if learnable:
        scale_layer = LogitScale(initial_scale=10.0, initial_bias=-10.0)
        model = _dual_encoder(scale_layer)
        loss = ContrastiveLoss(kind="sigmoid", learnable=True)
    else:
        model = _dual_encoder(keras.layers.Concatenate())
        loss = ContrastiveLoss(kind="softmax", logit_scale=10.0)
    model.compile(keras.optimizers.Adam(0.05), loss=loss)
    image, text = _pairs()
    y = np.zeros((16,), "float32") if learnable else None  # ignored
    before = [_np(w) for w in model.trainable_weights]
    history = model.fit([image, text], y, epochs=8, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0]
    after = [_np(w) for w in model.trainable_weights]
    assert all(not np.allclose(x, z) for x, z in zip(before, after))
    if learnable:
        assert float(_np(scale_layer.log_scale)) != pytest.approx(np.log(10.0))

    path = tmp_path / "dual.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.loss.get_config() == loss.get_config()
    np.testing.assert_allclose(
        loaded.predict([image, text], verbose=0),
        model.predict([image, text], verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )


def test_public_names():
    assert "losses" in mmkeras.__all__
    assert mmkeras.losses.ContrastiveLoss is ContrastiveLoss
    assert mmkeras.layers.LogitScale is LogitScale
