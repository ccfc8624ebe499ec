"""Modality encoders: raw inputs to token sequences (with masks).

- `ImageEncoder`: images -> patch tokens (patch embedding + transformer), or
  the feature map of any Keras vision backbone passed in.
- `TextEncoder`: token ids (0 = padding) -> tokens; its Keras mask marks
  the real tokens.
- `AudioEncoder`: waveforms -> `keras.layers.MelSpectrogram` -> strided
  convolutions -> transformer tokens.
- `SequencePooling`: tokens -> one vector (masked mean or first token).
- `HubImageEncoder`, `HubTextEncoder`, `HubAudioEncoder`: a keras-hub
  backbone (ViT, CLIP and SigLIP towers, BERT, Whisper's encoder, ...) as
  an encoder (`mmkeras.hub` loads backbones from configs and preset
  folders).

The mmkeras encoders output `(B, tokens, hidden_dim)`; the models pool or
attend over them. The keras-hub encoders pool themselves by default (the
pooling their backbone was trained with) and output `(B, D)`, which every
model takes as the modality's vector; with `pooling="sequence"` they output
the backbone's tokens `(B, T, D)` (text: with a Keras mask), which an
`EncoderDecoder` attends over.
"""

import keras
from keras import ops

from mmkeras.layers.transformer import TransformerEncoderBlock


class _Encoder(keras.layers.Layer):
    """Position embedding + a stack of `TransformerEncoderBlock`s."""

    def __init__(self, hidden_dim, num_layers=2, num_heads=4,
                 intermediate_dim=None, dropout=0.0, implementation=None,
                 **kwargs):
        super().__init__(**kwargs)
        for name, value, minimum in (("hidden_dim", hidden_dim, 1),
                                     ("num_layers", num_layers, 0),
                                     ("num_heads", num_heads, 1)):
            if not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"Argument `{name}` must be an integer >= {minimum}. "
                    f"Received: {name}={value!r}"
                )
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim or 4 * hidden_dim
        self.dropout = dropout
        self.implementation = implementation

    def _build_stack(self, num_tokens):
        self.position_embedding = self.add_weight(
            name="position_embedding", shape=(num_tokens, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        self.blocks = [
            TransformerEncoderBlock(
                num_heads=self.num_heads,
                intermediate_dim=self.intermediate_dim,
                dropout=self.dropout,
                implementation=self.implementation,
                dtype=self.dtype_policy,
                name=f"block_{i}",
            )
            for i in range(self.num_layers)
        ]
        for block in self.blocks:
            block.build((None, num_tokens, self.hidden_dim))
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, dtype=self.dtype_policy, name="final_norm")
        self.final_norm.build((None, num_tokens, self.hidden_dim))

    def _run_stack(self, tokens, padding_mask, training):
        num_tokens = ops.shape(tokens)[1]
        tokens = tokens + ops.cast(self.position_embedding[:num_tokens],
                                   tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens, padding_mask=padding_mask, training=training)
        return self.final_norm(tokens)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, num_layers=self.num_layers,
                      num_heads=self.num_heads,
                      intermediate_dim=self.intermediate_dim,
                      dropout=self.dropout,
                      implementation=self.implementation)
        return config


