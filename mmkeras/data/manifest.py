"""Loads users' own multimodal data from a CSV or JSONL manifest.

A manifest has one row per sample and columns among ``image`` (path to an
image file), ``audio`` (path to a WAV file), ``text`` (a sentence) and
``label`` (a class name), plus an optional ``split`` column
(``train``/``validation``/``test``). Paths are relative to the manifest's
folder unless absolute. Other columns are ignored.

Every row is read and checked before anything is returned: a bad manifest
raises one `ValueError` that lists each problem with its row and column, and
no partially loaded data ever escapes.
"""

import csv
import json
import math
import os
import warnings

import keras
import numpy as np

from mmkeras.data import digits as digits_lib
from mmkeras.data import text as text_lib

DATA_COLUMNS = ("image", "audio", "text", "label")
MODALITY_COLUMNS = ("image", "audio", "text")
SPLIT_COLUMN = "split"
_MAX_LISTED_PROBLEMS = 20


class _Problems:
    """Collects per-row problems so all rows are checked before raising."""

    def __init__(self):
        self.messages = []

    def add(self, record, column, what, value):
        self.messages.append(
            f"row {record.row} (line {record.line}), column '{column}': "
            f"{what}. Received: {column}={value!r}"
        )

    def raise_if_any(self, path):
        if not self.messages:
            return
        count = len(self.messages)
        shown = self.messages[:_MAX_LISTED_PROBLEMS]
        more = (
            f" (the first {len(shown)} are listed)"
            if count > len(shown)
            else ""
        )
        raise ValueError(
            f"Manifest {path} has {count} invalid "
            f"entr{'y' if count == 1 else 'ies'}{more}; nothing was "
            "loaded.\n" + "\n".join("  " + m for m in shown)
        )


class _Record:
    """One manifest row: its 1-based row number, file line and values."""

    def __init__(self, row, line, values):
        self.row = row
        self.line = line
        self.values = values


