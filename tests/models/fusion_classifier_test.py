import keras
import numpy as np
import pytest

from model_helpers import assert_same, encoders, inputs_of, shapes_of
from mmkeras import layers, models

NAMES = ["image", "text", "audio"]


def build(info, train, fusion=None):
    keras.utils.set_random_seed(0)
    return models.FusionClassifier(
        encoders(NAMES, info), shapes_of(train, NAMES),
        fusion or layers.GatedFusion(16), num_classes=10)


def test_fit_evaluate_missing_modality_and_save(digits, tmp_path):
    train, test, info = digits
    model = build(info, train)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(inputs_of(train, NAMES), train["label"], epochs=4,
                        batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    x = inputs_of(test, NAMES)
    loss, acc = model.evaluate(x, test["label"], verbose=0)
    assert np.isfinite(loss)
    mask = np.ones((len(test["label"]), 3), bool)
    mask[:, 0] = False  # no image
    masked = model.predict({**x, "modality_mask": mask}, verbose=0)
    assert np.all(np.isfinite(masked))
    # the absent modality is ignored: changing it changes nothing
    noisy = {**x, "image": np.random.rand(*x["image"].shape).astype("float32"),
             "modality_mask": mask}
    assert_same(model.predict(noisy, verbose=0), masked)

    path = tmp_path / "classifier.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert_same(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("bad,message", [
    (lambda x: {k: v for k, v in x.items() if k != "text"}, "Missing input 'text'"),
    (lambda x: {**x, "text": x["text"].astype("float32")}, "integer"),
    (lambda x: {**x, "image": x["image"][..., 0]}, "Input `image` must have shape"),
    (lambda x: {**x, "text": np.ones((len(x["text"]), 99), "int32")}, "longer than"),
    (lambda x: {**x, "video": x["image"]}, "Unknown input 'video'"),
])
def test_bad_input_names_the_input(digits, bad, message):
    train, test, info = digits
    model = build(info, train, layers.ConcatFusion(16))
    with pytest.raises(ValueError, match=message):
        model(bad(inputs_of(test, NAMES)))


def test_config_round_trip(digits):
    train, _, info = digits
    model = build(info, train, layers.ConcatFusion(16))
    config = model.get_config()
    again = models.FusionClassifier.from_config(config)
    assert again.get_config() == config
