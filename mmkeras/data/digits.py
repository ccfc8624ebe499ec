"""Built-in tri-modal data set: real handwritten digits, text and audio.

The images are scikit-learn's `load_digits` (1,797 real 8x8 scans, shipped
inside scikit-learn, so no network is needed). Each image is paired with

- a short English description of its digit, drawn from varied templates with
  some noise (filler words, typos, dropped words), and
- a short synthesized "spoken" clip: two class-specific tones (like two vowel
  formants) with a class-specific glide, voiced by a random speaker (pitch
  shift, speaking rate, glottal buzz, loudness) and additive noise.

Everything is numpy; `MultimodalDataset` wraps the arrays in a
`keras.utils.PyDataset` so `model.fit` consumes them on any backend.
"""

import math

import keras
import numpy as np

from mmkeras.data import text as text_lib

CLASS_NAMES = (
    "zero", "one", "two", "three", "four",
    "five", "six", "seven", "eight", "nine",
)  # fmt: skip
NUM_CLASSES = len(CLASS_NAMES)
NATIVE_IMAGE_SIZE = 8
DEFAULT_SAMPLE_RATE = 4000
DEFAULT_AUDIO_LENGTH = 1600  # 0.4 s at 4 kHz: small, yet many periods.
DEFAULT_MAX_TEXT_LENGTH = 16
SPLIT_NAMES = ("train", "validation", "test")
MODALITIES = ("image", "text", "audio")

# `{d}` is the digit (a word, or sometimes a numeral); `{a}`, its article,
# only ever stands right before it.
# No template word may be a digit word: the digit must be the only cue.
_TEMPLATES = (
    "a handwritten {d}",
    "this image shows the digit {d}",
    "the number {d} written by hand",
    "a picture of {a} {d}",
    "an image of the digit {d}",
    "someone wrote the number {d}",
    "a small scanned {d}",
    "handwritten digit {d}",
    "the digit {d} drawn with a pen",
    "it looks like {a} {d}",
    "this is {a} {d}",
    "a low resolution image of {a} {d}",
    "{d} written quickly by hand",
    "the handwritten numeral {d}",
    "a scan of the number {d}",
    "a grayscale digit showing {a} {d}",
)
_FILLERS = (
    "clearly", "probably", "maybe", "quite", "very", "neat", "messy",
    "bold", "thin", "small", "faded", "really", "just", "here", "again",
    "slightly", "rather", "carefully", "old", "tiny",
)  # fmt: skip
_NUMERALS = tuple(str(i) for i in range(NUM_CLASSES))
_MAX_FILLERS = 2
MAX_TEXT_WORDS = (
    max(len(t.split()) for t in _TEMPLATES) + _MAX_FILLERS
)  # Longest possible description; `max_text_length` must fit it.

# Audio: 8 log-spaced tones 25% apart, so a +-7% speaker pitch shift never
# moves one tone onto its neighbour; each digit is a distinct pair of them
# plus a rising or falling glide.
_TONES_HZ = 300.0 * 1.25 ** np.arange(8)
_TONE_PAIRS = np.array(
    [(0, 3), (0, 5), (1, 4), (1, 6), (2, 5), (2, 7), (3, 6), (0, 7), (4, 7),
     (1, 7)]
)  # fmt: skip
_GLIDES = np.array([0.1, -0.1] * 5)
_MAX_PITCH = 1.07
_MIN_SAMPLE_RATE = 4000  # Nyquist must stay above the highest gliding tone.


def digits_vocabulary():
    """Returns the fixed vocabulary of the built-in descriptions.

    It holds every word the description generator can write (typos aside,
    which encode as ``"<unk>"``), so it does not depend on the seed.

    Returns:
        A list of tokens starting with the four special tokens.
    """
    words = set(CLASS_NAMES) | set(_NUMERALS) | set(_FILLERS) | {"a", "an"}
    for template in _TEMPLATES:
        words.update(
            w for w in text_lib.tokenize(template) if w not in ("a", "d")
        )
    return list(text_lib.SPECIAL_TOKENS) + sorted(words)


