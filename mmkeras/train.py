"""The main job behind `mmkeras train`: train, evaluate and explain a model.

Tasks (each a model of `mmkeras.models`, trained with `model.fit`):

- classify: `FusionClassifier` over image + text + audio; reports test
  accuracy with all modalities and with each one alone (`accuracy`).
- caption: `EncoderDecoder` image -> text; the share of test images whose
  generated description names the right digit (`caption_digit_accuracy`).
- retrieve: `DualEncoder` audio <-> image; recall@1 of the same digit for
  audio queries among the test images (`recall_at_1`). `image_backbone`
  puts a keras-hub backbone from a local preset directory in the image
  tower (the images are resized to its input size).
- text2image: `EncoderDecoder` text -> image; a digit classifier trained on
  the real images reads the intended digit in the generated ones
  (`generated_digit_accuracy`).

Text is tokenized by `tokenizer`: "word" (mmkeras' word tokenizer, the
default and fastest) or "wordpiece" (a keras-hub `WordPieceTokenizer` over a
vocabulary built offline from the training texts).
"""

import json
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

import mmkeras
from mmkeras import distribution
from mmkeras import hub
from mmkeras import layers
from mmkeras import losses
from mmkeras import models
from mmkeras import plots
from mmkeras.data import CLASS_NAMES
from mmkeras.data import TOKENIZERS
from mmkeras.data import load_digits_multimodal
from mmkeras.data import load_manifest
from mmkeras.data import tokenizer_from_config

TASKS = ("classify", "caption", "retrieve", "text2image")
FUSIONS = {
    "concat": lambda d: layers.ConcatFusion(d, activation="gelu"),
    "gated": lambda d: layers.GatedFusion(d),
    "film": lambda d: layers.FiLM(),
    "tensor": lambda d: layers.TensorFusion(d),
    "lowrank": lambda d: layers.LowRankFusion(d, rank=4),
    "bilinear": lambda d: layers.BilinearFusion(d),
    "attention": lambda d: layers.AttentionFusion(d),
}
DEFAULT_EPOCHS = {"classify": 12, "caption": 30, "retrieve": 25,
                  "text2image": 20}
# What each task needs from the data.
NEEDS = {"classify": None, "caption": ("image", "text"),
         "retrieve": ("audio", "image"), "text2image": ("text", "image")}
HIDDEN = 64


