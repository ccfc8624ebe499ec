"""Tests for the built-in digits data set, the tokenizer and the batcher."""

import collections

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from mmkeras import data as mm_data
from mmkeras.data import digits as digits_lib

SPLITS = ("train", "validation", "test")
NUM_SAMPLES = 1797


@pytest.fixture(scope="module")
def dataset():
    return mm_data.load_digits_multimodal(seed=0)


@pytest.fixture(scope="module")
def sklearn_digits():
    bunch = load_digits()
    return bunch.images, bunch.target


def _concat(dataset, key):
    return np.concatenate([dataset[s][key] for s in SPLITS])


def _digit_mentions(text):
    """Classes named in a description, by word or numeral."""
    words = mm_data.tokenize(text)
    names = list(mm_data.CLASS_NAMES)
    numerals = [str(i) for i in range(10)]
    return {names.index(w) if w in names else numerals.index(w)
            for w in words if w in names or w in numerals}  # fmt: skip


def _band_features(audio):
    """Log energy in 40 frequency bands, normalized per clip."""
    spectrum = np.abs(np.fft.rfft(audio, axis=1))[:, :800]
    bands = np.log(spectrum.reshape(len(audio), 40, -1).sum(-1) + 1e-6)
    bands -= bands.mean(axis=1, keepdims=True)
    return bands / bands.std(axis=1, keepdims=True)


# --------------------------------------------------------------------------
# Structure, determinism and splits.


def test_structure_shapes_and_dtypes(dataset):
    assert set(dataset) == {*SPLITS, "info"}
    for split in SPLITS:
        arrays = dataset[split]
        n = len(arrays["label"])
        assert arrays["image"].shape == (n, 8, 8, 1)
        assert arrays["image"].dtype == np.float32
        assert arrays["image"].min() >= 0 and arrays["image"].max() <= 1
        assert arrays["text"].shape == (n, 16)
        assert arrays["text"].dtype == np.int32
        assert arrays["text_raw"].shape == (n,)
        assert arrays["audio"].shape == (n, 1600)
        assert arrays["audio"].dtype == np.float32
        assert np.abs(arrays["audio"]).max() <= 1.0
        assert arrays["label"].dtype == np.int32
    info = dataset["info"]
    assert info["class_names"][7] == "seven"
    assert info["num_classes"] == 10
    assert info["vocabulary"][:4] == ["<pad>", "<unk>", "<start>", "<end>"]
    assert info["vocabulary"] == mm_data.digits_vocabulary()
    assert info["sample_rate"] == 4000
    assert info["caption_length"] == 18


def test_same_seed_same_data_other_seed_differs(dataset):
    again = mm_data.load_digits_multimodal(seed=0)
    for split in SPLITS:
        for key, value in dataset[split].items():
            np.testing.assert_array_equal(value, again[split][key])
    other = mm_data.load_digits_multimodal(seed=1)
    assert not np.array_equal(
        dataset["train"]["label"], other["train"]["label"]
    )
    assert not np.array_equal(
        dataset["test"]["audio"][:5], other["test"]["audio"][:5]
    )


def test_split_sizes_disjoint_and_stratified(dataset, sklearn_digits):
    _, all_labels = sklearn_digits
    sizes = {s: len(dataset[s]["label"]) for s in SPLITS}
    assert sum(sizes.values()) == NUM_SAMPLES
    assert sizes == dataset["info"]["split_sizes"]
    for split, fraction in zip(SPLITS, (0.7, 0.15, 0.15)):
        assert abs(sizes[split] - fraction * NUM_SAMPLES) <= 10
        counts = np.bincount(dataset[split]["label"], minlength=10)
        expected = fraction * np.bincount(all_labels)
        assert np.all(np.abs(counts - expected) <= 1)
    # Each clip is unique, so distinct clips mean no sample is shared.
    clips = {row.tobytes() for row in _concat(dataset, "audio")}
    assert len(clips) == NUM_SAMPLES


