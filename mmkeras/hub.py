"""keras-hub building blocks in mmkeras: backbones and presets, offline.

mmkeras never downloads anything. A keras-hub backbone reaches mmkeras as
one of:

- a built instance (`keras_hub.models.CLIPBackbone(...)`, a `ViTBackbone`,
  a `BertBackbone`, ...), random or with weights you loaded yourself;
- a serialized config (`keras.saving.serialize_keras_object(backbone)`),
  which builds the same architecture with random weights;
- the path of a local preset directory (written by
  `backbone.save_to_preset(dir)`, or the files of a Kaggle / Hugging Face
  preset copied there), loaded with `keras_hub.models.Backbone.from_preset`.

A preset *name* ("clip_vit_base_patch16") is refused with a message saying
how to get its files, because keras-hub would fetch it from the network.

keras-hub is imported only by the functions that need it. `import
keras_hub` imports TensorFlow, and TensorFlow before Triton aborts the
process (see `mmkeras/_import_guard.py`): importing mmkeras first, as every
path through this module does, keeps the safe order.
"""

import os
from pathlib import Path

import keras


def keras_hub():
    """Imports and returns `keras_hub`, with a clear error if it is missing."""
    try:
        import keras_hub as module
    except ImportError as e:
        raise ImportError(
            "keras-hub is not installed; mmkeras' keras-hub encoders need it. "
            "Install it with scripts/setup.sh (which skips tensorflow-text), "
            "or `pip install --no-deps keras-hub` plus its light "
            f"dependencies. Received: {e}"
        ) from e
    return module


def load_backbone(backbone, argument="backbone", load_weights=True):
    """A keras-hub (or any Keras) model from an instance, config or preset dir.

    Args:
        backbone: a `keras.Model` (returned as is), a serialized config (a
            dict with "class_name" and "config", as written by
            `keras.saving.serialize_keras_object`), or the path of a local
            keras-hub preset directory.
        argument: the argument name used in error messages.
        load_weights: False reads only a preset's architecture (random
            weights).

    Returns:
        The model.

    Raises:
        ValueError: a string that is not a local preset directory (a hub
            name, a typo), or a dict that is not a serialized config.
        TypeError: anything else.
    """
    if isinstance(backbone, keras.layers.Layer):
        return backbone
    if isinstance(backbone, dict):
        if "class_name" not in backbone or "config" not in backbone:
            raise ValueError(
                f"Argument `{argument}` given as a dict must be a serialized "
                "Keras object (keys 'class_name' and 'config', from "
                "`keras.saving.serialize_keras_object(backbone)`). "
                f"Received: {argument} with keys {sorted(backbone)}"
            )
        keras_hub()  # registers the keras-hub classes the config names
        return keras.saving.deserialize_keras_object(backbone)
    if isinstance(backbone, (str, os.PathLike)):
        path = Path(backbone).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ValueError(
                    f"Argument `{argument}`: the directory {str(path)!r} is "
                    "not a keras-hub preset (it has no config.json; write one "
                    "with `backbone.save_to_preset(dir)`). "
                    f"Received: {argument}={str(backbone)!r}"
                )
            return keras_hub().models.Backbone.from_preset(
                str(path), load_weights=load_weights)
        raise ValueError(
            f"Argument `{argument}` must be a local keras-hub preset "
            "directory; mmkeras never downloads presets. On a machine with "
            "network, run "
            f"`keras_hub.models.Backbone.from_preset({str(backbone)!r})"
            ".save_to_preset('DIR')` (or copy the preset's files from Kaggle "
            "or Hugging Face into DIR), then pass DIR. "
            f"Received: {argument}={str(backbone)!r} (no such directory)"
        )
    raise TypeError(
        f"Argument `{argument}` must be a Keras model, a serialized config "
        "dict or the path of a local keras-hub preset directory. "
        f"Received: {argument}={backbone!r} of type {type(backbone).__name__}"
    )


