"""Shared input handling of the multimodal layers: list or dict of modality
tensors, `None` entries and a per-modality presence mask.

Every fusion layer (and `ModalityDropout`) derives from `ModalityLayer`,
which turns its inputs into one list of tensors in a fixed modality order,
validates count, ranks and batch sizes, replaces absent modalities by
zeros and builds the `(B, M)` boolean presence mask that the layer fuses by.
The fusion layers derive from `FusionLayer`, which adds the Dense-style
weight arguments and makes the sublayers and weights they share.
"""

import keras
from keras import ops

try:  # Keras masks attached to tensors (Embedding(mask_zero=True), Masking).
    from keras.src.backend import get_keras_mask as _get_keras_mask
except ImportError:  # pragma: no cover - older/newer private layout

    def _get_keras_mask(x):
        return getattr(x, "_keras_mask", None)


def _is_shape(s):
    """True for one shape (a sequence of ints/None), False for a structure
    of shapes."""
    return isinstance(s, (list, tuple)) and all(
        d is None or isinstance(d, int) for d in s
    )


def _shape_of(x):
    return None if x is None else tuple(x.shape)


def keras_mask_of(x):
    """The Keras mask attached to tensor `x`, or None."""
    if x is None:
        return None
    try:
        return _get_keras_mask(x)
    except Exception:  # pragma: no cover - a backend without attributes
        return None


def expand_to_rank(m, rank):
    """Reshapes a (B,) tensor to (B, 1, ..., 1) of the given rank."""
    for _ in range(rank - 1):
        m = ops.expand_dims(m, -1)
    return m


def batch_of(shapes):
    """The batch size of the first present entry of a list of shapes."""
    for s in shapes:
        if s is not None:
            return s[0]
    return None


