"""A small `--data` manifest for tests: PNG images, WAV tones and labels."""

import wave

import numpy as np


def write_manifest(folder, rows=24, text=True, missing=False):
    """Writes `rows` examples of two classes (cat, dog) into `folder` and
    their manifest; `text=False` leaves out the text column, `missing=True`
    adds a row whose image does not exist. Returns the manifest's path."""
    from PIL import Image

    header = ["image", "audio", *(["text"] if text else []), "label"]
    lines = [",".join(header)]
    rng = np.random.default_rng(0)
    for i in range(rows):
        label = "cat" if i % 2 else "dog"
        Image.fromarray((rng.random((16, 16)) * 255).astype("uint8")).save(
            folder / f"img{i}.png")
        with wave.open(str(folder / f"a{i}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            tone = np.sin(np.arange(800) * (0.1 + 0.2 * (i % 2))) * 2000
            w.writeframes(tone.astype("<i2").tobytes())
        lines.append(",".join([f"img{i}.png", f"a{i}.wav",
                               *([f"{label} photo"] if text else []), label]))
    if missing:
        lines.append(",".join(["nowhere.png", "a0.wav",
                               *(["dog photo"] if text else []), "dog"]))
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path
