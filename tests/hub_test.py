"""keras-hub backbones and presets as mmkeras encoders, offline.

Tiny random keras-hub models; presets are written to temporary folders.
"""

import functools
import json

import keras
import numpy as np
import pytest
from manifest_helpers import write_manifest

import mmkeras  # noqa: F401  first: imports Triton before keras-hub's TF
from mmkeras import cli
from mmkeras import hub
from mmkeras import layers
from mmkeras import losses
from mmkeras import models
from mmkeras import train as train_lib
from mmkeras.layers.encoders import HubAudioEncoder
from mmkeras.layers.encoders import HubImageEncoder
from mmkeras.layers.encoders import HubTextEncoder

keras_hub = hub.keras_hub()

IMAGE = (16, 16, 3)
LENGTH = 8
VOCAB = 64


def tiny_clip():
    return keras_hub.models.CLIPBackbone(
        keras_hub.models.CLIPVisionEncoder(
            patch_size=8, hidden_dim=32, num_layers=1, num_heads=2,
            intermediate_dim=64, image_shape=IMAGE),
        keras_hub.models.CLIPTextEncoder(
            vocabulary_size=VOCAB, embedding_dim=32, hidden_dim=32,
            num_layers=1, num_heads=2, intermediate_dim=64,
            max_sequence_length=LENGTH),
        projection_dim=16)


def tiny_siglip():
    return keras_hub.models.SigLIPBackbone(
        keras_hub.models.SigLIPVisionEncoder(
            patch_size=8, hidden_dim=32, num_layers=1, num_heads=2,
            intermediate_dim=64, image_shape=IMAGE),
        keras_hub.models.SigLIPTextEncoder(
            vocabulary_size=VOCAB, embedding_dim=32, hidden_dim=32,
            num_layers=1, num_heads=2, intermediate_dim=64,
            max_sequence_length=LENGTH))


def tiny_vit():
    return keras_hub.models.ViTBackbone(
        image_shape=IMAGE, patch_size=8, num_layers=1, num_heads=2,
        hidden_dim=32, mlp_dim=64)


def pairs(n=16, end_token=VOCAB - 1):
    """Random images and token ids; CLIP-style padding with the end token."""
    rng = np.random.default_rng(0)
    images = rng.random((n, *IMAGE)).astype("float32")
    tokens = rng.integers(1, VOCAB - 1, (n, LENGTH)).astype("int32")
    lengths = rng.integers(2, LENGTH, n)
    for row, length in zip(tokens, lengths):
        row[length:] = end_token
    return {"image": images, "text": tokens}


def weights_of(layer):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in layer.weights]


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_dual_encoder_from_hub_matches_keras_hub_fits_and_saves(
        family, tmp_path):
    keras.utils.set_random_seed(0)
    backbone = tiny_clip() if family == "clip" else tiny_siglip()
    # Embeddings compared on 2 examples, the batch the model builds with
    # (on JAX every eager op compiles once per shape).
    data = pairs(8)
    # keras-hub's own embeddings, before anything changes the towers.
    want_image = keras.ops.convert_to_numpy(
        backbone.get_vision_embeddings(data["image"][:2]))
    want_text = keras.ops.convert_to_numpy(
        backbone.get_text_embeddings(data["text"][:2]))

    model = models.DualEncoder.from_hub(backbone)
    assert model.kind == ("softmax" if family == "clip" else "sigmoid")
    fused = [layer for layer in backbone._flatten_layers()
             if hasattr(type(layer), "_mmkeras_original_class")]
    assert fused, "accelerate changed no attention layer of the towers"
    for tower, want in (("image", want_image), ("text", want_text)):
        want = want / np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(
            model.encode(data[tower][:2], tower), want, rtol=1e-4, atol=1e-5)

    before = weights_of(model.encoders["image"])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=losses.ContrastiveLoss(kind=model.kind, learnable=True))
    history = model.fit(data, np.zeros(8), epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    after = weights_of(model.encoders["image"])
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))

    if family == "siglip":
        return  # one .keras round trip (CLIP's) is enough for the suite
    path = tmp_path / "dual.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for tower in ("image", "text"):
        np.testing.assert_allclose(loaded.encode(data[tower][:2], tower),
                                   model.encode(data[tower][:2], tower),
                                   rtol=1e-5, atol=1e-6)


def test_frozen_towers_train_only_the_logit_scale():
    keras.utils.set_random_seed(0)
    model = models.DualEncoder.from_hub(tiny_clip(), trainable=False)
    model.build()
    names = [w.path.split("/", 1)[1] for w in model.trainable_weights]
    assert names == ["logit_scale/log_scale"], names
    # The projections are CLIP's own, inside the (frozen) towers.
    assert len(model.non_trainable_weights) > 10