def load_digits_multimodal(
    seed=0,
    split=(0.7, 0.15, 0.15),
    image_size=NATIVE_IMAGE_SIZE,
    interpolation="bilinear",
    audio_length=DEFAULT_AUDIO_LENGTH,
    sample_rate=DEFAULT_SAMPLE_RATE,
    max_text_length=DEFAULT_MAX_TEXT_LENGTH,
    text_noise=0.1,
    tokenizer="word",
):
    """Loads the built-in image/text/audio digits data set.

    The same arguments always give the same arrays. Text, audio and the split
    draw from independent random streams, so changing e.g. `audio_length`
    leaves the descriptions and the split unchanged.

    Args:
        seed: integer seed of everything random.
        split: fractions ``(train, validation, test)``, each >= 0, summing
            to 1. The split is stratified by digit.
        image_size: side of the square images; 8 is the native resolution,
            anything else resizes with `interpolation`.
        interpolation: ``"bilinear"`` or ``"nearest"``.
        audio_length: samples per clip (about 0.4 s by default).
        sample_rate: audio sample rate in Hz, >= 4000.
        max_text_length: token ids per description (0-padded); must be at
            least `MAX_TEXT_WORDS`. Captions with ``<start>``/``<end>``
            need 2 more (``info["caption_length"]``).
        text_noise: amount of noise in the descriptions, in [0, 0.3]. At
            0.1 about 2.5% of descriptions lose their digit word; at 0 they
            are clean template sentences.
        tokenizer: "word" (`WordTokenizer` over `digits_vocabulary()`: the
            default, and the fastest), "wordpiece" (a keras-hub
            `WordPieceTokenizer` over a vocabulary built offline from the
            training split's descriptions with `build_word_piece_vocabulary`;
            typos become word pieces instead of ``"<unk>"``), or a tokenizer
            object (a keras-hub tokenizer, `HubTokenizer` or
            `WordTokenizer`). A description longer than `max_text_length`
            in its tokens is an error.

    Returns:
        A dict with keys ``"train"``, ``"validation"``, ``"test"`` and
        ``"info"``. Each split is a dict of numpy arrays over its n samples:

        - ``"image"``: float32 ``(n, image_size, image_size, 1)`` in [0, 1];
        - ``"text"``: int32 ``(n, max_text_length)`` token ids, padded with
          ``info["pad_id"]`` (0 for "word" and "wordpiece");
        - ``"text_raw"``: ``(n,)`` array of the description strings;
        - ``"audio"``: float32 ``(n, audio_length)`` in [-1, 1];
        - ``"label"``: int32 ``(n,)`` digit in 0..9.

        ``"info"`` is a JSON-serializable dict: ``class_names``,
        ``num_classes``, ``vocabulary`` (index = token id),
        ``vocabulary_size``, ``pad_id``, ``start_id``, ``end_id``,
        ``tokenizer`` (rebuild it with
        `mmkeras.data.tokenizer_from_config`), ``sample_rate``,
        ``audio_length``, ``image_size``, ``max_text_length``,
        ``caption_length``, ``seed``, ``split_sizes``.

    Example:

    >>> data = load_digits_multimodal(seed=0)
    >>> data["train"]["image"].shape
    (1258, 8, 8, 1)
    """
    _check_int("seed", seed, minimum=0)
    split = check_split(split)
    _check_int("image_size", image_size, minimum=1)
    _check_choice("interpolation", interpolation, ("bilinear", "nearest"))
    _check_int("audio_length", audio_length, minimum=16)
    _check_int("sample_rate", sample_rate, minimum=_MIN_SAMPLE_RATE)
    _check_int("max_text_length", max_text_length, minimum=MAX_TEXT_WORDS)
    if not isinstance(text_noise, (int, float)) or not 0 <= text_noise <= 0.3:
        raise ValueError(
            "Argument `text_noise` must be a number in [0, 0.3] (more noise "
            "would hide the digit in too many descriptions). "
            f"Received: text_noise={text_noise!r}"
        )

    images, labels = _load_sklearn_digits()
    split_rng, text_rng, audio_rng = [
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    ]
    if image_size != NATIVE_IMAGE_SIZE:
        images = resize_images(images, image_size, interpolation)
    descriptions = describe_digits(labels, text_rng, text_noise)
    parts = stratified_split(labels, split, split_rng)
    tokenizer = text_lib.as_tokenizer(
        tokenizer, texts=[descriptions[i] for i in parts[0]],
        word_vocabulary=digits_vocabulary())
    arrays = {
        "image": images,
        "text": _encode(tokenizer, descriptions, max_text_length),
        "text_raw": np.array(descriptions, dtype=object),
        "audio": synthesize_digit_audio(
            labels, audio_rng, audio_length, sample_rate
        ),
        "label": labels,
    }
    result = {
        name: {key: value[idx] for key, value in arrays.items()}
        for name, idx in zip(SPLIT_NAMES, parts)
    }
    result["info"] = {
        "class_names": list(CLASS_NAMES),
        "num_classes": NUM_CLASSES,
        **text_lib.tokenizer_info(tokenizer),
        "sample_rate": sample_rate,
        "audio_length": audio_length,
        "image_size": image_size,
        "max_text_length": max_text_length,
        "caption_length": max_text_length + 2,
        "seed": seed,
        "split_sizes": {n: int(len(i)) for n, i in zip(SPLIT_NAMES, parts)},
    }
    return result


