"""Tests for loading users' own data from CSV and JSONL manifests."""

import csv
import json
import wave

import numpy as np
import pytest
from PIL import Image

from mmkeras import data as mm_data

SPLITS = ("train", "validation", "test")
CLASSES = ("cat", "dog", "owl")
PER_CLASS = 4


def _write_png(path, pixels):
    Image.fromarray(pixels).save(path)


def _write_wav(path, samples, rate, channels=1):
    """Writes int16 PCM; `samples` is float in [-1, 1], (n,) or (n, ch)."""
    pcm = np.round(np.asarray(samples) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def _tone(hz, seconds, rate):
    t = np.arange(int(seconds * rate)) / rate
    return 0.5 * np.sin(2 * np.pi * hz * t)


@pytest.fixture
def samples(tmp_path):
    """Writes images and WAVs; returns their manifest rows and pixels."""
    (tmp_path / "media").mkdir()
    rng = np.random.default_rng(0)
    rows, pixels = [], []
    for c, name in enumerate(CLASSES):
        for k in range(PER_CLASS):
            i = c * PER_CLASS + k
            gray = rng.integers(0, 256, (8, 8), dtype="uint8")
            _write_png(tmp_path / "media" / f"{i}.png", gray)
            # Mixed rates and channel counts, all resampled to 8 kHz.
            if i % 2:
                _write_wav(tmp_path / "media" / f"{i}.wav",
                           _tone(400 + 200 * c, 0.5, 16000), 16000)
            else:
                stereo = np.stack([_tone(400 + 200 * c, 2.0, 8000)] * 2, 1)
                _write_wav(tmp_path / "media" / f"{i}.wav", stereo, 8000,
                           channels=2)  # fmt: skip
            rows.append({
                "image": f"media/{i}.png",
                "audio": f"media/{i}.wav",
                "text": f"A photo of a {name}, number {k}",
                "label": name,
            })  # fmt: skip
            pixels.append(gray)
    return rows, np.stack(pixels)


def _write_csv(path, rows, fieldnames=None):
    fieldnames = fieldnames or list(rows[0])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def _concat(dataset, key):
    return np.concatenate([dataset[s][key] for s in SPLITS])


def _check_loaded(dataset, rows, pixels):
    n = len(rows)
    assert sum(len(dataset[s]["label"]) for s in SPLITS) == n
    images = _concat(dataset, "image")
    assert images.shape == (n, 8, 8, 1) and images.dtype == np.float32
    audio = _concat(dataset, "audio")
    assert audio.shape == (n, 4000) and audio.dtype == np.float32
    labels = _concat(dataset, "label")
    assert labels.dtype == np.int32
    assert _concat(dataset, "text").shape == (n, 7)
    assert dataset["info"]["class_names"] == list(CLASSES)
    # Rows keep their own image, audio, text and label together.
    raw = _concat(dataset, "text_raw")
    for image, clip, text, label in zip(images, audio, raw, labels):
        i = next(j for j, r in enumerate(rows) if r["text"] == text)
        np.testing.assert_allclose(image[..., 0], pixels[i] / 255, atol=1e-6)
        assert CLASSES[label] == rows[i]["label"]
        spectrum = np.abs(np.fft.rfft(clip))
        peak_hz = spectrum.argmax() * 8000 / len(clip)
        assert abs(peak_hz - (400 + 200 * label)) < 10


def test_csv_manifest_loads(tmp_path, samples):
    rows, pixels = samples
    path = _write_csv(tmp_path / "manifest.csv", rows)
    dataset = mm_data.load_manifest(
        path, image_size=8, audio_length=4000, sample_rate=8000
    )
    _check_loaded(dataset, rows, pixels)
    info = dataset["info"]
    assert info["max_text_length"] == 7
    assert info["image_size"] == [8, 8]
    assert info["split_sizes"] == {"train": 9, "validation": 0, "test": 3}
    # Stratified: one test sample of each class.
    assert sorted(dataset["test"]["label"]) == [0, 1, 2]
    tokenizer = mm_data.WordTokenizer(info["vocabulary"])
    assert tokenizer.decode(dataset["train"]["text"][0]).startswith(
        "a photo of a"
    )


def test_jsonl_manifest_with_split_column_and_options(tmp_path, samples):
    rows, _ = samples
    rows = [
        dict(r, label=CLASSES.index(r["label"]),
             split=SPLITS[i % 3])
        for i, r in enumerate(rows)
    ]  # fmt: skip
    path = _write_jsonl(tmp_path / "manifest.jsonl", rows)
    dataset = mm_data.load_manifest(
        path, image_size=(4, 6), color_mode="rgb", audio_length=100,
        labels=[0, 1, 2], max_text_length=10, columns=["image", "label"],
    )  # fmt: skip
    assert set(dataset["train"]) == {"image", "label"}
    assert dataset["train"]["image"].shape == (4, 4, 6, 3)
    assert dataset["info"]["class_names"] == ["0", "1", "2"]
    for k, split in enumerate(SPLITS):
        expected = [r["label"] for r in rows[k::3]]
        np.testing.assert_array_equal(dataset[split]["label"], expected)


def test_given_vocabulary_and_long_text(tmp_path, samples):
    rows, _ = samples
    path = _write_csv(tmp_path / "m.csv", rows)
    vocabulary = ["<pad>", "<unk>", "<start>", "<end>", "photo"]
    dataset = mm_data.load_manifest(
        path, vocabulary=vocabulary, columns=["text"], max_text_length=9
    )
    np.testing.assert_array_equal(
        dataset["train"]["text"][0], [1, 4, 1, 1, 1, 1, 1, 0, 0]
    )
    with pytest.raises(ValueError, match=r"row 1 \(line 2\), column 'text'"):
        mm_data.load_manifest(path, columns=["text"], max_text_length=3)


def _assert_row_error(path, row, column, **kwargs):
    with pytest.raises(ValueError) as info:
        mm_data.load_manifest(path, **kwargs)
    message = str(info.value)
    assert f"row {row} " in message and f"column '{column}'" in message
    assert "Received: " in message.splitlines()[-1]
    assert "nothing was loaded" in message
    return message


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_missing_file_names_row_and_column(tmp_path, samples, fmt):
    rows, _ = samples
    rows[2]["image"] = "media/missing.png"
    writer = _write_csv if fmt == "csv" else _write_jsonl
    path = writer(tmp_path / f"m.{fmt}", rows)
    message = _assert_row_error(path, 3, "image")
    assert "missing.png" in message


def test_unreadable_image(tmp_path, samples):
    rows, _ = samples
    (tmp_path / "media" / "bad.png").write_text("not an image")
    rows[4]["image"] = "media/bad.png"
    path = _write_csv(tmp_path / "m.csv", rows)
    message = _assert_row_error(path, 5, "image")
    assert "cannot read the image" in message


def test_bad_wav(tmp_path, samples):
    rows, _ = samples
    (tmp_path / "media" / "bad.wav").write_bytes(b"RIFF\x00\x00garbage")
    rows[1]["audio"] = "media/bad.wav"
    path = _write_csv(tmp_path / "m.csv", rows)
    message = _assert_row_error(path, 2, "audio")
    assert "cannot read the WAV file" in message


def test_unknown_label(tmp_path, samples):
    rows, _ = samples
    rows[6]["label"] = "emu"
    path = _write_csv(tmp_path / "m.csv", rows)
    message = _assert_row_error(path, 7, "label", labels=list(CLASSES))
    assert "'emu'" in message


def test_all_problems_reported_together(tmp_path, samples):
    rows, _ = samples
    rows[0]["image"] = "nope.png"
    rows[5]["audio"] = ""
    rows[9]["label"] = "emu"
    path = _write_csv(tmp_path / "m.csv", rows)
    message = _assert_row_error(path, 1, "image", labels=list(CLASSES))
    assert "3 invalid entries" in message
    assert "row 6 (line 7), column 'audio'" in message
    assert "row 10 (line 11), column 'label'" in message


def test_missing_column_and_bad_arguments(tmp_path, samples):
    rows, _ = samples
    path = _write_csv(tmp_path / "m.csv", [
        {"image": r["image"], "text": r["text"]} for r in rows
    ])  # fmt: skip
    with pytest.raises(ValueError, match=r"\['label'\].*Received: columns"):
        mm_data.load_manifest(path, labels=list(CLASSES))
    with pytest.raises(ValueError, match=r"\['audio'\].*Received: columns"):
        mm_data.load_manifest(path, columns=["image", "audio"])
    with pytest.raises(ValueError, match="`path`.*Received: path="):
        mm_data.load_manifest(tmp_path / "m.txt")
    with pytest.raises(ValueError, match="`image_size`.*Received: "):
        mm_data.load_manifest(path, image_size=(8, 0))
    with pytest.raises(ValueError, match="`color_mode`.*Received: "):
        mm_data.load_manifest(path, color_mode="cmyk")
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"image": "a.png"}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"row 2 \(line 2\).*Received: "):
        mm_data.load_manifest(bad_json)


def test_manifest_feeds_the_batcher(tmp_path, samples):
    rows, _ = samples
    path = _write_csv(tmp_path / "m.csv", rows)
    dataset = mm_data.load_manifest(
        path, image_size=8, audio_length=500, split=(1.0, 0.0, 0.0)
    )
    batches = mm_data.MultimodalDataset(dataset["train"], batch_size=5)
    features, labels = batches[2]
    assert set(features) == {"image", "text", "audio"}
    assert features["audio"].shape == (2, 500) and labels.shape == (2,)