def family(backbone):
    """"clip", "siglip" or None: which dual-encoder backbone this is."""
    names = {cls.__name__ for cls in type(backbone).__mro__}
    if "CLIPBackbone" in names:
        return "clip"
    if "SigLIPBackbone" in names:
        return "siglip"
    return None


def image_input_shape(backbone):
    """(H, W, C) of a backbone's image input (a CLIP/SigLIP: its vision
    tower's); None for a size the backbone leaves open."""
    if family(backbone) is not None:
        backbone = backbone.vision_encoder
    inputs = {t.name: t for t in backbone.inputs}
    tensor = inputs.get("images", backbone.inputs[0])
    if len(tensor.shape) != 4:
        raise ValueError(
            "The backbone does not take images (batch, height, width, "
            f"channels). Received: input {tensor.name!r} of shape "
            f"{tuple(tensor.shape)}"
        )
    return tuple(tensor.shape[1:])


def dual_towers(backbone, trainable=True, fused=True, implementation=None):
    """The two towers of a keras-hub CLIP or SigLIP backbone as mmkeras
    encoders, with what a `DualEncoder` needs to continue its training.

    CLIP: the vision tower pools its first (class) token, the text tower the
    embedding at the end token (the largest id in CLIP's vocabulary, so
    padding with the end token is right), each followed by CLIP's own
    projection. SigLIP: both towers already pool and project.

    Args:
        backbone: a `CLIPBackbone` or `SigLIPBackbone`, or its config or
            preset directory (see `load_backbone`).
        trainable: False freezes both towers.
        fused: run the towers' attention on `fused_attention`
            (`mmkeras.accelerate`).
        implementation: passed to `fused_attention`.

    Returns:
        A dict: "encoders" (image, text), "input_shapes", "kind" ("softmax"
        for CLIP, "sigmoid" for SigLIP), "embedding_dim", "initial_scale"
        and "initial_bias" (the backbone's learned logit scale and bias).
    """
    from keras import ops

    from mmkeras.layers.encoders import HubImageEncoder
    from mmkeras.layers.encoders import HubTextEncoder

    backbone = load_backbone(backbone)
    kind = family(backbone)
    if kind is None:
        raise ValueError(
            "Argument `backbone` must be a keras-hub CLIPBackbone or "
            "SigLIPBackbone (or its config or preset directory). "
            f"Received: a {type(backbone).__name__}"
        )
    common = dict(trainable=trainable, fused=fused,
                  implementation=implementation)
    vision, text = backbone.vision_encoder, backbone.text_encoder
    if kind == "clip":
        image = HubImageEncoder(vision, pooling="first",
                                projection=backbone.vision_projection,
                                **common)
        words = HubTextEncoder(text, pooling="end_token",
                               projection=backbone.text_projection, **common)
        head = backbone.clip_head
        scale = float(ops.convert_to_numpy(ops.exp(head.logit_scale)))
        bias = None
        dim = backbone.projection_dim
    else:
        image = HubImageEncoder(vision, pooling="none", **common)
        words = HubTextEncoder(text, pooling="none", **common)
        head = backbone.siglip_head
        scale = float(ops.convert_to_numpy(ops.exp(head.logit_scale)))
        bias = float(ops.convert_to_numpy(head.logit_bias))
        dim = image.compute_output_shape((None, *vision.image_shape))[-1]
        text_dim = words.compute_output_shape(
            (None, text.max_sequence_length))[-1]
        if text_dim != dim:
            # The DualEncoder compares the towers' vectors as they are.
            raise ValueError(
                "Argument `backbone`: the SigLIP towers output vectors of "
                f"different widths (image {dim}, text {text_dim}); give the "
                "text encoder `projection_dim` equal to the vision "
                "`hidden_dim`. Received: a SigLIPBackbone with those widths"
            )
    return {
        "encoders": {"image": image, "text": words},
        "input_shapes": {"image": tuple(vision.image_shape),
                         "text": (text.max_sequence_length,)},
        "kind": "softmax" if kind == "clip" else "sigmoid",
        "embedding_dim": int(dim),
        "initial_scale": scale,
        "initial_bias": bias,
    }