def _encode(tokenizer, descriptions, max_text_length):
    lengths = tokenizer.sequence_lengths(descriptions)
    longest = np.argmax(lengths)
    if lengths[longest] > max_text_length:
        raise ValueError(
            f"Argument `max_text_length`={max_text_length} is shorter than "
            f"description {longest}, which the tokenizer turns into "
            f"{lengths[longest]} tokens; pass at least {max(lengths)}. "
            f"Received: max_text_length={max_text_length}"
        )
    return tokenizer.encode(descriptions, max_text_length)


def _load_sklearn_digits():
    # Imported here so `import mmkeras.data` stays light.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are counts 0..16 over a 4x4 block; scale to [0, 1].
    images = (bunch.images / 16.0).astype("float32")[..., None]
    return images, bunch.target.astype("int32")


# ---------------------------------------------------------------------------
# Splits and argument checks (shared with the manifest loader).


def check_split(split):
    """Validates split fractions and returns them as a tuple of 3 floats."""
    try:
        fractions = tuple(float(f) for f in split)
    except (TypeError, ValueError):
        fractions = ()
    if (
        len(fractions) != 3
        or any(not math.isfinite(f) or f < 0 for f in fractions)
        or abs(sum(fractions) - 1.0) > 1e-6
    ):
        raise ValueError(
            "Argument `split` must be 3 non-negative fractions (train, "
            f"validation, test) that sum to 1. Received: split={split!r}"
        )
    return fractions


def stratified_split(labels, split, rng):
    """Splits sample indices by class, keeping class proportions.

    Args:
        labels: int array ``(n,)``.
        split: validated ``(train, validation, test)`` fractions.
        rng: a `numpy.random.Generator`.

    Returns:
        Three int arrays of indices (train, validation, test), each shuffled.
    """
    cuts = np.cumsum(split)[:2]
    parts = [[], [], []]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        # Rounding the cumulative cut points keeps every class's pieces
        # within one sample of the requested fractions.
        bounds = np.round(cuts * len(members)).astype(int)
        for part, piece in zip(parts, np.split(members, bounds)):
            part.append(piece)
    return [rng.permutation(np.concatenate(p)).astype("int64") for p in parts]


def _check_int(name, value, minimum):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        raise ValueError(
            f"Argument `{name}` must be an integer >= {minimum}. "
            f"Received: {name}={value!r}"
        )


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Argument `{name}` must be one of {list(choices)}. "
            f"Received: {name}={value!r}"
        )


# ---------------------------------------------------------------------------
# Images.


def resize_images(images, size, interpolation="bilinear"):
    """Resizes a batch of square images with plain numpy.

    Bilinear resizing uses half-pixel centers (like `keras.ops.image.resize`)
    and is written as two small interpolation matrices, one per axis, which
    is exact and fast for tiny images.

    Args:
        images: float array ``(n, h, w, c)``.
        size: output side length.
        interpolation: ``"bilinear"`` or ``"nearest"``.

    Returns:
        A float32 array ``(n, size, size, c)``.
    """
    _check_choice("interpolation", interpolation, ("bilinear", "nearest"))
    rows = _interpolation_matrix(images.shape[1], size, interpolation)
    cols = _interpolation_matrix(images.shape[2], size, interpolation)
    out = np.einsum("ih,nhwc,jw->nijc", rows, images, cols, optimize=True)
    return out.astype("float32")