@keras.saving.register_keras_serializable(package="mmkeras")
class ImageEncoder(_Encoder):
    """Images (B, H, W, C) -> patch tokens (B, P, hidden_dim).

    Without `backbone`, non-overlapping `patch_size` patches are embedded by
    a strided convolution. With `backbone` (any Keras model mapping images to
    a feature map (B, h, w, c), e.g. `keras.applications.ResNet50(
    weights=None, include_top=False)` — pass pretrained weights yourself if
    you have them), its h*w feature vectors become the tokens. Either way a
    learned position embedding and `num_layers` transformer blocks follow.

    Args:
        hidden_dim: token width.
        patch_size: patch side (int or (ph, pw)); ignored with `backbone`.
        backbone: optional Keras vision model.
        num_layers, num_heads, intermediate_dim, dropout, implementation:
            of the transformer blocks.

    Example:

    >>> import numpy as np
    >>> encoder = ImageEncoder(hidden_dim=32, patch_size=4, num_layers=1)
    >>> tuple(encoder(np.zeros((2, 16, 16, 1), "float32")).shape)
    (2, 16, 32)
    """

    def __init__(self, hidden_dim, patch_size=4, backbone=None, **kwargs):
        super().__init__(hidden_dim, **kwargs)
        if isinstance(patch_size, int):
            patch_size = (patch_size, patch_size)
        self.patch_size = tuple(patch_size)
        self.backbone = backbone

    def _token_grid(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "ImageEncoder expects `images` of shape (batch, height, "
                f"width, channels). Received: images.shape={tuple(input_shape)}"
            )
        if self.backbone is not None:
            shape = self.backbone.compute_output_shape(tuple(input_shape))
            return shape[1], shape[2]
        (height, width), (ph, pw) = input_shape[1:3], self.patch_size
        if height % ph or width % pw:
            raise ValueError(
                f"ImageEncoder: image size {height}x{width} is not a multiple "
                f"of `patch_size`={self.patch_size}. Received: "
                f"images.shape={tuple(input_shape)}"
            )
        return height // ph, width // pw

    def build(self, input_shape):
        grid = self._token_grid(input_shape)
        if self.backbone is None:
            self.patch_embedding = keras.layers.Conv2D(
                self.hidden_dim, self.patch_size, strides=self.patch_size,
                dtype=self.dtype_policy, name="patch_embedding")
            self.patch_embedding.build(input_shape)
        else:
            self.patch_embedding = keras.layers.Dense(
                self.hidden_dim, dtype=self.dtype_policy, name="projection")
            features = self.backbone.compute_output_shape(tuple(input_shape))
            self.patch_embedding.build(features)
        self._build_stack(grid[0] * grid[1])

    def call(self, images, training=None):
        features = images
        if self.backbone is not None:
            features = self.backbone(images, training=training)
        features = self.patch_embedding(features)
        batch = ops.shape(features)[0]
        tokens = ops.reshape(features, (batch, -1, self.hidden_dim))
        return self._run_stack(tokens, None, training)

    def compute_output_shape(self, input_shape):
        grid = self._token_grid(input_shape)
        return (input_shape[0], grid[0] * grid[1], self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config["patch_size"] = self.patch_size
        config["backbone"] = (keras.saving.serialize_keras_object(self.backbone)
                              if self.backbone is not None else None)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("backbone") is not None:
            config["backbone"] = keras.saving.deserialize_keras_object(
                config["backbone"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="mmkeras")
class TextEncoder(_Encoder):
    """Token ids (B, T), `pad_id` = padding -> tokens (B, T, hidden_dim).

    The output carries a Keras mask (ids != `pad_id`) and padding never
    receives attention. Tokenize with `mmkeras.data.WordTokenizer` (a
    vocabulary from your corpus, padding 0) or any keras-hub tokenizer
    (`WordPieceTokenizer`, `BytePairTokenizer`, `SentencePieceTokenizer`,
    ... through `mmkeras.data.HubTokenizer`); `from_tokenizer` takes the
    vocabulary size and padding id from the tokenizer.

    Args:
        vocabulary_size: number of token ids.
        max_length: longest sequence accepted (size of the position table).
        hidden_dim, num_layers, num_heads, intermediate_dim, dropout,
        implementation: as in the other encoders.
        pad_id: the padding id of the tokenizer (CLIP's pads with its end
            token).

    Example:

    >>> import numpy as np
    >>> encoder = TextEncoder(vocabulary_size=100, max_length=16, hidden_dim=32)
    >>> tuple(encoder(np.array([[5, 6, 7, 0]])).shape)
    (1, 4, 32)
    """

    def __init__(self, vocabulary_size, max_length, hidden_dim, pad_id=0,
                 **kwargs):
        super().__init__(hidden_dim, **kwargs)
        for name, value in (("vocabulary_size", vocabulary_size),
                            ("max_length", max_length)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"Argument `{name}` must be a positive integer. "
                    f"Received: {name}={value!r}"
                )
        if (isinstance(pad_id, bool) or not isinstance(pad_id, int)
                or not 0 <= pad_id < vocabulary_size):
            raise ValueError(
                f"Argument `pad_id` must be an id in [0, {vocabulary_size}). "
                f"Received: pad_id={pad_id!r}"
            )
        self.vocabulary_size = vocabulary_size
        self.max_length = max_length
        self.pad_id = pad_id

    @classmethod
    def from_tokenizer(cls, tokenizer, max_length, hidden_dim, **kwargs):
        """A `TextEncoder` for the ids of `tokenizer`.

        Args:
            tokenizer: a keras-hub tokenizer, a `mmkeras.data.HubTokenizer`
                or a `mmkeras.data.WordTokenizer`.
            max_length, hidden_dim, **kwargs: as in the constructor.

        Returns:
            The encoder, with the tokenizer's vocabulary size and padding
            id (the tokenizer itself is not part of the layer).
        """
        from mmkeras.data.text import as_tokenizer

        tokenizer = as_tokenizer(tokenizer)
        return cls(tokenizer.vocabulary_size, max_length, hidden_dim,
                   pad_id=tokenizer.pad_id, **kwargs)

    def _check(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                "TextEncoder expects `token_ids` of shape (batch, length). "
                f"Received: token_ids.shape={tuple(input_shape)}"
            )
        if input_shape[1] is not None and input_shape[1] > self.max_length:
            raise ValueError(
                f"TextEncoder: `token_ids` has {input_shape[1]} tokens, more "
                f"than max_length={self.max_length}. Received: "
                f"token_ids.shape={tuple(input_shape)}"
            )

    def build(self, input_shape):
        self._check(input_shape)
        self.token_embedding = keras.layers.Embedding(
            self.vocabulary_size, self.hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=self.dtype_policy, name="token_embedding")
        self.token_embedding.build(input_shape)
        self._build_stack(self.max_length)

    def call(self, token_ids, training=None):
        self._check(token_ids.shape)
        padding_mask = ops.not_equal(token_ids, self.pad_id)
        tokens = self.token_embedding(token_ids)
        return self._run_stack(tokens, padding_mask, training)

    def compute_mask(self, token_ids, mask=None):
        return ops.not_equal(token_ids, self.pad_id)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(vocabulary_size=self.vocabulary_size,
                      max_length=self.max_length, pad_id=self.pad_id)
        return config


@keras.saving.register_keras_serializable(package="mmkeras")
class AudioEncoder(_Encoder):
    """Waveforms (B, L) -> tokens (B, frames, hidden_dim).

    Log-mel spectrogram in dB (`keras.layers.MelSpectrogram`), two strided 1-D
    convolutions (each halves the frame rate), then transformer blocks.

    Args:
        sample_rate: samples per second of the waveforms.
        num_mel_bins: mel bands.
        fft_length: FFT size in samples.
        frame_step: hop between frames in samples.
        hidden_dim, num_layers, num_heads, intermediate_dim, dropout,
        implementation: as in the other encoders.

    Example:

    >>> import numpy as np
    >>> encoder = AudioEncoder(sample_rate=4000, hidden_dim=32, num_layers=1)
    >>> tuple(encoder(np.zeros((2, 1600), "float32")).shape)
    (2, 7, 32)
    """

    def __init__(self, sample_rate, hidden_dim, num_mel_bins=32,
                 fft_length=256, frame_step=64, **kwargs):
        super().__init__(hidden_dim, **kwargs)
        self.sample_rate = sample_rate
        self.num_mel_bins = num_mel_bins
        self.fft_length = fft_length
        self.frame_step = frame_step

    def _frames(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                "AudioEncoder expects `waveforms` of shape (batch, samples). "
                f"Received: waveforms.shape={tuple(input_shape)}"
            )
        frames = self.spectrogram.compute_output_shape(input_shape)[2]
        for _ in range(2):
            frames = (frames + 1) // 2  # "same" padding, stride 2
        return frames

    def build(self, input_shape):
        self.spectrogram = keras.layers.MelSpectrogram(
            fft_length=self.fft_length, sequence_stride=self.frame_step,
            sampling_rate=self.sample_rate, num_mel_bins=self.num_mel_bins,
            dtype="float32", name="mel_spectrogram")
        frames = self._frames(input_shape)
        self.convolutions = [
            keras.layers.Conv1D(self.hidden_dim, 3, strides=2, padding="same",
                                activation="gelu", dtype=self.dtype_policy,
                                name=f"conv_{i}")
            for i in range(2)
        ]
        self.convolutions[0].build((None, None, self.num_mel_bins))
        self.convolutions[1].build((None, None, self.hidden_dim))
        self._build_stack(frames)

    def call(self, waveforms, training=None):
        # The spectrogram is in decibels (tens of units): scale it to order 1,
        # then (B, frames, mels) for the convolutions.
        mel = self.spectrogram(ops.cast(waveforms, "float32"))
        features = ops.transpose(mel * 0.05, (0, 2, 1))
        features = ops.cast(features, self.compute_dtype)
        for conv in self.convolutions:
            features = conv(features)
        return self._run_stack(features, None, training)

    def compute_output_shape(self, input_shape):
        if not hasattr(self, "spectrogram"):
            self.build(input_shape)
        return (input_shape[0], self._frames(input_shape), self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(sample_rate=self.sample_rate,
                      num_mel_bins=self.num_mel_bins,
                      fft_length=self.fft_length, frame_step=self.frame_step)
        return config


@keras.saving.register_keras_serializable(package="mmkeras")
class SequencePooling(keras.layers.Layer):
    """Tokens (B, T, D) -> (B, D): mean over real tokens, or the first token.

    Args:
        mode: "mean" (respects the Keras mask / `padding_mask`) or "first".
    """

    def __init__(self, mode="mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("mean", "first"):
            raise ValueError(
                "Argument `mode` must be 'mean' or 'first'. "
                f"Received: mode={mode!r}"
            )
        self.mode = mode
        self.supports_masking = True

    def call(self, tokens, padding_mask=None, mask=None):
        if self.mode == "first":
            return tokens[:, 0]
        if padding_mask is None:
            padding_mask = mask
        if padding_mask is None:
            return ops.mean(tokens, axis=1)
        weights = ops.cast(ops.expand_dims(padding_mask, -1), tokens.dtype)
        total = ops.maximum(ops.sum(weights, axis=1), 1.0)
        return ops.sum(tokens * weights, axis=1) / total

    def compute_mask(self, tokens, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config


_POOLINGS = ("auto", "first", "mean", "end_token", "none", "sequence")


class _HubEncoder(keras.layers.Layer):
    """A keras-hub backbone, its pooling and an optional projection.

    Shared by `HubImageEncoder`, `HubTextEncoder` and `HubAudioEncoder`;
    see those.
    """

    _input_key = None
    _input_dtype = None

    def __init__(self, backbone, pooling="auto", projection=None, pad_id=0,
                 fused=True, implementation=None, trainable=True, **kwargs):
        # Layer's own __init__, not the next class's in the MRO:
        # `HubTextEncoder` is also a `TextEncoder` (so that the models treat
        # its inputs as token ids) but has none of its arguments.
        keras.layers.Layer.__init__(self, **kwargs)
        from mmkeras import hub

        self.backbone = hub.load_backbone(backbone)
        if pooling not in _POOLINGS:
            raise ValueError(
                f"Argument `pooling` must be one of {_POOLINGS}. "
                f"Received: pooling={pooling!r}"
            )
        if isinstance(projection, int) and not isinstance(projection, bool):
            projection = keras.layers.Dense(projection, use_bias=False,
                                            dtype=self.dtype_policy,
                                            name="projection")
        if projection is not None and not isinstance(
                projection, keras.layers.Layer):
            raise TypeError(
                "Argument `projection` must be None, a positive int or a "
                f"Keras layer. Received: projection={projection!r}"
            )
        self.projection = projection
        self.pooling = pooling
        self.pad_id = pad_id
        self.fused = fused
        self.implementation = implementation
        if fused:
            from mmkeras.acceleration import accelerate

            accelerate(self.backbone, implementation=implementation)
        # The setter (unlike the constructor argument) reaches the
        # backbone's layers, so that frozen BatchNorms run in inference mode.
        self.trainable = trainable

    @property
    def pooled(self):
        """True when the output is one vector per example, which the models
        take as the modality's vector (not pooled again); False for
        `pooling="sequence"`."""
        return self.pooling != "sequence"

    def _model(self):
        """The model the encoder runs: the backbone (a subclass may run a
        part of it)."""
        return self.backbone

    def _backbone_inputs(self, x):
        # A functional model (every keras-hub backbone) keeps the structure
        # it was built with in `_inputs_struct` (what its `input` returns;
        # `input` itself raises on a subclassed model): a dict of named
        # inputs, or one tensor.
        structure = getattr(self.backbone, "_inputs_struct", None)
        if not isinstance(structure, dict):
            return x
        names = list(structure)
        inputs = {}
        for name in names:
            if name == self._input_key:
                inputs[name] = x
            elif name == "padding_mask":
                inputs[name] = ops.cast(ops.not_equal(x, self.pad_id),
                                        structure[name].dtype)
            elif name == "segment_ids":
                inputs[name] = ops.zeros_like(x, structure[name].dtype)
            else:
                raise ValueError(
                    f"{type(self).__name__}: the backbone "
                    f"{type(self.backbone).__name__} needs an input "
                    f"{name!r} this encoder cannot provide (it gives "
                    f"{self._input_key!r}, 'padding_mask' and "
                    f"'segment_ids'). Received: backbone inputs {names}"
                )
        return inputs

    def _select(self, outputs):
        if not isinstance(outputs, dict):
            return outputs
        if self._pooling_of(outputs) == "none" and "pooled_output" in outputs:
            return outputs["pooled_output"]
        for key in ("sequence_output", "pooled_output"):
            if key in outputs:
                return outputs[key]
        raise ValueError(
            f"{type(self).__name__}: the backbone returns a dict without "
            "'sequence_output' or 'pooled_output'. Received: keys "
            f"{sorted(outputs)}"
        )

    def _pooling_of(self, outputs):
        if self.pooling != "auto":
            return self.pooling
        if isinstance(outputs, dict):
            return "none" if "pooled_output" in outputs else "first"
        rank = len(outputs.shape)
        if rank == 2:
            return "none"
        if rank == 4:  # a feature map (ResNet, EfficientNet, ...)
            return "mean"
        return self._default_sequence_pooling

    def _pool(self, features, pooling, x):
        if pooling == "none":
            return features
        if pooling == "sequence":
            if len(features.shape) == 4:  # a feature map: its h*w tokens
                shape = ops.shape(features)
                return ops.reshape(features, (shape[0], -1, shape[-1]))
            return features
        if pooling == "first":
            return features[:, 0]
        if pooling == "end_token":
            # CLIP's pooling: its end token has the largest id, and argmax
            # picks the first one, so padding with it is harmless.
            end = ops.argmax(x, axis=-1)[:, None, None]
            return ops.take_along_axis(features, end, axis=1)[:, 0]
        if len(features.shape) == 4:
            return ops.mean(features, axis=(1, 2))
        if self._input_key == "token_ids":
            weights = ops.cast(ops.not_equal(x, self.pad_id),
                               features.dtype)[..., None]
            total = ops.maximum(ops.sum(weights, axis=1), 1.0)
            return ops.sum(features * weights, axis=1) / total
        return ops.mean(features, axis=1)

    def _spec(self, input_shape):
        x = keras.KerasTensor(tuple(input_shape), dtype=self._input_dtype)
        outputs = self._model().compute_output_spec(self._backbone_inputs(x))
        features = self._select(outputs)
        pooling = self._pooling_of(outputs)
        if pooling == "end_token" and self._input_key != "token_ids":
            raise ValueError(
                "Argument `pooling`: 'end_token' pools token ids, not "
                f"images. Received: pooling={self.pooling!r}"
            )
        shape = tuple(features.shape)
        if pooling != "none" and len(shape) < 3:
            raise ValueError(
                f"Argument `pooling`={pooling!r} needs a sequence or feature "
                "map from the backbone; it returns one vector per example "
                f"(use 'none' or 'auto'). Received: output shape {shape}"
            )
        if pooling != "sequence":
            return (shape[-1],)
        if len(shape) == 4:
            tokens = None if None in shape[1:3] else shape[1] * shape[2]
            return (tokens, shape[-1])
        return shape[1:]

    def build(self, input_shape):
        width = self._spec(input_shape)[-1]
        if self.projection is not None and not self.projection.built:
            self.projection.build((None, width))

    def call(self, x, training=None):
        outputs = self._model()(self._backbone_inputs(x), training=training)
        pooled = self._pool(self._select(outputs), self._pooling_of(outputs),
                            x)
        if self.projection is not None:
            pooled = self.projection(pooled)
        return pooled

    def compute_mask(self, x, mask=None):
        if self.pooling == "sequence" and self._input_key == "token_ids":
            return ops.not_equal(x, self.pad_id)
        return None

    def compute_output_shape(self, input_shape):
        *tokens, width = self._spec(input_shape)
        if self.projection is not None:
            width = self.projection.compute_output_shape((None, width))[-1]
        return (input_shape[0], *tokens, width)

    def get_config(self):
        config = keras.layers.Layer.get_config(self)
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            pooling=self.pooling,
            projection=(keras.saving.serialize_keras_object(self.projection)
                        if self.projection is not None else None),
            pad_id=self.pad_id, fused=self.fused,
            implementation=self.implementation,
        )
        return config

    @classmethod
    def from_config(cls, config):
        from mmkeras import hub

        hub.keras_hub()  # registers the classes the backbone config names
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(
            config["backbone"])
        if config.get("projection") is not None:
            config["projection"] = keras.saving.deserialize_keras_object(
                config["projection"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="mmkeras")
class HubImageEncoder(_HubEncoder):
    """Images (B, H, W, C) -> (B, D) through a keras-hub vision backbone.

    Wraps a keras-hub image backbone (`ViTBackbone`, `CLIPVisionEncoder`,
    `SigLIPVisionEncoder`, `ResNetBackbone`, ...), given as an instance, a
    serialized config or a local preset directory (see
    `mmkeras.hub.load_backbone`), pools its output and optionally projects
    it. Its attention layers run `fused_attention` (`mmkeras.accelerate`,
    which changes the classes of the backbone's attention layers in place).

    Args:
        backbone: the keras-hub backbone, its config, or a preset directory.
        pooling: "auto" (a vector output as is, a sequence's first (class)
            token, a feature map's mean), "first", "mean", "none", or
            "sequence": no pooling, the backbone's tokens (B, T, D) (a
            feature map's h*w positions), for an `EncoderDecoder`.
        projection: None, an int (a bias-free `Dense` of that width) or a
            Keras layer (e.g. CLIP's own `vision_projection`).
        fused: run the backbone's attention on `fused_attention`.
        implementation: passed to `fused_attention`.
        trainable: False freezes the backbone (and the projection).

    Example:

    >>> import numpy as np
    >>> import keras_hub  # after mmkeras: it imports TensorFlow
    >>> vit = keras_hub.models.ViTBackbone(
    ...     image_shape=(32, 32, 3), patch_size=8, num_layers=1, num_heads=2,
    ...     hidden_dim=32, mlp_dim=64)
    >>> tuple(HubImageEncoder(vit)(np.zeros((2, 32, 32, 3), "float32")).shape)
    (2, 32)
    """

    _input_key = "images"
    _input_dtype = "float32"
    _default_sequence_pooling = "first"


@keras.saving.register_keras_serializable(package="mmkeras")
class HubTextEncoder(_HubEncoder, TextEncoder):
    """Token ids (B, T) -> (B, D) through a keras-hub text backbone.

    Wraps a keras-hub text backbone (`BertBackbone`, `CLIPTextEncoder`,
    `SigLIPTextEncoder`, ...) like `HubImageEncoder`. It is a `TextEncoder`
    to the mmkeras models (integer inputs, length checked against the
    model's `input_shapes`), but its padding id is `pad_id` (CLIP pads with
    its end token) and it pools itself. Backbones that take a
    `padding_mask` get `token_ids != pad_id`; `segment_ids` get zeros.

    Args:
        backbone: the keras-hub backbone, its config, or a preset directory.
        pooling: "auto" (a vector output or BERT's `pooled_output` as is,
            else the masked mean), "first", "mean", "end_token" (the token
            at the first largest id: CLIP's end token), "none", or
            "sequence": no pooling, the backbone's `sequence_output`
            (B, T, D) with a Keras mask (ids != `pad_id`), which
            `FusionClassifier` pools (masked mean) and `EncoderDecoder`
            attends over.
        projection: None, an int or a Keras layer (e.g. CLIP's
            `text_projection`); applied to each token with "sequence" (to
            the decoder's `hidden_dim`, say).
        pad_id: the padding id of the tokenizer.
        fused, implementation, trainable: as in `HubImageEncoder`.
    """

    _input_key = "token_ids"
    _input_dtype = "int32"
    _default_sequence_pooling = "mean"

    def __init__(self, backbone, **kwargs):
        super().__init__(backbone, **kwargs)
        self.vocabulary_size = getattr(self.backbone, "vocabulary_size", None)
        self.max_length = getattr(self.backbone, "max_sequence_length", None)


@keras.saving.register_keras_serializable(package="mmkeras")
class HubAudioEncoder(_HubEncoder):
    """Waveforms (B, L) -> (B, D) through a keras-hub Whisper encoder.

    Runs the encoder half of a `WhisperBackbone` (its decoder is left out:
    a functional model from the backbone's "encoder_features" input to its
    "encoder_sequence_output" shares the backbone's layers and weights).
    Waveforms become Whisper-style log-mel features in the graph, with
    `keras.layers.MelSpectrogram` (power, 80 dB range, i.e. Whisper's 8
    decades of log10, scaled as Whisper's `(log10 + 4) / 4`) over
    `backbone.num_mels` bands; features (B, frames, num_mels) computed
    elsewhere (keras-hub's `WhisperAudioConverter`, which pretrained
    checkpoints expect) pass through as they are. Whisper takes at most
    `max_encoder_sequence_length` frames and has no padding mask.

    Args:
        backbone: a `WhisperBackbone`, its config, or a preset directory.
        sample_rate: samples per second of the waveforms.
        fft_length, frame_step: STFT window and hop in samples; by default
            25 ms and 10 ms (Whisper's 400 and 160 at 16 kHz).
        pooling: "auto" or "mean" (the mean over frames), "first", or
            "sequence" (the frames (B, T, D), for an `EncoderDecoder`).
        projection, fused, implementation, trainable: as in
            `HubImageEncoder`.

    Example:

    >>> import numpy as np
    >>> import keras_hub  # after mmkeras: it imports TensorFlow
    >>> whisper = keras_hub.models.WhisperBackbone(
    ...     vocabulary_size=16, num_layers=1, num_heads=2, hidden_dim=32,
    ...     intermediate_dim=64, num_mels=16, max_encoder_sequence_length=64,
    ...     max_decoder_sequence_length=8)
    >>> encoder = HubAudioEncoder(whisper, sample_rate=4000)
    >>> tuple(encoder(np.zeros((2, 1600), "float32")).shape)
    (2, 32)
    """

    _input_key = "encoder_features"
    _input_dtype = "float32"
    _default_sequence_pooling = "mean"

    def __init__(self, backbone, sample_rate, fft_length=None,
                 frame_step=None, **kwargs):
        super().__init__(backbone, **kwargs)
        if self.pooling in ("end_token", "none"):
            raise ValueError(
                "Argument `pooling` of HubAudioEncoder must be 'auto', "
                "'mean', 'first' or 'sequence' (Whisper outputs frames; "
                "'end_token' pools token ids). "
                f"Received: pooling={self.pooling!r}"
            )
        names = list(getattr(self.backbone, "_inputs_struct", None) or ())
        if "encoder_features" not in names or not hasattr(
                self.backbone, "num_mels"):
            raise ValueError(
                "Argument `backbone` must be a keras-hub WhisperBackbone (a "
                "model with an 'encoder_features' input and `num_mels`). "
                f"Received: a {type(self.backbone).__name__} with inputs "
                f"{names}"
            )
        if not isinstance(sample_rate, int) or sample_rate < 1:
            raise ValueError(
                "Argument `sample_rate` must be a positive integer. "
                f"Received: sample_rate={sample_rate!r}"
            )
        self.sample_rate = sample_rate
        self.fft_length = fft_length or max(sample_rate // 40, 2)
        self.frame_step = frame_step or max(sample_rate // 100, 1)
        self.num_mels = int(self.backbone.num_mels)
        self.spectrogram = keras.layers.MelSpectrogram(
            fft_length=self.fft_length, sequence_stride=self.frame_step,
            sampling_rate=sample_rate, num_mel_bins=self.num_mels,
            power_to_db=True, top_db=80.0, mag_exp=2.0, dtype="float32",
            name="mel_spectrogram")
        encoder = keras.Model(
            self.backbone.input["encoder_features"],
            self.backbone.output["encoder_sequence_output"],
            name=f"{self.backbone.name}_encoder")
        # Not an attribute Keras tracks: its layers are the backbone's.
        object.__setattr__(self, "_encoder_model", encoder)

    def _model(self):
        return self._encoder_model

    def _backbone_inputs(self, x):
        if len(x.shape) == 3:
            return x  # features (B, frames, num_mels) as they are
        if len(x.shape) != 2:
            raise ValueError(
                "HubAudioEncoder expects `waveforms` (batch, samples) or "
                "features (batch, frames, num_mels). "
                f"Received: shape={tuple(x.shape)}"
            )
        if isinstance(x, keras.KerasTensor):  # shapes only (`_spec`)
            frames = self.spectrogram.compute_output_shape(x.shape)[2]
            return keras.KerasTensor((x.shape[0], frames, self.num_mels))
        mel = self.spectrogram(ops.cast(x, "float32"))  # dB, (B, mels, T)
        features = (ops.transpose(mel, (0, 2, 1)) / 10.0 + 4.0) / 4.0
        return ops.cast(features, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(sample_rate=self.sample_rate,
                      fft_length=self.fft_length, frame_step=self.frame_step)
        return config
