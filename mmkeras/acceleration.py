"""`accelerate`: run the attention of a built Keras model on the fused op.

Replacing a built attention layer of a model by another object does not work
(Keras refuses new state in a built model, and keras-hub models hold their
layers in attributes, caches and presets). Instead each attention layer keeps
its identity, weights and attributes, and gets a class: a subclass of its own
class, made once per class, that overrides only `_compute_attention` to call
`mmkeras.ops.fused_attention`. Calls the kernels cannot run (attention scores
requested, attention dropout while training, ...) still run the original
method.

Shape letters: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim.
"""

import dataclasses
import math
import sys

import keras

from mmkeras.layers.attention import FusedComputeAttention
from mmkeras.layers.attention import attention_mask_rank4
from mmkeras.ops.attention import fused_attention

# The keras-hub modules with an attention class of their own signature; read
# from sys.modules only, so that `accelerate` never imports keras-hub (and
# with it TensorFlow) into a process that did not.
_GEMMA_ATTENTION_MODULE = "keras_hub.src.models.gemma.gemma_attention"


class _FusedGemmaAttention:
    """Mixin for keras-hub's `CachedGemmaAttention` (Gemma 1, CodeGemma).

    Its `_compute_attention(q, k, v, attention_mask, training,
    cache_update_index)` takes q (B, T, N, H), k and v (B, S, K, H) and a
    (B, T, S) mask, and returns (B, T, N, H): the layout of the fused op,
    grouped-query heads included.
    """

    _fused_implementation = None

    def _compute_attention(self, q, k, v, attention_mask, training=False,
                           cache_update_index=0):
        if self.logit_soft_cap is not None or (self.dropout and training):
            return super()._compute_attention(
                q, k, v, attention_mask, training=training,
                cache_update_index=cache_update_index,
            )
        if self.query_head_dim_normalize:
            scale = 1.0 / math.sqrt(self.head_dim)
        else:
            scale = 1.0 / math.sqrt(self.hidden_dim // self.num_query_heads)
        if self.use_sliding_window_attention and attention_mask is not None:
            attention_mask = self._mask_sliding_window(
                attention_mask, cache_update_index=cache_update_index
            )
        if attention_mask is not None:
            attention_mask = attention_mask_rank4(attention_mask)
        return fused_attention(q, k, v, mask=attention_mask, scale=scale,
                               implementation=self._fused_implementation)


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """One attention layer that `accelerate` looked at.

    Attributes:
        path: the layer's path in the model (`layer.path`).
        class_name: the layer's original class.
        note: for a changed layer, when it still runs the original attention
            (or ""); for a layer left alone, why.
    """

    path: str
    class_name: str
    note: str


@dataclasses.dataclass
class AccelerateReport:
    """What `accelerate` changed, and what it left alone and why.

    Attributes:
        changed: `LayerReport`s of the layers that now run `fused_attention`.
        unchanged: `LayerReport`s of the attention layers left as they were.
    """

    changed: list = dataclasses.field(default_factory=list)
    unchanged: list = dataclasses.field(default_factory=list)

    def __str__(self):
        lines = [f"accelerate: {len(self.changed)} attention layer(s) now run "
                 f"fused_attention, {len(self.unchanged)} left alone"]
        for entry in self.changed:
            note = f" ({entry.note})" if entry.note else ""
            lines.append(f"  fused  {entry.path} [{entry.class_name}]{note}")
        for entry in self.unchanged:
            lines.append(
                f"  kept   {entry.path} [{entry.class_name}]: {entry.note}"
            )
        return "\n".join(lines)


# (original class, mixin, implementation) -> accelerated class. One class per
# key, so that a layer accelerated twice or two models share classes.
_CLASSES = {}


def _register_like(accelerated, original):
    """Makes Keras serialize `accelerated` as `original`, so that a saved
    model names the original class and loads without mmkeras."""
    # Keras keeps these registries private; without them a saved
    # accelerated layer would name the class by its bare Python name.
    from keras.src import api_export
    from keras.src.saving import object_registration

    public_name = api_export.get_name_from_symbol(original)
    if public_name is not None:
        api_export.REGISTERED_OBJS_TO_NAMES[accelerated] = public_name
    names = object_registration.GLOBAL_CUSTOM_NAMES
    if original in names:
        names[accelerated] = names[original]


def _accelerated_class(original, mixin, implementation):
    key = (original, mixin, implementation)
    if key not in _CLASSES:
        accelerated = type(
            original.__name__,
            (mixin, original),
            {
                "__module__": original.__module__,
                "__qualname__": original.__qualname__,
                "__doc__": original.__doc__,
                "_fused_implementation": implementation,
                "_mmkeras_original_class": original,
            },
        )
        _register_like(accelerated, original)
        _CLASSES[key] = accelerated
    return _CLASSES[key]


def _keras_mha_plan(layer):
    """(mixin, note) to accelerate a Keras MHA, or (None, reason)."""
    if isinstance(layer, FusedComputeAttention):
        return None, "already runs fused_attention"
    compute = type(layer)._compute_attention
    if compute is not keras.layers.MultiHeadAttention._compute_attention:
        return None, (
            f"{type(layer).__name__} overrides _compute_attention: its "
            "attention is not Keras's, so the kernel cannot stand in for it"
        )
    axes = getattr(layer, "_attention_axes", None)
    if axes is not None and len(axes) != 1:
        return None, f"attends over several axes (attention_axes={axes})"
    if layer._value_dim != layer._key_dim:
        return None, (
            f"value_dim={layer._value_dim} differs from "
            f"key_dim={layer._key_dim}; the kernels share one head dim"
        )
    note = ""
    if layer._dropout > 0:
        note = (f"attention dropout {layer._dropout}: Keras's attention "
                "while training")
    return FusedComputeAttention, note


def _gemma_plan(layer):
    gemma = sys.modules.get(_GEMMA_ATTENTION_MODULE)
    if gemma is None:
        return None
    base = gemma.CachedGemmaAttention
    if not isinstance(layer, base):
        return None
    if isinstance(layer, _FusedGemmaAttention):
        return None, "already runs fused_attention"
    if type(layer)._compute_attention is not base._compute_attention:
        return None, (
            f"{type(layer).__name__} overrides _compute_attention: its "
            "attention is not CachedGemmaAttention's"
        )
    if layer.logit_soft_cap is not None:
        return None, ("logit soft-capping (logit_soft_cap="
                      f"{layer.logit_soft_cap}) is not in the kernels")
    note = ""
    if layer.dropout:
        note = (f"attention dropout {layer.dropout}: the original attention "
                "while training")
    return _FusedGemmaAttention, note


def _plan(layer):
    """(mixin, note), (None, reason), or None for a non-attention layer."""
    gemma = _gemma_plan(layer)
    if gemma is not None:
        return gemma
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return _keras_mha_plan(layer)
    return None


def _layers(model):
    # Keras has no public recursive iterator; `_flatten_layers` is what
    # `Model.summary` and saving use.
    seen = set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if id(layer) not in seen:
            seen.add(id(layer))
            yield layer


def _path(layer):
    return getattr(layer, "path", None) or layer.name


def _reset_compiled_functions(model):
    # Functions traced before the class change would keep running the old
    # attention (jax.jit, tf.function caches); Keras retraces them when None.
    for layer in _layers(model):
        for name in ("train_function", "test_function", "predict_function",
                     "generate_function"):
            if getattr(layer, name, None) is not None:
                setattr(layer, name, None)


def accelerate(model, implementation=None, verbose=False):
    """Runs the attention layers of a built Keras model on `fused_attention`.

    Walks every layer of `model` (nested models, keras-hub backbones and
    tasks included) and gives each attention layer it can run a subclass of
    its own class whose `_compute_attention` calls
    `mmkeras.ops.fused_attention`. The layer object, its weights, its
    config, its KV cache path and anything holding it stay as they were, and
    the model still saves to `.keras` (under the original class names) and
    loads without mmkeras. Calls that need the (T, S) score matrix
    (`return_attention_scores=True`, attention dropout while training) run
    the original attention.

    Supported: `keras.layers.MultiHeadAttention` and every subclass that
    keeps its `_compute_attention` (keras-hub's `CachedMultiHeadAttention`,
    and with it BERT, RoBERTa, ViT, CLIP, SigLIP, Whisper, GPT-2, ...), and
    keras-hub's `CachedGemmaAttention` (Gemma). Other attention layers are
    listed in the report, with the reason, and left alone.

    Outputs equal the original's to float32 rounding, except that a query
    position with no key to attend to gets zeros (the contract of
    `fused_attention`) where Keras averages the values.

    Args:
        model: a built `keras.Model` (or layer).
        implementation: None, "auto", "native" or "reference"; passed to
            `fused_attention` (see `mmkeras.kernels`).
        verbose: if True, prints the report.

    Returns:
        An `AccelerateReport`: which layers changed, which were left alone
        and why. `print` it for a table.

    Example:

    >>> import keras
    >>> import mmkeras
    >>> inputs = keras.Input((16, 32))
    >>> x = keras.layers.MultiHeadAttention(4, 8)(inputs, inputs)
    >>> model = keras.Model(inputs, x)
    >>> report = mmkeras.accelerate(model)
    >>> len(report.changed)
    1
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "Argument `model` must be a Keras model or layer. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    implementation = _checked_implementation(implementation)
    report = AccelerateReport()
    touched = False
    for layer in _layers(model):
        plan = _plan(layer)
        if plan is None:
            continue
        mixin, note = plan
        entry = LayerReport(_path(layer), type(layer).__name__, note)
        if mixin is None:
            report.unchanged.append(entry)
            continue
        accelerated = _accelerated_class(type(layer), mixin, implementation)
        # `object.__setattr__`: Keras's and torch's __setattr__ would try to
        # track the class as a new attribute of the built layer.
        object.__setattr__(layer, "__class__", accelerated)
        report.changed.append(entry)
        touched = True
    if touched:
        _reset_compiled_functions(model)
    if verbose:
        print(report)
    return report


def restore(model):
    """Undoes `accelerate`: every accelerated layer gets its class back.

    Args:
        model: a model passed to `accelerate` before.

    Returns:
        The number of layers restored.
    """
    restored = 0
    for layer in _layers(model):
        original = type(layer).__dict__.get("_mmkeras_original_class")
        if original is not None:
            object.__setattr__(layer, "__class__", original)
            restored += 1
    if restored:
        _reset_compiled_functions(model)
    return restored


def _checked_implementation(implementation):
    from mmkeras import kernel_selection as kernels

    # Resolved at call time by fused_attention (MMKERAS_KERNELS may change),
    # but a typo fails here, before any layer changed.
    kernels.resolve_implementation(implementation)
    return implementation