def _encoder(name, info):
    if name == "image":
        # A small convolutional stem: on 8x8 digits it learns far faster than
        # raw patches; its pooled feature map gives the tokens.
        backbone = keras.Sequential([
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(HIDDEN, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
        ], name="conv_stem")
        return layers.ImageEncoder(HIDDEN, backbone=backbone, num_layers=2)
    if name == "text":
        return layers.TextEncoder(info["vocabulary_size"],
                                  info["max_text_length"], HIDDEN,
                                  pad_id=info["pad_id"], num_layers=2)
    return layers.AudioEncoder(info["sample_rate"], HIDDEN, num_layers=2)


def load_data(task, manifest=None, seed=0, tokenizer="word"):
    """The built-in digits (or a manifest) with the modalities of `task`,
    text tokenized by `tokenizer` (one of TOKENIZERS)."""
    if manifest is None:
        # Clean descriptions make well-formed caption targets.
        noise = 0.0 if task == "caption" else 0.1
        data = load_digits_multimodal(seed=seed, text_noise=noise,
                                      tokenizer=tokenizer)
    else:
        data = load_manifest(manifest, seed=seed, tokenizer=tokenizer)
    info = data["info"]
    info.setdefault("image_size", (8, 8))
    if isinstance(info["image_size"], int):
        info["image_size"] = (info["image_size"],) * 2
    present = [m for m in ("image", "text", "audio") if m in data["train"]]
    needs = NEEDS[task]
    if needs is not None:
        missing = [m for m in needs if m not in present]
        if missing:
            raise ValueError(
                f"Task {task!r} needs the modalities {list(needs)}; the data "
                f"has no {missing[0]!r} column. Received: columns {present}"
            )
    return data, present


def _compile_args():
    return dict(optimizer=keras.optimizers.Adam(2e-3))


def _fit(plan, build, x, y, val, epochs, batch_size=64):
    """Builds the compiled model (`build()`) in the plan's scope and trains
    it on global batches of `batch_size`; returns (model, history, seconds
    per epoch). Evaluation happens after, outside the scope."""
    with plan.scope():
        model = build()
        model.build()  # DDP (torch) needs the weights to exist
        model = plan.prepare(model)
        (x, y), local_batch_size = plan.shard((x, y), batch_size)
        val = plan.even_batches(val, batch_size)
        start = time.perf_counter()
        history = model.fit(x, y, validation_data=val, epochs=epochs,
                            batch_size=local_batch_size,
                            verbose=2 if plan.is_chief else 0)
    seconds = (time.perf_counter() - start) / max(epochs, 1)
    return model, history.history, seconds


def _pick(split, names):
    return {n: split[n] for n in names}


def run_classify(data, epochs, out, plan, modalities, fusion, seed):
    train, val, test, info = (data["train"], data["validation"], data["test"],
                              data["info"])

    def build():
        model = models.FusionClassifier(
            {m: _encoder(m, info) for m in modalities},
            {m: train[m].shape[1:] for m in modalities},
            FUSIONS[fusion](HIDDEN), num_classes=len(info["class_names"]),
            dropout=0.1)
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), metrics=["accuracy"], **_compile_args())
        return model
    # ModDrop on the data: every modality is dropped with probability 0.3
    # (at least one stays), so the model also works with modalities missing.
    rng = np.random.default_rng(seed)
    x = _pick(train, modalities)
    x["modality_mask"] = _random_presence(rng, len(train["label"]),
                                          len(modalities))
    val_x = {**_pick(val, modalities),
             "modality_mask": np.ones((len(val["label"]), len(modalities)),
                                      bool)}
    model, history, per_epoch = _fit(plan, build, x, train["label"],
                                     (val_x, val["label"]), epochs)
    test_x = _pick(test, modalities)
    n = len(test["label"])

    def accuracy(mask):
        logits = model.predict({**test_x, "modality_mask": mask}, verbose=0)
        return float((logits.argmax(-1) == test["label"]).mean()), logits

    acc, logits = accuracy(np.ones((n, len(modalities)), bool))
    per_modality = {}
    for i, m in enumerate(modalities):
        only = np.zeros((n, len(modalities)), bool)
        only[:, i] = True
        missing = ~only if len(modalities) > 1 else only
        per_modality[f"only_{m}"] = accuracy(only)[0]
        if len(modalities) > 1:
            per_modality[f"without_{m}"] = accuracy(missing)[0]
    metrics = {"accuracy": acc, **{f"accuracy_{k}": v
                                   for k, v in per_modality.items()}}
    plots.confusion_matrix(out / "confusion_matrix.png", test["label"],
                           logits.argmax(-1), info["class_names"])
    plots.modality_accuracy(out / "modality_accuracy.png", acc, per_modality)
    return model, history, per_epoch, metrics


def _random_presence(rng, n, m, rate=0.3):
    mask = rng.random((n, m)) >= rate
    empty = ~mask.any(axis=1)
    mask[empty, rng.integers(0, m, empty.sum())] = True
    return mask


def _digit_of(words):
    """The one digit a description names ("seven" or "7"), else None."""
    found = [CLASS_NAMES.index(w) if w in CLASS_NAMES else int(w)
             for w in words if w in CLASS_NAMES or (len(w) == 1 and w.isdigit())]
    return found[0] if len(set(found)) == 1 else None