def load_manifest(
    path,
    image_size=32,
    color_mode="grayscale",
    audio_length=8000,
    sample_rate=8000,
    labels=None,
    vocabulary=None,
    max_text_length=None,
    columns=None,
    split=(0.7, 0.15, 0.15),
    seed=0,
    tokenizer="word",
):
    """Loads a CSV or JSONL manifest into train/validation/test arrays.

    Args:
        path: path to a ``.csv`` file (with a header row) or a ``.jsonl``
            file (one JSON object per line).
        image_size: int or ``(height, width)``; images are resized to it.
        color_mode: ``"grayscale"`` (1 channel) or ``"rgb"`` (3 channels).
        audio_length: samples per clip; longer clips are cut at the end,
            shorter ones zero-padded at the end.
        sample_rate: clips are resampled to this rate in Hz.
        labels: optional list of class names; a label's id is its position.
            Any other label in the manifest is an error. By default the
            sorted distinct labels of the manifest (numerically when all
            are integers).
        vocabulary: optional token list for `WordTokenizer` (with
            `tokenizer="word"`). By default it is built from the training
            split's texts.
        max_text_length: token ids per text. By default the longest text's
            length in tokens; when given, a longer text is an error (never
            cut).
        columns: data columns to load, among ``image``, ``audio``, ``text``,
            ``label``; each must exist. Defaults to those present.
        split: ``(train, validation, test)`` fractions, stratified by label,
            used when the manifest has no ``split`` column.
        seed: seed of the random split.
        tokenizer: "word" (`WordTokenizer`, the default and fastest),
            "wordpiece" (a keras-hub `WordPieceTokenizer` over a vocabulary
            built from the training split's texts with
            `build_word_piece_vocabulary`), or a tokenizer object (any
            keras-hub tokenizer, a `HubTokenizer` or a `WordTokenizer`).
            Texts are padded with its padding id (``info["pad_id"]``).

    Returns:
        The structure of `load_digits_multimodal`: a dict with
        ``"train"``, ``"validation"``, ``"test"`` (each a dict of numpy
        arrays ``"image"`` float32 ``(n, h, w, c)`` in [0, 1], ``"audio"``
        float32 ``(n, audio_length)``, ``"text"`` int32
        ``(n, max_text_length)``, ``"text_raw"``, ``"label"`` int32, for the
        columns loaded) and ``"info"`` (``class_names``, ``num_classes``,
        ``vocabulary``, ``vocabulary_size``, ``pad_id``, ``start_id``,
        ``end_id``, ``tokenizer`` (see `mmkeras.data.tokenizer_from_config`;
        these are None without a text column), ``sample_rate``,
        ``audio_length``, ``image_size``, ``color_mode``,
        ``max_text_length``, ``caption_length``, ``split_sizes``,
        ``manifest``).

    Raises:
        ValueError: for a bad argument, an unreadable manifest, a missing
            column, or any bad row (missing file, unreadable image or
            audio, unknown label, text too long, bad split name); row
            problems name the row and column.
    """
    path = os.fspath(path)
    image_size = _check_image_size(image_size)
    digits_lib._check_choice("color_mode", color_mode, ("grayscale", "rgb"))
    digits_lib._check_int("audio_length", audio_length, minimum=1)
    digits_lib._check_int("sample_rate", sample_rate, minimum=1)
    if max_text_length is not None:
        digits_lib._check_int("max_text_length", max_text_length, minimum=1)
    split = digits_lib.check_split(split)
    if vocabulary is not None:
        if tokenizer != "word":
            raise ValueError(
                "Argument `vocabulary` is the word tokenizer's; it cannot go "
                "with another tokenizer. Received: vocabulary with "
                f"tokenizer={tokenizer!r}"
            )
        tokenizer = text_lib.WordTokenizer(vocabulary)
    elif not isinstance(tokenizer, str) or tokenizer not in text_lib.TOKENIZERS:
        tokenizer = text_lib.as_tokenizer(tokenizer)  # given, or refused
    if labels is not None:
        labels = _check_labels(labels)

    header, records = _read_manifest(path)
    loaded = _resolve_columns(header, columns, labels, path)
    base_dir = os.path.dirname(os.path.abspath(path))
    problems = _Problems()
    arrays = {}
    if "image" in loaded:
        arrays["image"] = _load_images(
            records, base_dir, image_size, color_mode, problems
        )
    if "audio" in loaded:
        arrays["audio"] = _load_audio(
            records, base_dir, audio_length, sample_rate, problems
        )
    texts = _read_texts(records, problems) if "text" in loaded else None
    if "label" in loaded:
        arrays["label"], class_names = _read_labels(records, labels, problems)
    else:
        class_names = None
    assignment = (
        _read_split_column(records, problems)
        if SPLIT_COLUMN in header
        else None
    )
    # The word tokenizer's lengths do not depend on its vocabulary (every
    # word is one id, unknown words "<unk>"), so they are checked with the
    # rest; a WordPiece vocabulary from the training split comes after it.
    lengths = None
    if texts is not None and tokenizer != "wordpiece":
        lengths = (
            [len(text_lib.tokenize(t)) for t in texts]
            if tokenizer == "word" else tokenizer.sequence_lengths(texts)
        )
        max_text_length = _check_text_lengths(
            records, texts, lengths, max_text_length, problems
        )
    problems.raise_if_any(path)

    parts = _split_indices(
        assignment, arrays.get("label"), split, seed, len(records)
    )
    if texts is None:
        tokenizer = None
    else:
        if isinstance(tokenizer, str):
            # Words seen only outside the training split stay unknown (or
            # become pieces), as they would for a model deployed after
            # training.
            tokenizer = text_lib.as_tokenizer(
                tokenizer, texts=[texts[i] for i in parts[0]]
            )
        if lengths is None:
            max_text_length = _check_text_lengths(
                records, texts, tokenizer.sequence_lengths(texts),
                max_text_length, problems,
            )  # fmt: skip
            problems.raise_if_any(path)
        arrays["text"] = tokenizer.encode(texts, max_text_length)
        arrays["text_raw"] = np.array(texts, dtype=object)

    result = {
        name: {key: value[idx] for key, value in arrays.items()}
        for name, idx in zip(digits_lib.SPLIT_NAMES, parts)
    }
    result["info"] = {
        "class_names": class_names,
        "num_classes": len(class_names) if class_names is not None else None,
        **text_lib.tokenizer_info(tokenizer),
        "sample_rate": sample_rate,
        "audio_length": audio_length,
        "image_size": list(image_size),
        "color_mode": color_mode,
        "max_text_length": max_text_length,
        "caption_length": (
            max_text_length + 2 if max_text_length is not None else None
        ),
        "split_sizes": {
            n: int(len(i)) for n, i in zip(digits_lib.SPLIT_NAMES, parts)
        },
        "manifest": os.path.abspath(path),
    }
    return result