class ModalityLayer(keras.layers.Layer):
    """Base class: a layer whose first argument is a list or dict of modalities.

    Subclasses set the class attributes below and implement
    `build_modalities(shapes)` and their own `call`, which starts with
    `xs, present = self.prepare_inputs(inputs, modality_mask)`.

    Class attributes:
        min_modalities: the least number of modalities accepted.
        max_modalities: the most (None: no limit).
        input_ranks: a tuple of allowed ranks of every modality tensor, or
            a tuple of such tuples, one per modality position.
        default_names: names of the modalities when they play fixed roles
            (e.g. `("features", "condition")`); dict inputs then use these
            keys unless `modalities` says otherwise.
    """

    min_modalities = 2
    max_modalities = None
    input_ranks = (2,)
    default_names = None

    def __init__(self, modalities=None, **kwargs):
        super().__init__(**kwargs)
        if modalities is not None:
            if isinstance(modalities, str) or not all(
                isinstance(m, str) for m in modalities
            ):
                raise ValueError(
                    "Argument `modalities` must be a list of strings (the dict "
                    f"keys of the inputs). Received: modalities={modalities!r}"
                )
            modalities = tuple(modalities)
            if len(set(modalities)) != len(modalities):
                raise ValueError(
                    "Argument `modalities` must not repeat a name. "
                    f"Received: modalities={modalities!r}"
                )
            self._check_count(len(modalities), "modalities", modalities)
        self.modalities = modalities
        self._names = modalities or self.default_names
        self._input_shapes = None

    # ------------------------------------------------------------------
    # Structure handling.

    @property
    def num_modalities(self):
        """The number of modalities (known once the layer is built)."""
        if self._input_shapes is not None:
            return len(self._input_shapes)
        if self._names is not None:
            return len(self._names)
        return None

    @property
    def modality_names(self):
        """The dict keys in modality order, or None for list inputs."""
        return self._names

    def _check_count(self, n, arg, received):
        lo, hi = self.min_modalities, self.max_modalities
        if n < lo or (hi is not None and n > hi):
            if hi == lo:
                want = f"exactly {lo}"
            elif hi is None:
                want = f"at least {lo}"
            else:
                want = f"between {lo} and {hi}"
            raise ValueError(
                f"Argument `{arg}` of {type(self).__name__} must hold {want} "
                f"modalities. Received: {n} ({received!r})"
            )

    def _split(self, inputs, adopt_names, shapes=False):
        """Returns a list of entries (tensors, shapes or None) in modality
        order. With a dict, maps keys to positions; `adopt_names` lets an
        unbuilt layer learn the keys (sorted) from this dict."""
        if isinstance(inputs, dict):
            keys = tuple(inputs.keys())
            for k in keys:
                if not isinstance(k, str):
                    raise ValueError(
                        "Argument `inputs` must be a dict with string keys. "
                        f"Received: keys={list(keys)!r}"
                    )
            if self._names is None:
                if not adopt_names:
                    raise ValueError(
                        f"Argument `inputs` of {type(self).__name__}: this "
                        "layer was built with a list of modalities, so it "
                        "needs a list. Received: a dict with keys "
                        f"{sorted(keys)!r}"
                    )
                self._names = tuple(sorted(keys))
            unknown = [k for k in keys if k not in self._names]
            if unknown:
                raise ValueError(
                    f"Argument `inputs` of {type(self).__name__} has unknown "
                    f"modality keys {unknown!r}; expected keys among "
                    f"{list(self._names)!r}. Received: keys={list(keys)!r}"
                )
            return [inputs.get(k) for k in self._names]
        if isinstance(inputs, (list, tuple)) and not (
            shapes and _is_shape(inputs) and len(inputs) > 0
        ):
            return list(inputs)
        raise ValueError(
            f"Argument `inputs` of {type(self).__name__} must be a list or "
            "dict of modality tensors. Received: "
            f"{type(inputs).__name__} with shape {_safe_shape(inputs)}"
        )

    def _ranks_for(self, i):
        ranks = self.input_ranks
        if ranks and isinstance(ranks[0], tuple):
            return ranks[i]
        return ranks

    def _validate_shapes(self, shapes, require_all=False):
        """Checks count, ranks, batch sizes and (once built) feature dims of
        a list of shapes (None entries allowed unless `require_all`)."""
        self._check_count(len(shapes), "inputs", shapes)
        if self._input_shapes is not None and len(shapes) != len(
            self._input_shapes
        ):
            raise ValueError(
                f"Argument `inputs` of {type(self).__name__} must hold the "
                f"{len(self._input_shapes)} modalities the layer was built "
                f"with. Received: {len(shapes)} modalities, shapes {shapes}"
            )
        batch = None
        for i, s in enumerate(shapes):
            if s is None:
                if require_all:
                    raise ValueError(
                        f"Argument `inputs` of {type(self).__name__}: every "
                        "modality must be present the first time the layer "
                        "is called (it builds its weights from their shapes); "
                        "pass `None` entries only once it is built. "
                        f"Received: shapes {shapes}"
                    )
                continue
            s = tuple(s)
            ranks = self._ranks_for(i)
            if len(s) not in ranks:
                want = " or ".join(str(r) for r in ranks)
                raise ValueError(
                    f"Argument `inputs` of {type(self).__name__}: modality "
                    f"{self._label(i)} must have rank {want}. Received: "
                    f"shape {s}"
                )
            if s[0] is not None:
                if batch is not None and s[0] != batch:
                    raise ValueError(
                        f"Argument `inputs` of {type(self).__name__}: all "
                        "modalities must have the same batch size. Received: "
                        f"shapes {shapes}"
                    )
                batch = s[0]
            if s[-1] is None:
                raise ValueError(
                    f"Argument `inputs` of {type(self).__name__}: the last "
                    f"(feature) axis of modality {self._label(i)} must be "
                    f"known. Received: shape {s}"
                )
            if self._input_shapes is not None:
                built = self._input_shapes[i]
                if built is not None and (
                    len(built) != len(s) or built[-1] != s[-1]
                ):
                    raise ValueError(
                        f"Argument `inputs` of {type(self).__name__}: "
                        f"modality {self._label(i)} must have shape like "
                        f"{built} (the layer was built with it). Received: "
                        f"shape {s}"
                    )
        return batch

    def _label(self, i):
        if self._names is not None and i < len(self._names):
            return f"{i} ('{self._names[i]}')"
        return str(i)

    # ------------------------------------------------------------------
    # Keras hooks.

    def build(self, input_shape):
        shapes = self._split(input_shape, adopt_names=True, shapes=True)
        shapes = [None if s is None else tuple(s) for s in shapes]
        self._validate_shapes(shapes, require_all=True)
        self._input_shapes = shapes
        self.build_modalities(shapes)

    def build_modalities(self, shapes):
        """Creates the weights from the list of modality shapes."""

    def get_config(self):
        config = super().get_config()
        config["modalities"] = (
            None if self.modalities is None else list(self.modalities)
        )
        return config

    def compute_mask(self, inputs, previous_mask):
        return None

    def shapes_of(self, input_shape):
        """The list of modality shapes (None entries kept) of `input_shape`,
        validated. For `compute_output_shape`."""
        shapes = self._split(
            input_shape, adopt_names=not self.built, shapes=True
        )
        shapes = [None if s is None else tuple(s) for s in shapes]
        self._validate_shapes(shapes)
        return shapes

    # ------------------------------------------------------------------
    # Call-time helpers.

    def split_tensors(self, inputs):
        """The list of modality tensors (None where absent), validated."""
        xs = self._split(inputs, adopt_names=False)
        self._validate_shapes([_shape_of(x) for x in xs])
        if all(x is None for x in xs):
            raise ValueError(
                f"Argument `inputs` of {type(self).__name__} must hold at "
                "least one tensor (a `None` entry marks an absent modality "
                "and gives no batch size). Received: only None entries"
            )
        return xs

    def prepare_inputs(self, inputs, modality_mask=None):
        """Returns `(xs, present)`.

        `xs` is the list of modality tensors in modality order, where every
        absent entry (None in the inputs, or False in `modality_mask`) has
        been replaced by zeros (`ops.where`, so even NaN in an absent entry
        cannot leak), and `present` is the `(B, M)` boolean presence mask.
        A `None` entry of a sequence modality becomes a `(B, 1, d)` zero
        sequence.
        """
        xs = self.split_tensors(inputs)
        ref = next(x for x in xs if x is not None)
        batch = ops.shape(ref)[0]
        dtype = self.compute_dtype
        present = self.presence_mask(modality_mask, xs, batch)
        out = []
        for i, x in enumerate(xs):
            if x is None:
                shape = self._input_shapes[i]
                inner = [1 if d is None else d for d in shape[1:]]
                out.append(ops.zeros([batch] + inner, dtype=dtype))
                continue
            x = ops.cast(x, dtype) if _is_float(x) else x
            if modality_mask is not None:
                keep = expand_to_rank(present[:, i], len(x.shape))
                x = ops.where(keep, x, ops.zeros_like(x))
            out.append(x)
        return out, present

    def presence_mask(self, modality_mask, xs, batch):
        """The (B, M) boolean presence mask from `modality_mask` and the
        None entries of `xs`."""
        n = len(xs)
        if modality_mask is None:
            present = ops.ones((batch, n), dtype="bool")
        else:
            if not hasattr(modality_mask, "shape"):
                modality_mask = ops.convert_to_tensor(modality_mask)
            shape = tuple(modality_mask.shape)
            ref = next(x for x in xs if x is not None)
            if len(shape) != 2 or (shape[1] is not None and shape[1] != n):
                raise ValueError(
                    f"Argument `modality_mask` of {type(self).__name__} must "
                    f"have shape (batch, {n}), one column per modality. "
                    f"Received: modality_mask.shape={shape}"
                )
            b_ref = ref.shape[0]
            if shape[0] is not None and b_ref is not None and shape[0] != b_ref:
                raise ValueError(
                    f"Argument `modality_mask` of {type(self).__name__} must "
                    f"have the batch size of the inputs ({b_ref}). Received: "
                    f"modality_mask.shape={shape}"
                )
            present = ops.cast(modality_mask, "bool")
        if any(x is None for x in xs):
            cols = ops.convert_to_tensor([x is not None for x in xs])
            present = ops.logical_and(present, ops.expand_dims(cols, 0))
        return present