def test_image_encoder_from_instance_config_and_preset_dir(tmp_path):
    keras.utils.set_random_seed(0)
    vit = tiny_vit()
    images = pairs(4)["image"]
    encoder = HubImageEncoder(vit, fused=False)
    assert encoder.compute_output_shape((4, *IMAGE)) == (4, 32)
    expected = keras.ops.convert_to_numpy(encoder(images))
    # ViT's class token: the first of its (B, 1 + patches, D) outputs.
    np.testing.assert_allclose(
        expected, keras.ops.convert_to_numpy(vit(images))[:, 0], rtol=1e-6)

    vit.save_to_preset(str(tmp_path / "vit"))
    from_dir = HubImageEncoder(str(tmp_path / "vit"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(from_dir(images)),
                               expected, rtol=1e-4, atol=1e-5)
    config = keras.saving.serialize_keras_object(vit)
    from_config = HubImageEncoder(config, projection=8)
    assert tuple(from_config(images).shape) == (4, 8)


def test_text_encoder_masks_padding_of_a_bert_backbone():
    keras.utils.set_random_seed(0)
    bert = tiny_bert()
    encoder = HubTextEncoder(bert, pooling="mean")
    ids = np.array([[5, 6, 7, 0, 0, 0, 0, 0],
                    [5, 6, 7, 9, 9, 9, 9, 9]], "int32")
    pooled = keras.ops.convert_to_numpy(encoder(ids))
    # The mean of BERT's own outputs over the three real tokens (BERT is
    # given the padding mask, so the padding changes none of them).
    sequence = keras.ops.convert_to_numpy(bert({
        "token_ids": ids, "segment_ids": np.zeros_like(ids),
        "padding_mask": ids != 0})["sequence_output"])
    np.testing.assert_allclose(pooled[0], sequence[0, :3].mean(0),
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(pooled[0], pooled[1], atol=1e-3)


def tiny_bert():
    return keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=1, num_heads=2, hidden_dim=32,
        intermediate_dim=64, max_sequence_length=LENGTH)


def tiny_whisper():
    return keras_hub.models.WhisperBackbone(
        vocabulary_size=VOCAB, num_layers=1, num_heads=2, hidden_dim=32,
        intermediate_dim=64, num_mels=16, max_encoder_sequence_length=64,
        max_decoder_sequence_length=LENGTH)


def test_token_sequences_with_masks_reach_fusion_and_encoder_decoder(
        tmp_path):
    """`pooling="sequence"`: BERT's and Whisper's tokens (projected to the
    decoder width), BERT's with a Keras mask, as an EncoderDecoder's memory
    and a FusionClassifier's (masked-mean) input; a pooled encoder is one
    memory token."""
    keras.utils.set_random_seed(0)
    bert, whisper = tiny_bert(), tiny_whisper()
    text = HubTextEncoder(bert, pooling="sequence", projection=16)
    audio = HubAudioEncoder(whisper, sample_rate=4000, pooling="sequence",
                            projection=16)
    # Batches of 2 throughout, the size models build with: on JAX every
    # eager op compiles once per shape.
    ids = np.array([[5, 6, 7, 0, 0, 0, 0, 0]] * 2, "int32")
    waves = np.random.default_rng(0).uniform(-1, 1, (2, 800)).astype(
        "float32")
    # Text: BERT's sequence output, projected; the mask marks real tokens.
    sequence = bert({"token_ids": ids, "segment_ids": np.zeros_like(ids),
                     "padding_mask": ids != 0})["sequence_output"]
    tokens = keras.ops.convert_to_numpy(text(ids))
    np.testing.assert_allclose(
        tokens, keras.ops.convert_to_numpy(text.projection(sequence)),
        rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(text.compute_mask(ids)), ids != 0)
    # Audio: Whisper's encoder half, on features made in the graph (or
    # given as they are), equals the whole backbone's encoder output.
    features = keras.ops.convert_to_numpy(
        audio._backbone_inputs(keras.ops.convert_to_tensor(waves)))
    assert features.shape == (2, 21, 16)  # 10 ms frames, 16 mels
    full = whisper({"encoder_features": features,
                    "decoder_token_ids": ids[:, :2],
                    "decoder_padding_mask": np.ones((2, 2), "int32")})
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(audio(features)),
        keras.ops.convert_to_numpy(audio.projection(
            full["encoder_sequence_output"])), rtol=1e-4, atol=1e-5)
    assert audio.compute_output_shape((2, 800)) == (2, 11, 16)  # stride 2

    # Text tokens and a pooled Whisper vector (one memory token) to an image.
    pooled_audio = HubAudioEncoder(whisper, 4000, projection=16)
    model = models.EncoderDecoder(
        {"text": text, "audio": pooled_audio},
        {"text": (LENGTH,), "audio": (800,)}, target="image",
        target_shape=(8, 8, 1), patch_size=4, hidden_dim=16, num_layers=1,
        num_heads=2)
    # The decoder attends to the real tokens only: padded or not, the same.
    padded = keras.ops.convert_to_numpy(model({"text": ids, "audio": waves}))
    short = keras.ops.convert_to_numpy(model({"text": ids[:, :3],
                                              "audio": waves}))
    np.testing.assert_allclose(padded, short, rtol=1e-4, atol=1e-5)
    model.compile(optimizer="adam", loss="mse")
    history = model.fit({"text": ids, "audio": waves},
                        np.zeros((2, 8, 8, 1), "float32"), epochs=1,
                        batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.encoders["text"].pooling == "sequence"
    assert isinstance(loaded.encoders["audio"], HubAudioEncoder)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded({"text": ids, "audio": waves})),
        keras.ops.convert_to_numpy(model({"text": ids, "audio": waves})),
        rtol=1e-5, atol=1e-6)

    # A FusionClassifier pools the text tokens over the real ones only.
    classifier = models.FusionClassifier(
        {"text": text}, {"text": (LENGTH,)}, layers.ConcatFusion(16),
        num_classes=3)
    tokens = keras.ops.convert_to_numpy(text(ids))  # trained by the fit
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(classifier.encode_vector("text", ids)),
        tokens[:, :3].mean(axis=1), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="WhisperBackbone"):
        HubAudioEncoder(bert, sample_rate=4000)
    with pytest.raises(ValueError, match="Received: pooling='none'"):
        HubAudioEncoder(whisper, sample_rate=4000, pooling="none")