# ---------------------------------------------------------------------------
# Arguments and manifest structure.


def _check_image_size(image_size):
    if isinstance(image_size, (int, np.integer)) and not isinstance(
        image_size, bool
    ):
        image_size = (image_size, image_size)
    ok = (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool)
            and s >= 1
            for s in image_size
        )
    )
    if not ok:
        raise ValueError(
            "Argument `image_size` must be a positive integer or a pair "
            f"(height, width) of them. Received: image_size={image_size!r}"
        )
    return int(image_size[0]), int(image_size[1])


def _check_labels(labels):
    if isinstance(labels, str) or not hasattr(labels, "__iter__"):
        raise ValueError(
            "Argument `labels` must be a list of class names. "
            f"Received: labels={labels!r}"
        )
    names = [_label_key(label) for label in labels]
    if not names or len(set(names)) != len(names):
        raise ValueError(
            "Argument `labels` must be a non-empty list of distinct class "
            f"names. Received: labels={list(labels)!r}"
        )
    return names


def _label_key(value):
    """Canonical string of a label, so 3, 3.0 and "3" are one class."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _read_manifest(path):
    """Returns the column names and the records of a CSV/JSONL manifest."""
    if not os.path.isfile(path):
        raise ValueError(
            "Argument `path` must name an existing manifest file. "
            f"Received: path={path!r}"
        )
    extension = os.path.splitext(path)[1].lower()
    if extension == ".csv":
        header, records = _read_csv(path)
    elif extension in (".jsonl", ".ndjson"):
        header, records = _read_jsonl(path)
    else:
        raise ValueError(
            "Argument `path` must end in .csv or .jsonl (.ndjson). "
            f"Received: path={path!r}"
        )
    if not records:
        raise ValueError(
            f"Manifest {path} must contain at least one row. "
            f"Received: columns {header} and no rows"
        )
    return header, records


def _read_csv(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise ValueError(
                f"Manifest {path} must start with a header row naming its "
                "columns. Received: an empty file"
            ) from None
        records = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue  # Blank line.
            if len(values) != len(header):
                raise ValueError(
                    f"Manifest {path}, row {len(records) + 1} (line "
                    f"{reader.line_num}): expected {len(header)} fields as "
                    f"in the header {header}. Received: {values!r}"
                )
            records.append(
                _Record(len(records) + 1, reader.line_num,
                        dict(zip(header, values)))
            )  # fmt: skip
    return header, records


def _read_jsonl(path):
    header, records = [], []
    with open(path, encoding="utf-8-sig") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                values = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"Manifest {path}, row {len(records) + 1} (line "
                    f"{line_number}) must be a JSON object ({error}). "
                    f"Received: {line.strip()[:200]!r}"
                ) from None
            if not isinstance(values, dict):
                raise ValueError(
                    f"Manifest {path}, row {len(records) + 1} (line "
                    f"{line_number}) must be a JSON object. "
                    f"Received: {line.strip()[:200]!r}"
                )
            header.extend(k for k in values if k not in header)
            records.append(_Record(len(records) + 1, line_number, values))
    return header, records


def _resolve_columns(header, columns, labels, path):
    """Returns the data columns to load, checking the required ones exist."""
    if columns is None:
        wanted = [c for c in DATA_COLUMNS if c in header]
        required = ["label"] if labels is not None else []
    else:
        if isinstance(columns, str) or any(
            c not in DATA_COLUMNS for c in columns
        ):
            raise ValueError(
                f"Argument `columns` must be a list among {list(DATA_COLUMNS)}"
                f". Received: columns={columns!r}"
            )
        wanted = list(columns)
        if labels is not None and "label" not in wanted:
            wanted.append("label")  # Given class names imply labels.
        required = wanted
    missing = [c for c in dict.fromkeys(required) if c not in header]
    if missing:
        raise ValueError(
            f"Manifest {path} is missing the required column(s) {missing}. "
            f"Received: columns {header}"
        )
    if not any(c in MODALITY_COLUMNS for c in wanted):
        raise ValueError(
            f"Manifest {path} must have at least one of the columns "
            f"{list(MODALITY_COLUMNS)}. Received: columns {header}"
        )
    return wanted


def _cell(record, column):
    """A cell's value, or None when it is absent or blank."""
    value = record.values.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value