def _interpolation_matrix(in_size, out_size, interpolation):
    """Returns the ``(out_size, in_size)`` matrix that resamples one axis."""
    centers = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
    matrix = np.zeros((out_size, in_size))
    if interpolation == "nearest":
        nearest = np.clip(np.floor(centers + 0.5), 0, in_size - 1).astype(int)
        matrix[np.arange(out_size), nearest] = 1.0
        return matrix
    centers = np.clip(centers, 0, in_size - 1)
    low = np.floor(centers).astype(int)
    high = np.minimum(low + 1, in_size - 1)
    weight = centers - low
    np.add.at(matrix, (np.arange(out_size), low), 1.0 - weight)
    np.add.at(matrix, (np.arange(out_size), high), weight)
    return matrix


# ---------------------------------------------------------------------------
# Text.


def describe_digits(labels, rng, noise=0.1):
    """Writes one noisy English description per digit label.

    Args:
        labels: int array ``(n,)`` of digits.
        rng: a `numpy.random.Generator`.
        noise: noise level in [0, 0.3]; see `load_digits_multimodal`.

    Returns:
        A list of n strings.
    """
    return [_describe(int(label), rng, noise) for label in labels]


def _describe(label, rng, noise):
    template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
    # One description in five names the digit as a numeral ("the digit 7").
    digit = _NUMERALS[label] if rng.random() < 0.2 else CLASS_NAMES[label]
    article = "an" if label == 8 else "a"
    words = template.format(a=article, d=digit).split()
    digit_words = {digit}
    kept = []
    for word in words:
        if word in digit_words:
            # Rarely the digit itself is lost; the class is then unknowable
            # from text, which fusion models must learn to live with.
            if rng.random() < 0.25 * noise:
                continue
        elif rng.random() < 0.3 * noise:
            continue  # Dropped filler-like template word.
        elif len(word) >= 4 and rng.random() < 0.5 * noise:
            word = _typo(word, rng)
        kept.append(word)
    for _ in range(_MAX_FILLERS):
        if rng.random() < 2 * noise:
            filler = _FILLERS[rng.integers(len(_FILLERS))]
            kept.insert(int(rng.integers(len(kept) + 1)), filler)
    return " ".join(kept)


def _typo(word, rng):
    """Swaps, drops or doubles one letter, like a hurried typist."""
    i = int(rng.integers(len(word) - 1))
    kind = rng.integers(3)
    if kind == 0:
        typo = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    elif kind == 1:
        typo = word[:i] + word[i + 1 :]
    else:
        typo = word[:i] + word[i] + word[i:]
    # A typo must never spell a digit word by accident.
    return word if typo in CLASS_NAMES or typo in _NUMERALS else typo


# ---------------------------------------------------------------------------
# Audio.