def test_a_hub_name_is_refused_with_how_to_provide_the_files(tmp_path):
    with pytest.raises(ValueError, match="never downloads") as info:
        hub.load_backbone("clip_vit_base_patch16")
    assert "save_to_preset" in str(info.value)
    assert "Received: backbone='clip_vit_base_patch16'" in str(info.value)
    with pytest.raises(ValueError, match="no config.json"):
        hub.load_backbone(str(tmp_path))
    with pytest.raises(TypeError, match="Received: backbone=3"):
        hub.load_backbone(3)
    with pytest.raises(ValueError, match="CLIPBackbone or SigLIPBackbone"):
        models.DualEncoder.from_hub(tiny_vit())
    mismatched = keras_hub.models.SigLIPBackbone(
        tiny_siglip().vision_encoder,
        keras_hub.models.SigLIPTextEncoder(
            vocabulary_size=VOCAB, embedding_dim=32, hidden_dim=32,
            num_layers=1, num_heads=2, intermediate_dim=64,
            max_sequence_length=LENGTH, projection_dim=24))
    with pytest.raises(ValueError, match=r"image 32, text 24"):
        models.DualEncoder.from_hub(mismatched, fused=False)
    with pytest.raises(ValueError, match="Received: pooling='max'"):
        HubImageEncoder(tiny_vit(), pooling="max")


def test_train_retrieve_from_a_local_preset_dir(tmp_path, capsys,
                                               monkeypatch):
    keras.utils.set_random_seed(0)
    tiny_vit().save_to_preset(str(tmp_path / "vit"))
    out = tmp_path / "out"
    # The manifest's clips are 800 samples: load them at that length, not
    # zero-padded to the loader's default 8000, which would make compiling
    # the task's own audio tower the most of this test's time.
    monkeypatch.setattr(train_lib, "load_manifest", functools.partial(
        train_lib.load_manifest, audio_length=800))
    # The manifest's 16x16 grey images are resized to 32x32 by the loader,
    # then to the ViT's 16x16 and channel-repeated to its 3 channels. 14
    # rows split 10/2/2: every eager evaluation runs batches of 2, the size
    # the model builds with (on JAX each eager op compiles once per shape).
    code = cli.main(["train", "--task", "retrieve", "--epochs", "1",
                     "--data",
                     str(write_manifest(tmp_path, rows=14, text=False)),
                     "--out", str(out),
                     "--image-backbone", str(tmp_path / "vit")])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["recall_at_1"] <= 1.0
    assert metrics["image_backbone"] == str(tmp_path / "vit")
    assert "fused_attention" in metrics["kernels"]
    loaded = keras.saving.load_model(out / "model.keras")
    assert isinstance(loaded.encoders["image"], HubImageEncoder)

    code = cli.main(["train", "--task", "retrieve", "--epochs", "1",
                     "--out", str(tmp_path / "no"),
                     "--image-backbone", "vit_base_patch16_224_imagenet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "never downloads" in err and "save_to_preset" in err
    assert not (tmp_path / "no").exists()
