"""What every mmkeras model shares: named modality inputs and their encoders.

A model is given `encoders` (a dict: modality name -> encoder layer) and
`input_shapes` (a dict: modality name -> shape without the batch dim). It
checks every batch it is called on (missing key, rank, dtype, length) with
a clear `ValueError`, builds all its weights from `input_shapes` (so a
`.keras` file loads without sample data) and serializes its encoders.
"""

import keras
from keras import ops

from mmkeras.layers.encoders import SequencePooling
from mmkeras.layers.encoders import TextEncoder


def serialize_layers(layers):
    return {name: keras.saving.serialize_keras_object(layer)
            for name, layer in layers.items()}


def deserialize_layers(configs):
    return {name: keras.saving.deserialize_keras_object(config)
            for name, config in configs.items()}


def is_text(encoder):
    return isinstance(encoder, TextEncoder)


class MultimodalModel(keras.Model):
    """Base class: `encoders` + `input_shapes`, validated dict inputs."""

    def __init__(self, encoders, input_shapes, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(encoders, dict) or not encoders:
            raise ValueError(
                "Argument `encoders` must be a non-empty dict of modality name "
                f"-> encoder layer. Received: encoders={encoders!r}"
            )
        if not isinstance(input_shapes, dict) or set(input_shapes) != set(encoders):
            raise ValueError(
                "Argument `input_shapes` must be a dict with the same keys as "
                f"`encoders` ({sorted(encoders)}), each a shape without the "
                f"batch dim. Received: input_shapes={input_shapes!r}"
            )
        self.encoders = dict(encoders)
        self.input_shapes = {k: tuple(v) for k, v in input_shapes.items()}
        self.poolers = {name: SequencePooling(name=f"{name}_pooling")
                        for name in self.encoders}

    # -- input checks -----------------------------------------------------

    def check_modality(self, name, x):
        """Raises ValueError unless `x` fits modality `name`."""
        expected = self.input_shapes[name]
        shape = tuple(x.shape)
        if len(shape) != len(expected) + 1:
            raise ValueError(
                f"Input `{name}` must have shape (batch, *{expected}). "
                f"Received: {name}.shape={shape}"
            )
        dtype = keras.backend.standardize_dtype(x.dtype)
        text = is_text(self.encoders[name])
        if text and "int" not in dtype:
            raise ValueError(
                f"Input `{name}` holds token ids and must be an integer "
                f"tensor. Received: {name}.dtype={dtype}"
            )
        if not text and "float" not in dtype:
            raise ValueError(
                f"Input `{name}` must be a floating tensor. "
                f"Received: {name}.dtype={dtype}"
            )
        for got, want in zip(shape[1:], expected):
            if got is None or want is None:
                continue
            if text and got > want:
                raise ValueError(
                    f"Input `{name}` is longer than the configured maximum "
                    f"{want}. Received: {name}.shape={shape}"
                )
            if not text and got != want:
                raise ValueError(
                    f"Input `{name}` must have shape (batch, *{expected}). "
                    f"Received: {name}.shape={shape}"
                )

    def check_inputs(self, inputs, names, optional=()):
        if not isinstance(inputs, dict):
            raise ValueError(
                f"{type(self).__name__} takes a dict of named inputs "
                f"{sorted(names)}. Received: {type(inputs).__name__}"
            )
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(
                f"Missing input {missing[0]!r}: {type(self).__name__} needs "
                f"{sorted(names)}. Received keys: {sorted(inputs)}"
            )
        unknown = set(inputs) - set(names) - set(optional)
        if unknown:
            raise ValueError(
                f"Unknown input {sorted(unknown)[0]!r}: {type(self).__name__} "
                f"takes {sorted([*names, *optional])}. "
                f"Received keys: {sorted(inputs)}"
            )
        for name in names:
            if inputs[name] is not None:
                inputs[name] = ops.convert_to_tensor(inputs[name])
                self.check_modality(name, inputs[name])
        return inputs

    # -- encoding ---------------------------------------------------------

    def encode_tokens(self, name, x, training=None):
        """(tokens (B, T, D), padding mask (B, T) or None) of one modality.

        An encoder that pools itself (`pooled = True`, as keras-hub
        encoders do by default) gives one token: its vector."""
        encoder = self.encoders[name]
        tokens = encoder(x, training=training)
        if getattr(encoder, "pooled", False):
            return ops.expand_dims(tokens, 1), None
        # A text encoder's mask marks its real tokens (ids != its pad_id).
        mask = encoder.compute_mask(x) if is_text(encoder) else None
        return tokens, mask

    def encode_vector(self, name, x, training=None):
        """A pooled (B, D) vector of one modality (an encoder's own, if it
        pools itself)."""
        encoder = self.encoders[name]
        if getattr(encoder, "pooled", False):
            return encoder(x, training=training)
        tokens, mask = self.encode_tokens(name, x, training)
        return self.poolers[name](tokens, padding_mask=mask)

    def sample_inputs(self, names=None, batch_size=2):
        """Zero inputs of the configured shapes (to build the model)."""
        out = {}
        for name in names or self.encoders:
            dtype = "int32" if is_text(self.encoders[name]) else "float32"
            out[name] = ops.zeros((batch_size, *self.input_shapes[name]), dtype)
        return out

    # -- training ---------------------------------------------------------

    if keras.backend.backend() == "torch":

        def train_step(self, data):
            """Keras's torch `train_step`, with the forward pass through the
            `DistributedDataParallel` wrapper that `mmkeras.distribution`
            attaches (`plan.prepare`), if any.

            DDP averages the gradients over the processes only in a backward
            pass whose forward pass ran through the wrapper; Keras's own step
            calls `self(...)`, so every process would train on its own
            gradients. Without a wrapper this is Keras's step unchanged.
            """
            ddp = self.__dict__.get("_ddp_module")
            if ddp is None:
                return super().train_step(data)
            import torch

            # From here on: keras/src/backend/torch/trainer.py, train_step,
            # with `ddp(...)` in place of `self(...)`.
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            if self._call_has_training_arg:
                y_pred = ddp(x, training=True)
            else:
                y_pred = ddp(x)
            self.zero_grad()
            loss = self._compute_loss(x=x, y=y, y_pred=y_pred,
                                      sample_weight=sample_weight,
                                      training=True)
            self._loss_tracker.update_state(
                loss, sample_weight=next(
                    i for i in keras.tree.flatten(x) if i is not None
                ).shape[0])
            if self.optimizer is not None:
                loss = self.optimizer.scale_loss(loss)
            # DDP needs trainable weights, so there are some.
            loss.backward()  # DDP's hooks all-reduce the gradients here
            trainable_weights = self.trainable_weights[:]
            gradients = [v.value.grad for v in trainable_weights]
            with torch.no_grad():
                self.optimizer.apply(gradients, trainable_weights)
            return self.compute_metrics(x, y, y_pred,
                                        sample_weight=sample_weight)

    # -- serialization ----------------------------------------------------

    def get_build_config(self):
        return {"built_from_input_shapes": True}

    def build_from_config(self, config):
        self.build()

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoders": serialize_layers(self.encoders),
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoders"] = deserialize_layers(config["encoders"])
        for key in getattr(cls, "_layer_config_keys", ()):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