def _file_path(record, column, base_dir, problems):
    """Resolves a path cell; records a problem and returns None if bad."""
    value = _cell(record, column)
    if value is None:
        problems.add(
            record, column, "the value is missing",
            record.values.get(column),
        )  # fmt: skip
        return None
    if not isinstance(value, str):
        problems.add(record, column, "expected a file path string", value)
        return None
    full = os.path.join(base_dir, os.path.expanduser(value.strip()))
    if not os.path.isfile(full):
        problems.add(
            record, column, f"file not found (looked for {full})", value
        )
        return None
    return full


# ---------------------------------------------------------------------------
# Column readers: each checks every row and records problems.


def _load_images(records, base_dir, image_size, color_mode, problems):
    channels = 1 if color_mode == "grayscale" else 3
    images = np.zeros((len(records), *image_size, channels), dtype="float32")
    for i, record in enumerate(records):
        full = _file_path(record, "image", base_dir, problems)
        if full is None:
            continue
        try:
            image = keras.utils.load_img(
                full, color_mode=color_mode, target_size=image_size,
                interpolation="bilinear",
            )  # fmt: skip
            pixels = keras.utils.img_to_array(image, dtype="float32")
        except Exception as error:  # PIL raises many types for bad files.
            problems.add(
                record, "image",
                f"cannot read the image ({_describe_image_error(error)})",
                record.values["image"],
            )  # fmt: skip
            continue
        images[i] = pixels / 255.0
    return images


def _describe_image_error(error):
    # PIL names the in-memory buffer Keras opened, not the file: say why.
    if type(error).__name__ == "UnidentifiedImageError":
        return "not an image format PIL can identify"
    return f"{type(error).__name__}: {error}"


def _load_audio(records, base_dir, audio_length, sample_rate, problems):
    clips = np.zeros((len(records), audio_length), dtype="float32")
    for i, record in enumerate(records):
        full = _file_path(record, "audio", base_dir, problems)
        if full is None:
            continue
        try:
            clip = read_wav(full, sample_rate)
        except Exception as error:  # scipy raises several types.
            problems.add(
                record, "audio",
                f"cannot read the WAV file ({type(error).__name__}: {error})",
                record.values["audio"],
            )  # fmt: skip
            continue
        clip = clip[:audio_length]
        clips[i, : len(clip)] = clip
    return clips


