"""`ModalityDropout`: drop whole modalities while training (ModDrop)."""

import keras
from keras import ops

from mmkeras.layers.fusion_base import ModalityLayer
from mmkeras.layers.fusion_base import expand_to_rank


@keras.saving.register_keras_serializable(package="mmkeras")
class ModalityDropout(ModalityLayer):
    """Drops whole modalities per sample while training (ModDrop, Neverova
    et al. 2016), so that a model learns to work with missing modalities.

    While training, each modality of each sample is dropped with
    probability `rate` (one rate, or one per modality): its tensor is
    replaced by zeros. A sample never loses all of its present modalities:
    when every present one was drawn, one of them (chosen uniformly) is
    kept. At inference the inputs pass unchanged. Values are not rescaled.

    Pass the returned mask on to a fusion layer (`return_mask=True`), so
    that it fuses only what was kept:

        kept, mask = ModalityDropout(0.3, return_mask=True)(xs)
        fused = GatedFusion(64)(kept, modality_mask=mask)

    Args:
        rate: probability of dropping a modality, a float in [0, 1), or a
            list of such floats, one per modality (in modality order).
        return_mask: also return the `(B, M)` boolean mask of the modalities
            kept (and present). At inference it is the presence mask.
        seed: optional int seed of the random draws.
        modalities: the dict keys, in modality order (optional).
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: list or dict of tensors `(B, ...)` (`None` = absent, kept
            as None in the output).
        modality_mask: optional `(B, M)` presence mask of the inputs; absent
            modalities are zeroed and stay absent.
        training: Python bool, training mode.

    Returns:
        The inputs' structure (list or dict) with dropped modalities zeroed,
        and, with `return_mask=True`, the `(B, M)` boolean mask too.

    Example:

    >>> import numpy as np
    >>> import mmkeras
    >>> xs = [np.ones((4, 3), "float32"), np.ones((4, 5), "float32")]
    >>> drop = mmkeras.layers.ModalityDropout(0.5, return_mask=True)
    >>> kept, mask = drop(xs, training=True)
    >>> bool(np.all(np.asarray(mask).any(axis=1)))
    True
    """

    min_modalities = 1
    input_ranks = tuple(range(1, 9))

    def __init__(
        self, rate=0.5, return_mask=False, seed=None, modalities=None, **kwargs
    ):
        super().__init__(modalities=modalities, **kwargs)
        rates = rate if isinstance(rate, (list, tuple)) else [rate]
        for r in rates:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not (
                0.0 <= r < 1.0
            ):
                raise ValueError(
                    "Argument `rate` must be a float in [0, 1) or a list of "
                    f"such floats. Received: rate={rate!r}"
                )
        self.rate = (
            [float(r) for r in rate]
            if isinstance(rate, (list, tuple))
            else float(rate)
        )
        self.return_mask = bool(return_mask)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def build_modalities(self, shapes):
        if isinstance(self.rate, list) and len(self.rate) != len(shapes):
            raise ValueError(
                "Argument `rate` must hold one rate per modality "
                f"({len(shapes)}). Received: rate={self.rate!r}"
            )

    def call(self, inputs, modality_mask=None, training=None):
        xs, present = self.prepare_inputs(inputs, modality_mask)
        raw = self._split(inputs, adopt_names=False)
        keep = present
        if training:
            keep = self._draw(present)
        outs = []
        for i, (x, r) in enumerate(zip(xs, raw)):
            if r is None:
                outs.append(None)
            elif training:
                k = expand_to_rank(keep[:, i], len(x.shape))
                outs.append(ops.where(k, x, ops.zeros_like(x)))
            else:
                outs.append(x)
        if isinstance(inputs, dict):
            outs = {
                k: v for k, v in zip(self._names, outs) if k in inputs
            }
        if self.return_mask:
            return outs, keep
        return outs

    def _draw(self, present):
        n = present.shape[1]
        batch = ops.shape(present)[0]
        u = keras.random.uniform(
            (batch, n), seed=self.seed_generator, dtype="float32"
        )
        rate = ops.convert_to_tensor(
            self.rate if isinstance(self.rate, list) else [self.rate] * n,
            dtype="float32",
        )
        keep = ops.logical_and(present, ops.greater_equal(u, rate))
        # Where every present modality was drawn, keep one present modality,
        # chosen uniformly (the largest draw among the present ones).
        scores = ops.where(present, u, -ops.ones_like(u))
        chosen = ops.one_hot(ops.argmax(scores, axis=1), n, dtype="float32")
        fallback = ops.logical_and(present, ops.cast(chosen, "bool"))
        none_kept = ops.logical_not(ops.any(keep, axis=1, keepdims=True))
        return ops.where(none_kept, fallback, keep)

    def compute_mask(self, inputs, previous_mask):
        return previous_mask

    def compute_output_shape(self, input_shape):
        shapes = self.shapes_of(input_shape)
        if isinstance(input_shape, dict):
            out = {k: tuple(v) for k, v in input_shape.items()}
        else:
            out = [None if s is None else tuple(s) for s in shapes]
        if self.return_mask:
            batch = next(s[0] for s in shapes if s is not None)
            return out, (batch, len(shapes))
        return out

    def compute_output_spec(self, inputs, modality_mask=None, training=None):
        def spec(x):
            return keras.KerasTensor(x.shape, dtype=x.dtype)

        if isinstance(inputs, dict):
            self._split(inputs, adopt_names=not self.built)
            out = {k: spec(v) for k, v in inputs.items()}
        else:
            out = [None if x is None else spec(x) for x in inputs]
        shapes = self.shapes_of(
            {k: v.shape for k, v in out.items()}
            if isinstance(out, dict)
            else [None if x is None else x.shape for x in out]
        )
        if self.return_mask:
            batch = next(s[0] for s in shapes if s is not None)
            return out, keras.KerasTensor((batch, len(shapes)), dtype="bool")
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            rate=self.rate, return_mask=self.return_mask, seed=self.seed
        )
        return config