# The Dense-style arguments of `FusionLayer`, in `keras.layers.Dense` order.
_DENSE_ARGS = (
    "kernel_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "bias_constraint",
)


class FusionLayer(ModalityLayer):
    """Base class of the fusion layers: a `ModalityLayer` whose projections
    and other weights take the Dense-style arguments, with the helpers that
    make them.

    Args:
        kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer, kernel_constraint, bias_constraint: as in
            `keras.layers.Dense`, for the weights made by these helpers.
        modalities: the dict keys, in modality order (optional).
        **kwargs: base `keras.layers.Layer` arguments.
    """

    def __init__(
        self,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        modalities=None,
        **kwargs,
    ):
        super().__init__(modalities=modalities, **kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def dense_args(self):
        """The Dense-style arguments, as Keras objects, by name."""
        return {name: getattr(self, name) for name in _DENSE_ARGS}

    def make_dense(self, units, activation=None, use_bias=True, name=None):
        """A `keras.layers.Dense` with the Dense-style arguments."""
        return keras.layers.Dense(
            units,
            activation=activation,
            use_bias=use_bias,
            dtype=self.dtype_policy,
            name=name,
            **self.dense_args(),
        )

    def make_projections(self, shapes, units, activation=None, use_bias=True):
        """One built Dense projection to `units` per modality, named
        `projection_{i}`, for the list of modality shapes `shapes`."""
        projections = []
        for i, shape in enumerate(shapes):
            dense = self.make_dense(
                units, activation, use_bias, name=f"projection_{i}"
            )
            # Built for the modality's rank: (None, d), (None, None, d)...
            dense.build((None,) * (len(shape) - 1) + (shape[-1],))
            projections.append(dense)
        return projections

    def add_dense_weight(self, shape, name, kind="kernel"):
        """Adds a weight that takes the `{kind}_initializer`,
        `{kind}_regularizer` and `{kind}_constraint` of the layer, where
        `kind` is "kernel" or "bias"."""
        return self.add_weight(
            shape=shape,
            initializer=getattr(self, f"{kind}_initializer"),
            regularizer=getattr(self, f"{kind}_regularizer"),
            constraint=getattr(self, f"{kind}_constraint"),
            name=name,
        )

    def make_dropout(self, rate):
        """A `keras.layers.Dropout` in the layer's dtype policy."""
        return keras.layers.Dropout(rate, dtype=self.dtype_policy)

    def get_config(self):
        config = super().get_config()
        for name, value in self.dense_args().items():
            config[name] = keras.saving.serialize_keras_object(value)
        return config


class KeepsFirstModality:
    """Mixin of the `ModalityLayer`s whose output has the shape and the
    Keras mask of their first modality (FiLM's features, the query of
    CrossModalAttention). List it before the `ModalityLayer` base."""

    def compute_mask(self, inputs, previous_mask):
        if isinstance(previous_mask, dict):
            return previous_mask.get(self.modality_names[0])
        if isinstance(previous_mask, (list, tuple)) and previous_mask:
            return previous_mask[0]
        return None

    def compute_output_shape(self, input_shape):
        shapes = self.shapes_of(input_shape)
        if shapes[0] is not None:
            return tuple(shapes[0])
        return tuple(self._input_shapes[0])


def _is_float(x):
    dtype = keras.backend.standardize_dtype(x.dtype)
    return dtype.startswith(("float", "bfloat"))


def _safe_shape(x):
    try:
        return tuple(x.shape)
    except Exception:
        return None


def check_positive_int(value, name, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Argument `{name}` must be a positive integer. "
            f"Received: {name}={value!r}"
        )
    return value


def check_rate(value, name="dropout"):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        0.0 <= value < 1.0
    ):
        raise ValueError(
            f"Argument `{name}` must be a float in [0, 1). "
            f"Received: {name}={value!r}"
        )
    return float(value)