def read_wav(path, sample_rate):
    """Reads a WAV file as mono float32 in [-1, 1] at `sample_rate`.

    Args:
        path: path of a PCM (8/16/24/32-bit) or float WAV file.
        sample_rate: target rate in Hz; other rates are resampled with a
            polyphase filter (which also suppresses aliasing).

    Returns:
        A float32 array of samples.

    Raises:
        ValueError: if the file is not a readable, non-empty WAV file.
    """
    from scipy import signal
    from scipy.io import wavfile

    with warnings.catch_warnings():
        # Unknown extra chunks (e.g. LIST metadata) are harmless.
        warnings.simplefilter("ignore", wavfile.WavFileWarning)
        rate, data = wavfile.read(path)
    if data.size == 0:
        raise ValueError("the file holds no samples")
    samples = _to_unit_float(data)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)  # Mix channels down to mono.
    if rate != sample_rate:
        g = math.gcd(int(rate), int(sample_rate))
        samples = signal.resample_poly(samples, sample_rate // g, rate // g)
    return np.clip(samples, -1.0, 1.0).astype("float32")


def _to_unit_float(data):
    if data.dtype == np.uint8:
        return (data.astype("float32") - 128.0) / 128.0
    if np.issubdtype(data.dtype, np.integer):
        # scipy left-aligns 24-bit samples in int32, so full scale is the
        # integer type's range.
        return data.astype("float32") / float(-np.iinfo(data.dtype).min)
    return data.astype("float32")


def _read_texts(records, problems):
    texts = []
    for record in records:
        value = record.values.get("text")
        if value is None:
            value = ""
        if not isinstance(value, str):
            problems.add(record, "text", "expected a string", value)
            value = ""
        texts.append(value.strip())
    return texts


def _check_text_lengths(records, texts, lengths, max_text_length, problems):
    """Returns the text length to use; records texts that do not fit."""
    if max_text_length is None:
        return max(max(lengths), 1)
    for record, length, text in zip(records, lengths, texts):
        if length > max_text_length:
            problems.add(
                record, "text",
                f"{length} tokens exceed max_text_length={max_text_length}",
                text,
            )  # fmt: skip
    return max_text_length


def _read_labels(records, labels, problems):
    """Returns int32 label ids and the class names."""
    keys = []
    for record in records:
        value = _cell(record, "label")
        if value is None or isinstance(value, (dict, list, bool)):
            problems.add(record, "label", "expected a class name", value)
            keys.append(None)
            continue
        keys.append(_label_key(value))
    if labels is None:
        labels = _sorted_labels({k for k in keys if k is not None})
    index = {name: i for i, name in enumerate(labels)}
    ids = np.zeros(len(records), dtype="int32")
    for i, (record, key) in enumerate(zip(records, keys)):
        if key is None:
            continue
        if key not in index:
            problems.add(
                record, "label",
                f"unknown label; expected one of {labels}",
                record.values["label"],
            )  # fmt: skip
            continue
        ids[i] = index[key]
    return ids, list(labels)


def _sorted_labels(names):
    try:
        return sorted(names, key=int)  # "2" before "10".
    except ValueError:
        return sorted(names)


def _read_split_column(records, problems):
    names = []
    for record in records:
        value = _cell(record, SPLIT_COLUMN)
        value = value.strip().lower() if isinstance(value, str) else value
        if value not in digits_lib.SPLIT_NAMES:
            problems.add(
                record, SPLIT_COLUMN,
                f"expected one of {list(digits_lib.SPLIT_NAMES)}",
                record.values.get(SPLIT_COLUMN),
            )  # fmt: skip
        names.append(value)
    return names


def _split_indices(assignment, label_ids, split, seed, count):
    """Indices of the train/validation/test rows."""
    if assignment is not None:
        names = np.array(assignment, dtype=object)
        return [np.flatnonzero(names == n) for n in digits_lib.SPLIT_NAMES]
    strata = label_ids if label_ids is not None else np.zeros(count, "int32")
    rng = np.random.default_rng(seed)
    return digits_lib.stratified_split(strata, split, rng)