def run_caption(data, epochs, out, plan):
    train, val, test, info = (data["train"], data["validation"], data["test"],
                              data["info"])
    tokenizer = tokenizer_from_config(info["tokenizer"])
    length = info["caption_length"]

    def build():
        model = models.EncoderDecoder(
            {"image": _encoder("image", info)},
            {"image": train["image"].shape[1:]},
            target="text", hidden_dim=HIDDEN, num_layers=2,
            vocabulary_size=info["vocabulary_size"], max_target_length=length,
            start_token_id=info["start_id"], end_token_id=info["end_id"])
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=info["pad_id"]), **_compile_args())
        return model

    def teacher_forced(split):
        ids = tokenizer.encode(list(split["text_raw"]), length,
                               add_start_end=True)
        return {"image": split["image"], "decoder_tokens": ids[:, :-1]}, ids[:, 1:]

    model, history, per_epoch = _fit(plan, build, *teacher_forced(train),
                                     teacher_forced(val), epochs)
    generated = model.generate({"image": test["image"]})
    texts = tokenizer.decode(generated)
    end = info["end_id"]
    right, well_formed = [], []
    for row, text, label in zip(generated, texts, test["label"]):
        words = text.split()
        right.append(_digit_of(words) == label)
        stops = np.flatnonzero(row == end)
        well_formed.append(len(words) > 0 and len(stops) > 0
                           and np.all(row[stops[0] + 1:] == 0))
    metrics = {"caption_digit_accuracy": float(np.mean(right)),
               "caption_well_formed": float(np.mean(well_formed))}
    plots.captions(out / "captions.png", test["image"][:12], texts[:12],
                   [info["class_names"][i] for i in test["label"][:12]])
    return model, history, per_epoch, metrics


def _hub_image_encoder(spec, freeze):
    """The image tower from a keras-hub backbone (or CLIP/SigLIP model)."""
    backbone = hub.load_backbone(spec, argument="image_backbone")
    if hub.family(backbone) is not None:
        return hub.dual_towers(backbone, trainable=not freeze)[
            "encoders"]["image"]
    return layers.encoders.HubImageEncoder(backbone, trainable=not freeze)


def fit_images(images, shape):
    """Digits (N, h, w, c) resized (bilinear) and channel-repeated to a
    backbone's input `shape` (H, W, C); None dims keep the data's size."""
    height, width, channels = shape
    if channels is not None and images.shape[-1] != channels:
        if images.shape[-1] != 1:
            raise ValueError(
                f"The image backbone takes {channels} channels and the images "
                f"have {images.shape[-1]}; only 1 channel can be repeated. "
                f"Received: images.shape={images.shape}"
            )
        images = np.repeat(images, channels, axis=-1)
    size = (height or images.shape[1], width or images.shape[2])
    if tuple(images.shape[1:3]) != size:
        images = keras.ops.convert_to_numpy(
            keras.ops.image.resize(images, size))
    return images.astype("float32")


def run_retrieve(data, epochs, out, plan, image_backbone=None,
                 freeze_backbone=False):
    train, val, test, info = (data["train"], data["validation"], data["test"],
                              data["info"])
    towers = ["audio", "image"]
    if image_backbone is not None:
        # Only the architecture, to size the images; the tower itself is
        # built in `build`, inside the plan's scope, like every weight.
        shape = hub.image_input_shape(hub.load_backbone(
            image_backbone, argument="image_backbone", load_weights=False))
        train, val, test = (
            {**split, "image": fit_images(split["image"], shape)}
            for split in (train, val, test))

    def image_encoder():
        if image_backbone is None:
            return _encoder("image", info)
        return _hub_image_encoder(image_backbone, freeze_backbone)

    def build():
        encoders = {"audio": _encoder("audio", info), "image": image_encoder()}
        model = models.DualEncoder(encoders,
                                   {t: train[t].shape[1:] for t in towers},
                                   embedding_dim=64, kind="softmax")
        model.compile(
            loss=losses.ContrastiveLoss(kind="softmax", learnable=True),
            metrics=[models.RecallAtK(1)], **_compile_args())
        return model

    model, history, per_epoch = _fit(
        plan, build, _pick(train, towers), np.zeros(len(train["label"])),
        (_pick(val, towers), np.zeros(len(val["label"]))), epochs)
    audio = model.encode(test["audio"], "audio")
    images = model.encode(test["image"], "image")
    metrics = {
        "recall_at_1": models.recall_at_k(audio, images, 1, test["label"],
                                          test["label"]),
        "recall_at_5": models.recall_at_k(audio, images, 5, test["label"],
                                          test["label"]),
        "paired_recall_at_1": models.recall_at_k(audio, images, 1),
    }
    # A small --data manifest can leave fewer than 5 test images.
    top, _ = model.retrieve(test["audio"][:4], test["image"],
                            k=min(5, len(test["image"])))
    plots.retrieval(out / "retrieval.png", test["audio"][:4],
                    data["test"]["image"], top, test["label"],
                    info["class_names"])
    return model, history, per_epoch, metrics