def test_images_are_the_real_digits_with_their_labels(
    dataset, sklearn_digits
):
    images, labels = sklearn_digits
    by_image = collections.defaultdict(set)
    for image, label in zip(images.astype("int8"), labels):
        by_image[image.tobytes()].add(int(label))
    ours = np.round(_concat(dataset, "image")[..., 0] * 16).astype("int8")
    for image, label in zip(ours, _concat(dataset, "label")):
        assert int(label) in by_image[image.tobytes()]


def test_custom_split_and_sizes():
    data = mm_data.load_digits_multimodal(
        seed=3, split=(0.5, 0.0, 0.5), image_size=16, audio_length=1000,
        max_text_length=20,
    )  # fmt: skip
    assert len(data["validation"]["label"]) == 0
    assert data["validation"]["image"].shape == (0, 16, 16, 1)
    assert data["train"]["image"].shape[1:] == (16, 16, 1)
    assert data["train"]["audio"].shape[1] == 1000
    assert data["test"]["text"].shape[1] == 20


def test_resize_nearest_repeats_pixels_bilinear_stays_in_range():
    rng = np.random.default_rng(0)
    images = rng.random((3, 8, 8, 1)).astype("float32")
    nearest = digits_lib.resize_images(images, 16, "nearest")
    np.testing.assert_array_equal(
        nearest, images.repeat(2, axis=1).repeat(2, axis=2)
    )
    bilinear = digits_lib.resize_images(images, 32, "bilinear")
    assert bilinear.shape == (3, 32, 32, 1)
    assert bilinear.min() >= images.min() - 1e-6
    assert bilinear.max() <= images.max() + 1e-6
    np.testing.assert_allclose(
        bilinear.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=0.02
    )


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"split": (0.7, 0.2, 0.2)}, "split"),
        ({"split": (0.7, 0.3)}, "split"),
        ({"image_size": 0}, "image_size"),
        ({"interpolation": "cubic"}, "interpolation"),
        ({"max_text_length": 4}, "max_text_length"),
        ({"sample_rate": 1000}, "sample_rate"),
        ({"text_noise": 0.9}, "text_noise"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: "):
        mm_data.load_digits_multimodal(**kwargs)


# --------------------------------------------------------------------------
# Text.


def test_text_names_the_right_digit(dataset):
    raw = _concat(dataset, "text_raw")
    labels = _concat(dataset, "label")
    mentions = [_digit_mentions(t) for t in raw]
    # Never a wrong digit; the right one in nearly every description.
    assert all(m <= {int(y)} for m, y in zip(mentions, labels))
    named = np.mean([int(y) in m for m, y in zip(mentions, labels)])
    assert named >= 0.95
    assert len(set(raw)) > 300  # Varied, not one template.


def test_text_ids_encode_the_raw_text(dataset):
    tokenizer = mm_data.WordTokenizer(dataset["info"]["vocabulary"])
    vocabulary = set(dataset["info"]["vocabulary"])
    decoded = tokenizer.decode(dataset["train"]["text"])
    for text, back in zip(dataset["train"]["text_raw"], decoded):
        expected = [w if w in vocabulary else "<unk>" for w in text.split()]
        assert back == " ".join(expected)


def test_clean_text_has_no_noise():
    data = mm_data.load_digits_multimodal(seed=0, text_noise=0.0)
    raw = _concat(data, "text_raw")
    labels = _concat(data, "label")
    assert all({int(y)} == _digit_mentions(t) for t, y in zip(raw, labels))
    assert not np.any(_concat(data, "text") == mm_data.text.UNK_ID)


def test_tokenizer_round_trip_and_errors():
    vocabulary = mm_data.build_vocabulary(
        ["a handwritten seven", "a seven, again!", "zzz"], min_count=2
    )
    assert vocabulary == ["<pad>", "<unk>", "<start>", "<end>", "a", "seven"]
    tokenizer = mm_data.WordTokenizer(vocabulary)
    ids = tokenizer.encode("A Seven here", max_length=7, add_start_end=True)
    np.testing.assert_array_equal(ids, [2, 4, 5, 1, 3, 0, 0])
    assert tokenizer.decode(ids) == "a seven <unk>"
    assert tokenizer.decode(ids, skip_special_tokens=False) == (
        "<start> a seven <unk>"
    )
    # Tokens after the first "<end>" are ignored.
    assert tokenizer.decode([[4, 3, 5], [5, 5, 0]]) == ["a", "seven seven"]
    with pytest.raises(ValueError, match="max_length.*Received: text="):
        tokenizer.encode(["a seven a seven"], max_length=3)
    np.testing.assert_array_equal(
        tokenizer.encode(["a seven a seven"], max_length=3, truncate=True),
        [[4, 5, 4]],
    )
    with pytest.raises(ValueError, match="special tokens.*Received: "):
        mm_data.WordTokenizer(["a", "b"])
    restored = mm_data.WordTokenizer.from_config(tokenizer.get_config())
    assert restored.vocabulary == vocabulary


# --------------------------------------------------------------------------
# Audio.


def test_audio_carries_the_label(dataset):
    train_x = _band_features(dataset["train"]["audio"])
    train_y = dataset["train"]["label"]
    test_x = _band_features(dataset["test"]["audio"])
    centroids = np.stack([train_x[train_y == c].mean(0) for c in range(10)])
    distances = ((test_x[:, None] - centroids[None]) ** 2).sum(-1)
    accuracy = np.mean(distances.argmin(1) == dataset["test"]["label"])
    assert accuracy >= 0.9


def test_audio_varies_within_a_class(dataset):
    audio = dataset["train"]["audio"][dataset["train"]["label"] == 4]
    assert np.all(np.abs(audio).max(axis=1) > 0.25)  # Audible.
    # Speaker pitch, rate and noise make every clip of a digit different.
    correlation = np.corrcoef(audio[:10])
    assert np.max(np.abs(correlation[np.triu_indices(10, 1)])) < 0.9


# --------------------------------------------------------------------------
# PyDataset batches.


def test_dataset_batches_and_reshuffles(dataset):
    arrays = dataset["validation"]
    batches = mm_data.MultimodalDataset(arrays, batch_size=64, seed=0)
    n = len(arrays["label"])
    assert len(batches) == -(-n // 64)
    first_epoch = []
    for i in range(len(batches)):
        features, labels = batches[i]
        assert set(features) == {"image", "text", "audio"}
        assert features["image"].shape[1:] == (8, 8, 1)
        assert len(labels) == len(features["audio"]) <= 64
        first_epoch.append(features["audio"])
    first = np.concatenate(first_epoch)
    assert len(first) == n
    # Every sample exactly once, each with its own label.
    lookup = {a.tobytes(): y for a, y in zip(arrays["audio"], arrays["label"])}
    assert len({a.tobytes() for a in first}) == n
    features, labels = batches[0]
    assert [lookup[a.tobytes()] for a in features["audio"]] == list(labels)
    batches.on_epoch_end()
    assert not np.array_equal(batches[0][0]["audio"], first[:64])

    ordered = mm_data.MultimodalDataset(
        arrays, batch_size=100, shuffle=False, inputs=["text"], target=None
    )
    (only,) = ordered[1]
    np.testing.assert_array_equal(only["text"], arrays["text"][100:200])
    with pytest.raises(ValueError, match="missing.*Received: "):
        mm_data.MultimodalDataset(arrays, inputs=["video"])


def test_dataset_feeds_model_fit(dataset):
    arrays = {k: v[:64] for k, v in dataset["train"].items()}
    image = keras.Input((8, 8, 1), name="image")
    text = keras.Input((16,), name="text", dtype="int32")
    audio = keras.Input((1600,), name="audio")
    vocabulary_size = len(dataset["info"]["vocabulary"])
    merged = keras.layers.Concatenate()([
        keras.layers.Flatten()(image),
        keras.layers.GlobalAveragePooling1D()(
            keras.layers.Embedding(vocabulary_size, 4)(text)
        ),
        keras.layers.Dense(4)(audio),
    ])  # fmt: skip
    outputs = keras.layers.Dense(10, activation="softmax")(merged)
    model = keras.Model({"image": image, "text": text, "audio": audio}, outputs)
    model.compile("sgd", "sparse_categorical_crossentropy")
    history = model.fit(
        mm_data.MultimodalDataset(arrays, batch_size=32, seed=0),
        epochs=1,
        verbose=0,
    )
    assert np.isfinite(history.history["loss"][0])