def synthesize_digit_audio(labels, rng, audio_length, sample_rate):
    """Synthesizes one short clip per digit label.

    Each digit is a pair of tones with a rising or falling glide. A random
    "speaker" shifts the pitch (+-7%), speaks faster or slower (0.8x to
    1.25x duration), starts at a random time, buzzes at a glottal rate of
    90-220 Hz (amplitude modulation), and speaks at a random loudness; then
    white noise at 8-20 dB SNR is added.

    Args:
        labels: int array ``(n,)`` of digits.
        rng: a `numpy.random.Generator`.
        audio_length: samples per clip.
        sample_rate: sample rate in Hz.

    Returns:
        A float32 array ``(n, audio_length)`` with values in [-1, 1].
    """
    n = len(labels)
    speed = rng.uniform(0.8, 1.25, n)
    duration = np.clip(
        np.round(0.6 * audio_length * speed), audio_length // 4, audio_length
    ).astype(int)
    onset = np.floor(rng.random(n) * (audio_length - duration + 1))
    pitch = np.exp(rng.uniform(-np.log(_MAX_PITCH), np.log(_MAX_PITCH), n))
    glottal_hz = rng.uniform(90.0, 220.0, n)
    amplitudes = (rng.uniform(0.6, 1.0, n), rng.uniform(0.4, 0.8, n))
    phases = rng.uniform(0, 2 * np.pi, (2, n))
    snr_db = rng.uniform(8.0, 20.0, n)
    loudness = rng.uniform(0.3, 0.9, n)
    noise = rng.standard_normal((n, audio_length), dtype="float32")

    position = np.arange(audio_length, dtype="float32")[None, :]
    progress = (position - onset[:, None]) / duration[:, None]
    inside = (progress >= 0) & (progress < 1)
    progress = np.clip(progress, 0.0, 1.0).astype("float32")
    # A soft-edged envelope so clips start and end without clicks.
    envelope = np.where(
        inside, np.sqrt(np.maximum(np.sin(np.pi * progress), 0.0)), 0.0
    )

    glide = 1.0 + _GLIDES[labels][:, None] * (progress - 0.5)
    clip = np.zeros((n, audio_length), dtype="float32")
    for k in range(2):
        tone_hz = _TONES_HZ[_TONE_PAIRS[labels, k]] * pitch
        frequency = (tone_hz[:, None] * glide).astype("float32")
        # Integrating the instantaneous frequency keeps the glide smooth.
        phase = 2 * np.pi * np.cumsum(frequency, axis=1) / sample_rate
        clip += amplitudes[k][:, None] * np.sin(phase + phases[k][:, None])
    buzz_phase = 2 * np.pi * glottal_hz[:, None] * position / sample_rate
    clip *= envelope * (1.0 - 0.3 * (0.5 + 0.5 * np.cos(buzz_phase)))

    rms = np.sqrt(np.mean(clip**2, axis=1))
    clip += noise * (rms / 10 ** (snr_db / 20))[:, None]
    peak = np.max(np.abs(clip), axis=1)
    clip *= (loudness / np.maximum(peak, 1e-8))[:, None]
    return clip.astype("float32")


# ---------------------------------------------------------------------------
# Batching for `model.fit`.


class MultimodalDataset(keras.utils.PyDataset):
    """Feeds a dict of numpy arrays to Keras in shuffled batches.

    Yields ``(inputs, target)`` where `inputs` is a dict such as
    ``{"image": ..., "text": ..., "audio": ...}``. Works with the split
    dicts of `load_digits_multimodal` and `load_manifest` on every backend.

    Args:
        arrays: dict of equally long numpy arrays (one data split).
        batch_size: samples per batch; the last batch may be smaller.
        shuffle: reshuffle the sample order at the start of every epoch.
        seed: seed of the shuffling, for reproducible epochs.
        inputs: keys to feed as model inputs. Defaults to those of
            ``("image", "text", "audio")`` present in `arrays`.
        target: key of the target array, or None to yield inputs only
            (for `model.predict`).
        **kwargs: `keras.utils.PyDataset` arguments (`workers`,
            `use_multiprocessing`, `max_queue_size`).
    """

    def __init__(
        self,
        arrays,
        batch_size=32,
        shuffle=True,
        seed=None,
        inputs=None,
        target="label",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if inputs is None:
            inputs = [key for key in MODALITIES if key in arrays]
        inputs = list(inputs)
        keys = inputs + ([target] if target is not None else [])
        missing = [key for key in keys if key not in arrays]
        if not inputs or missing:
            raise ValueError(
                "Argument `arrays` must hold the input and target keys "
                f"{keys} (missing {missing}). "
                f"Received: keys {sorted(arrays)}"
            )
        lengths = {key: len(arrays[key]) for key in keys}
        if len(set(lengths.values())) != 1:
            raise ValueError(
                "Argument `arrays` must hold arrays of one length. "
                f"Received: lengths {lengths}"
            )
        _check_int("batch_size", batch_size, minimum=1)
        self._arrays = {key: np.asarray(arrays[key]) for key in keys}
        self._inputs = inputs
        self._target = target
        self._size = lengths[keys[0]]
        self._batch_size = batch_size
        self._shuffle = shuffle
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(self._size)
        self._reshuffle()

    def __len__(self):
        return math.ceil(self._size / self._batch_size)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(
                f"Batch index must be in [0, {len(self)}). Received: {index}"
            )
        start = index * self._batch_size
        idx = self._order[start : start + self._batch_size]
        features = {key: self._arrays[key][idx] for key in self._inputs}
        if self._target is None:
            return (features,)
        return features, self._arrays[self._target][idx]

    def on_epoch_end(self):
        self._reshuffle()

    def _reshuffle(self):
        if self._shuffle:
            self._order = self._rng.permutation(self._size)