def digit_reader(train, epochs=40):
    """A small classifier trained on the real images: the judge of
    text2image (an MLP reads 8x8 digits at ~97%)."""
    keras.utils.set_random_seed(1)
    reader = keras.Sequential([
        keras.Input(train["image"].shape[1:]),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])
    reader.compile(keras.optimizers.Adam(3e-3),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    reader.fit(train["image"], train["label"], epochs=epochs, batch_size=64,
               verbose=0)
    return reader


def run_text2image(data, epochs, out, plan):
    train, val, test, info = (data["train"], data["validation"], data["test"],
                              data["info"])

    def build():
        model = models.EncoderDecoder(
            {"text": _encoder("text", info)}, {"text": train["text"].shape[1:]},
            target="image", target_shape=train["image"].shape[1:],
            patch_size=4, hidden_dim=HIDDEN, num_layers=2)
        model.compile(loss="mse", **_compile_args())
        return model

    model, history, per_epoch = _fit(
        plan, build, {"text": train["text"]}, train["image"],
        ({"text": val["text"]}, val["image"]), epochs)
    generated = model.generate({"text": test["text"]})
    reader = digit_reader(train)
    read = reader.predict(generated, verbose=0).argmax(-1)
    real = reader.predict(test["image"], verbose=0).argmax(-1)
    metrics = {
        "generated_digit_accuracy": float((read == test["label"]).mean()),
        "reader_accuracy_on_real_images": float((real == test["label"]).mean()),
    }
    plots.text_to_image(out / "text2image.png", test["text_raw"][:8],
                        generated[:8], test["image"][:8])
    return model, history, per_epoch, metrics


def train(task="classify", fusion="gated", epochs=None, data=None, out=None,
          seed=0, max_train_samples=None, distribute=None,
          image_backbone=None, freeze_backbone=False, tokenizer="word"):
    """Runs one task end to end; returns the metrics dict (None in the
    other processes of a multi-process run).

    Writes to `out` only after training and evaluation succeeded: the
    `.keras` model, `metrics.json` and the PNG plots.

    Args:
        task: one of TASKS.
        fusion: fusion layer of the classify task, one of FUSIONS.
        epochs: training epochs (default: per task).
        data: path of a CSV/JSONL manifest, or None for the built-in digits.
        out: output folder (default: mmkeras_out/TASK).
        seed: seed of the data split, the weights and the sampling.
        max_train_samples: train on at most this many samples (quick runs).
        distribute: None (one device), "data" or "model": the scale-out
            plan of `mmkeras.distribution` for the current backend. Under
            torchrun only the chief process (rank 0) writes `out`.
        image_backbone: retrieve only: a local keras-hub preset directory
            (or a Keras model / serialized config) for the image tower; a
            CLIP or SigLIP preset gives its vision tower. Never downloads.
        freeze_backbone: keep the `image_backbone` weights fixed.
        tokenizer: "word" (mmkeras' word tokenizer; fastest) or
            "wordpiece" (keras-hub's `WordPieceTokenizer` over a vocabulary
            built offline from the training texts).
    """
    if task not in TASKS:
        raise ValueError(f"Argument `task` must be one of {TASKS}. "
                         f"Received: task={task!r}")
    if fusion not in FUSIONS:
        raise ValueError(f"Argument `fusion` must be one of {sorted(FUSIONS)}. "
                         f"Received: fusion={fusion!r}")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"Argument `tokenizer` must be one of {TOKENIZERS}. "
                         f"Received: tokenizer={tokenizer!r}")
    if image_backbone is not None and task != "retrieve":
        raise ValueError(
            "Argument `image_backbone` applies to the retrieve task only "
            "(the other tasks train mmkeras' own image encoder). "
            "Received: task="
            f"{task!r}, image_backbone={str(image_backbone)!r}"
        )
    if isinstance(image_backbone, str) and not Path(image_backbone).is_dir():
        # Fails now, with how to provide the files, before any data loads.
        hub.load_backbone(image_backbone, argument="image_backbone")
    epochs = DEFAULT_EPOCHS[task] if epochs is None else epochs
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError("Argument `epochs` must be a positive integer. "
                         f"Received: epochs={epochs!r}")
    out = Path(out or Path("mmkeras_out") / task)
    plan = (distribution.plan(distribute) if distribute is not None
            else distribution.Plan())
    try:
        return _train(plan, task, fusion, epochs, data, out, seed,
                      max_train_samples, image_backbone, freeze_backbone,
                      tokenizer)
    finally:
        plan.close()


