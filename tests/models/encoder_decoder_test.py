import keras
import numpy as np

from model_helpers import assert_same, encoders, shapes_of
from mmkeras import models
from mmkeras.data import WordTokenizer


def captioner(train, info):
    keras.utils.set_random_seed(0)
    return models.EncoderDecoder(
        encoders(["image"], info), shapes_of(train, ["image"]), target="text",
        hidden_dim=16, num_layers=1, num_heads=2,
        vocabulary_size=len(info["vocabulary"]),
        max_target_length=info["caption_length"])


def captions(split, info):
    tokenizer = WordTokenizer(info["vocabulary"])
    return tokenizer.encode(list(split["text_raw"]), info["caption_length"],
                            add_start_end=True)


def test_caption_fit_generate_and_save(digits, tmp_path):
    train, test, info = digits
    model = captioner(train, info)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True, ignore_class=0))
    targets = captions(train, info)
    history = model.fit({"image": train["image"],
                         "decoder_tokens": targets[:, :-1]},
                        targets[:, 1:], epochs=3, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    x = {"image": test["image"][:6]}
    greedy = model.generate(x, max_length=8)
    assert greedy.shape == (6, 8) and greedy.dtype == np.int32
    # the cache changes nothing; beam search with one beam is greedy
    np.testing.assert_array_equal(model.generate(x, max_length=8,
                                                 use_cache=False), greedy)
    np.testing.assert_array_equal(
        model.generate(x, max_length=8, method="beam", beam_width=1), greedy)
    beams = model.generate(x, max_length=8, method="beam", beam_width=3)
    sampled = model.generate(x, max_length=8, method="sample", top_k=5,
                             top_p=0.9, seed=1)
    assert beams.shape == sampled.shape == (6, 8)
    # after a stop token only padding follows
    for row in np.concatenate([greedy, beams, sampled]):
        ends = np.flatnonzero(row == info["vocabulary"].index("<end>"))
        if len(ends):
            assert np.all(row[ends[0] + 1:] == 0)

    path = tmp_path / "captioner.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.generate(x, max_length=8), greedy)


def test_text_to_image(digits):
    train, test, info = digits
    keras.utils.set_random_seed(0)
    model = models.EncoderDecoder(
        encoders(["text"], info), shapes_of(train, ["text"]), target="image",
        target_shape=train["image"].shape[1:], patch_size=4, hidden_dim=16,
        num_layers=1, num_heads=2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False,
                  loss="mse")
    history = model.fit({"text": train["text"]}, train["image"], epochs=3,
                        batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    images = model.generate({"text": test["text"][:4]})
    assert images.shape == (4, *train["image"].shape[1:])
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_missing_decoder_tokens_is_a_clear_error(digits):
    train, test, info = digits
    model = captioner(train, info)
    try:
        model({"image": test["image"][:2]})
    except ValueError as e:
        assert "decoder_tokens" in str(e)
    else:
        raise AssertionError("expected a ValueError")


def test_unknown_class_in_keras_file_fails_clearly(digits, tmp_path):
    import json
    import zipfile

    train, _, info = digits
    model = captioner(train, info)
    path = tmp_path / "model.keras"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    config["class_name"] = "NoSuchModel"
    config["registered_name"] = "mmkeras>NoSuchModel"
    files["config.json"] = json.dumps(config).encode()
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    try:
        keras.saving.load_model(broken, safe_mode=True)
    except (TypeError, ValueError) as e:
        assert "NoSuchModel" in str(e)
    else:
        raise AssertionError("expected an error naming the unknown class")
    assert_same(0, 0)