def _train(plan, task, fusion, epochs, data, out, seed, max_train_samples,
           image_backbone, freeze_backbone, tokenizer):
    if plan.is_chief:
        print(f"mmkeras train: {task} on {plan.describe()}", flush=True)
    keras.utils.set_random_seed(seed)
    dataset, modalities = load_data(task, data, seed, tokenizer)  # validates
    if max_train_samples is not None:
        if not isinstance(max_train_samples, int) or max_train_samples < 2:
            raise ValueError(
                "Argument `max_train_samples` must be an integer >= 2. "
                f"Received: max_train_samples={max_train_samples!r}")
        dataset["train"] = {k: v[:max_train_samples]
                            for k, v in dataset["train"].items()}
    mmkeras.kernels.reset_usage()
    # Only the chief writes results; other processes draw into a scratch
    # folder that is thrown away.
    staging = (out.with_name(out.name + ".partial") if plan.is_chief
               else Path(tempfile.mkdtemp(prefix="mmkeras_rank")))
    staging.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    common = (dataset, epochs, staging, plan)
    runs = {
        "classify": lambda: run_classify(*common, modalities, fusion, seed),
        "caption": lambda: run_caption(*common),
        "retrieve": lambda: run_retrieve(*common, image_backbone,
                                         freeze_backbone),
        "text2image": lambda: run_text2image(*common),
    }
    try:
        model, history, per_epoch, metrics = runs[task]()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not plan.is_chief:
        shutil.rmtree(staging, ignore_errors=True)
        return None
    metrics.update(
        task=task, backend=keras.backend.backend(), epochs=epochs,
        seconds_per_epoch=per_epoch,
        total_seconds=time.perf_counter() - start,
        kernels={op: sorted(impls)
                 for op, impls in mmkeras.kernels.usage().items()},
        data=str(data) if data else "built-in digits (scikit-learn)",
        modalities=modalities,
        distribution=plan.describe(),
    )
    if task == "classify":
        metrics["fusion"] = fusion
    if "text" in modalities:
        metrics["tokenizer"] = tokenizer
    if image_backbone is not None:
        metrics["image_backbone"] = str(image_backbone)
        metrics["backbone_frozen"] = bool(freeze_backbone)
    plots.training_curves(staging / "training_curves.png", history, task)
    model.save(staging / "model.keras")
    with open(staging / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=2)
    _replace_dir(staging, out)
    return metrics


def _replace_dir(staging, out):
    """Moves the finished results into place (nothing half-written)."""
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)


def results_table(metrics):
    """A short text table of the headline figures."""
    skip = {"kernels", "modalities"}
    lines = [f"{'metric':<34}value", f"{'-' * 34}{'-' * 20}"]
    for key, value in metrics.items():
        if key in skip:
            continue
        if isinstance(value, float):
            value = f"{value:.4f}" if value < 100 else f"{value:.1f}"
        lines.append(f"{key:<34}{value}")
    kernels = ", ".join(f"{op}: {'/'.join(v)}"
                        for op, v in metrics["kernels"].items()) or "none"
    lines.append(f"{'kernels that ran':<34}{kernels}")
    return "\n".join(lines)
