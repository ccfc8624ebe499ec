"""`EncoderDecoder`: encode one or more modalities, decode another.

Text targets (image captioning, audio to text) train teacher-forced and
decode with `generate()`: greedy, beam search, or top-k / top-p sampling,
with a key/value cache, the decoding step compiled per backend (`jax.jit`,
`tf.function`; eager on torch). Image targets (text to image) decode all
patches at once from learned patch queries and train with a regression
loss.
"""

import keras
import numpy as np
from keras import ops

from mmkeras.layers.transformer import TransformerDecoderBlock
from mmkeras.models.base import MultimodalModel

_METHODS = ("greedy", "beam", "sample")


def _compile(model, fn):
    """Compiles a decoding function for the current backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True)
    if backend == "jax":
        import jax

        variables = model.variables

        def stateless(values, *args):
            mapping = list(zip(variables, values))
            with keras.StatelessScope(state_mapping=mapping):
                return fn(*args)

        jitted = jax.jit(stateless)
        return lambda *args: jitted([v.value for v in variables], *args)
    return fn


@keras.saving.register_keras_serializable(package="mmkeras")
class EncoderDecoder(MultimodalModel):
    """Turns one or more source modalities into a target modality.

    Args:
        encoders: dict name -> encoder of each source modality (same
            `hidden_dim` for all); their tokens are concatenated.
        input_shapes: dict name -> source input shape without the batch dim.
        target: "text" (token ids) or "image".
        hidden_dim: decoder width (must equal the encoders' `hidden_dim`).
        num_layers, num_heads, intermediate_dim, dropout: decoder blocks.
        vocabulary_size, max_target_length: text target: token ids and the
            longest target sequence (including the start token).
        start_token_id, end_token_id: text target: the id every target
            starts with, and the default stop token of `generate`.
        target_shape, patch_size: image target: (height, width, channels)
            of the images, and the side of the decoded patches.
        implementation: passed to `fused_attention`.

    Call inputs: the source modalities and, for a text target,
    `"decoder_tokens"` (B, L): the target shifted right (starting with the
    start token). Output: (B, L, vocabulary_size) logits for text,
    (B, height, width, channels) in [0, 1] for an image.

    Example (captioning):

    >>> import numpy as np
    >>> from mmkeras import layers, models
    >>> model = models.EncoderDecoder(
    ...     encoders={"image": layers.ImageEncoder(32, patch_size=4, num_layers=1)},
    ...     input_shapes={"image": (8, 8, 1)}, target="text", hidden_dim=32,
    ...     num_layers=1, vocabulary_size=20, max_target_length=6)
    >>> model.generate({"image": np.zeros((2, 8, 8, 1), "float32")}).shape
    (2, 5)
    """

    def __init__(self, encoders, input_shapes, target="text", hidden_dim=64,
                 num_layers=2, num_heads=4, intermediate_dim=None, dropout=0.0,
                 vocabulary_size=None, max_target_length=None,
                 start_token_id=2, end_token_id=3, target_shape=None,
                 patch_size=4, implementation=None, **kwargs):
        super().__init__(encoders, input_shapes, **kwargs)
        if target not in ("text", "image"):
            raise ValueError(
                "Argument `target` must be 'text' or 'image'. "
                f"Received: target={target!r}"
            )
        self.target = target
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim or 4 * hidden_dim
        self.dropout = dropout
        self.vocabulary_size = vocabulary_size
        self.max_target_length = max_target_length
        self.start_token_id = start_token_id
        self.end_token_id = end_token_id
        self.target_shape = tuple(target_shape) if target_shape else None
        self.patch_size = patch_size
        self.implementation = implementation
        if target == "text":
            for name in ("vocabulary_size", "max_target_length"):
                value = getattr(self, name)
                if not isinstance(value, int) or value < 2:
                    raise ValueError(
                        f"Argument `{name}` must be an integer >= 2 for a "
                        f"text target. Received: {name}={value!r}"
                    )
            self.token_embedding = keras.layers.Embedding(
                vocabulary_size, hidden_dim, name="token_embedding")
            positions = max_target_length
        else:
            if self.target_shape is None or len(self.target_shape) != 3:
                raise ValueError(
                    "Argument `target_shape` must be (height, width, channels) "
                    f"for an image target. Received: target_shape={target_shape!r}"
                )
            height, width, _ = self.target_shape
            if height % patch_size or width % patch_size:
                raise ValueError(
                    f"Argument `patch_size` must divide the image size "
                    f"{height}x{width}. Received: patch_size={patch_size}"
                )
            positions = (height // patch_size) * (width // patch_size)
        self.num_positions = positions
        self.blocks = [
            TransformerDecoderBlock(
                num_heads=num_heads, intermediate_dim=self.intermediate_dim,
                dropout=dropout, causal=(target == "text"),
                implementation=implementation, name=f"decoder_block_{i}")
            for i in range(num_layers)
        ]
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, name="decoder_norm")
        if target == "text":
            self.output_head = keras.layers.Dense(
                vocabulary_size, dtype="float32", name="lm_head")
        else:
            patch_values = patch_size * patch_size * self.target_shape[2]
            self.output_head = keras.layers.Dense(
                patch_values, activation="sigmoid", dtype="float32",
                name="patch_head")

    @property
    def sources(self):
        return list(self.encoders)

    def build(self, input_shape=None):
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(self.num_positions, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02))
        inputs = self.sample_inputs()
        if self.target == "text":
            inputs["decoder_tokens"] = ops.ones((2, 2), "int32")
        self.call(inputs, training=False)
        self.built = True

    # -- encoder ----------------------------------------------------------

    def encode(self, inputs, training=None):
        """Source tokens (B, S, D) and their padding mask (B, S) or None."""
        tokens, masks = [], []
        for name in self.sources:
            t, m = self.encode_tokens(name, inputs[name], training)
            tokens.append(t)
            masks.append(m)
        memory = ops.concatenate(tokens, axis=1) if len(tokens) > 1 else tokens[0]
        if all(m is None for m in masks):
            return memory, None
        masks = [ops.ones(ops.shape(t)[:2], "bool") if m is None else m
                 for t, m in zip(tokens, masks)]
        return memory, ops.concatenate(masks, axis=1)

    # -- decoder ----------------------------------------------------------

    def _embed(self, tokens, start=0):
        length = ops.shape(tokens)[1]
        positions = ops.slice(ops.convert_to_tensor(self.position_embedding),
                              (start, 0),
                              (length, self.hidden_dim))
        x = self.token_embedding(tokens)
        return x + ops.cast(positions, x.dtype)

    def _decode(self, x, memory, memory_mask, padding_mask, training):
        for block in self.blocks:
            x = block(x, memory, padding_mask=padding_mask,
                      encoder_padding_mask=memory_mask, training=training)
        return self.output_head(self.final_norm(x))

    def call(self, inputs, training=None):
        inputs = dict(inputs)
        optional = ("decoder_tokens",) if self.target == "text" else ()
        if self.target == "text" and "decoder_tokens" not in inputs:
            raise ValueError(
                "Missing input 'decoder_tokens': a text EncoderDecoder is "
                "trained teacher-forced on (B, L) target ids starting with "
                f"the start token. Received keys: {sorted(inputs)}"
            )
        inputs = self.check_inputs(inputs, self.sources, optional=optional)
        memory, memory_mask = self.encode(inputs, training)
        if self.target == "text":
            tokens = ops.convert_to_tensor(inputs["decoder_tokens"])
            if tokens.shape[1] is not None and (
                    tokens.shape[1] > self.max_target_length):
                raise ValueError(
                    "Input `decoder_tokens` is longer than max_target_length="
                    f"{self.max_target_length}. Received: "
                    f"decoder_tokens.shape={tuple(tokens.shape)}"
                )
            return self._decode(self._embed(tokens), memory, memory_mask,
                                ops.not_equal(tokens, 0), training)
        batch = ops.shape(memory)[0]
        queries = ops.broadcast_to(
            ops.cast(self.position_embedding, memory.dtype)[None],
            (batch, self.num_positions, self.hidden_dim))
        patches = self._decode(queries, memory, memory_mask, None, training)
        return self._unpatchify(patches)

    def _unpatchify(self, patches):
        height, width, channels = self.target_shape
        p = self.patch_size
        grid_h, grid_w = height // p, width // p
        x = ops.reshape(patches, (-1, grid_h, grid_w, p, p, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, height, width, channels))

    # -- generation -------------------------------------------------------

    def _step(self, token, index, self_caches, cross_caches, memory_mask):
        """One cached decoding step: logits (B, V) and the new caches."""
        x = self._embed(token, start=index)
        new_caches = []
        for block, cache, cross in zip(self.blocks, self_caches, cross_caches):
            x, cache = block.call_cached(x, cache, index, cross, memory_mask)
            new_caches.append(cache)
        return self.output_head(self.final_norm(x))[:, 0], new_caches

    def _uncached_logits(self, prefix, memory, memory_mask):
        logits = self._decode(self._embed(prefix), memory, memory_mask,
                              None, False)
        return logits[:, -1]

    def generate(self, inputs, max_length=None, method="greedy", beam_width=4,
                 top_k=None, top_p=None, temperature=1.0, stop_token_ids=None,
                 seed=None, use_cache=True):
        """Decodes targets for a batch of sources.

        Args:
            inputs: dict of source modalities (numpy or tensors).
            max_length: tokens to generate (default: max_target_length - 1).
            method: "greedy", "beam" (beam search, `beam_width` beams) or
                "sample" (with `temperature`, `top_k` and/or `top_p`).
            stop_token_ids: ids that end a sequence (default: the end token);
                positions after it are 0 (padding).
            seed: seed of the sampler.
            use_cache: decode with the key/value cache (default); False
                recomputes the whole prefix each step (same tokens, slower).

        Returns:
            numpy int32 (B, max_length) token ids (text), or the images
            (B, height, width, channels) for an image target.
        """
        if self.target == "image":
            sources = self.check_inputs(dict(inputs), self.sources)
            return keras.ops.convert_to_numpy(self(sources, training=False))
        if method not in _METHODS:
            raise ValueError(
                f"Argument `method` must be one of {_METHODS}. "
                f"Received: method={method!r}"
            )
        limit = self.max_target_length - 1
        max_length = limit if max_length is None else max_length
        if not isinstance(max_length, int) or not 1 <= max_length <= limit:
            raise ValueError(
                f"Argument `max_length` must be an integer in [1, {limit}] "
                f"(max_target_length - 1). Received: max_length={max_length!r}"
            )
        if method == "beam" and (not isinstance(beam_width, int) or beam_width < 1):
            raise ValueError(
                "Argument `beam_width` must be a positive integer. "
                f"Received: beam_width={beam_width!r}"
            )
        stop = np.array(stop_token_ids if stop_token_ids is not None
                        else [self.end_token_id])
        sources = self.check_inputs(dict(inputs), self.sources)
        memory, memory_mask = self.encode(sources, training=False)
        width = beam_width if method == "beam" else 1
        if width > 1:  # each beam is a row of its own
            memory = ops.repeat(memory, width, axis=0)
            memory_mask = (None if memory_mask is None
                           else ops.repeat(memory_mask, width, axis=0))
        batch = int(ops.shape(memory)[0])
        next_logits = self._logits_fn(memory, memory_mask, batch, max_length,
                                      use_cache)
        rng = np.random.default_rng(seed)
        tokens = np.full((batch, 1), self.start_token_id, np.int32)
        scores = np.zeros(batch)
        if width > 1:  # only the first beam of each source is live at first
            scores = np.tile(np.r_[0.0, np.full(width - 1, -np.inf)],
                             batch // width)
        done = np.zeros(batch, bool)
        for i in range(max_length):
            logits = np.asarray(next_logits(tokens, i), np.float64)
            logits = logits / max(temperature, 1e-6)
            logp = logits - _logsumexp(logits)
            if method == "beam":
                tokens, scores, done, order = _beam_step(
                    tokens, scores, done, logp, width, stop)
                next_logits.reorder(order)
                continue
            if method == "greedy":
                choice = np.argmax(logp, axis=-1)
            else:
                choice = _sample(logp, top_k, top_p, rng)
            choice = np.where(done, 0, choice).astype(np.int32)
            done = done | np.isin(choice, stop)
            tokens = np.concatenate([tokens, choice[:, None]], axis=1)
            if done.all():
                break
        out = tokens[:, 1:]
        if width > 1:  # best beam of each source
            best = scores.reshape(-1, width).argmax(axis=1)
            out = out.reshape(-1, width, out.shape[1])[np.arange(len(best)), best]
        padded = np.zeros((out.shape[0], max_length), np.int32)
        padded[:, : out.shape[1]] = out
        return padded

    def _logits_fn(self, memory, memory_mask, batch, max_length, use_cache):
        """A stateful `next_logits(tokens, index)` with `reorder(rows)`."""
        model = self
        if not use_cache:
            def next_logits(tokens, index):
                return ops.convert_to_numpy(model._uncached_logits(
                    ops.convert_to_tensor(tokens), state["memory"],
                    state["mask"]))
            state = {"memory": memory, "mask": memory_mask}

            def reorder(rows):
                state["memory"] = ops.take(state["memory"], rows, axis=0)
                if state["mask"] is not None:
                    state["mask"] = ops.take(state["mask"], rows, axis=0)
            next_logits.reorder = reorder
            return next_logits

        cross = [b.compute_cross_cache(memory) for b in self.blocks]
        caches = [b.init_self_cache(batch, max_length) for b in self.blocks]
        step = getattr(self, "_compiled_step", None)
        if step is None:
            step = self._compiled_step = _compile(self, self._step)
        state = {"caches": caches}

        def next_logits(tokens, index):
            token = ops.convert_to_tensor(tokens[:, -1:])
            logits, state["caches"] = step(
                token, ops.convert_to_tensor(index, "int32"), state["caches"],
                cross, memory_mask)
            return ops.convert_to_numpy(logits)

        def reorder(rows):
            rows = ops.convert_to_tensor(rows)
            state["caches"] = [ops.take(c, rows, axis=0)
                               for c in state["caches"]]
        next_logits.reorder = reorder
        return next_logits

    def get_config(self):
        config = super().get_config()
        config.update(
            target=self.target, hidden_dim=self.hidden_dim,
            num_layers=self.num_layers, num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim, dropout=self.dropout,
            vocabulary_size=self.vocabulary_size,
            max_target_length=self.max_target_length,
            start_token_id=self.start_token_id,
            end_token_id=self.end_token_id,
            target_shape=list(self.target_shape) if self.target_shape else None,
            patch_size=self.patch_size, implementation=self.implementation,
        )
        return config


def _logsumexp(x):
    m = x.max(axis=-1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _sample(logp, top_k, top_p, rng):
    """Samples one id per row from log-probabilities, after top-k/top-p."""
    logp = logp.copy()
    if top_k is not None:
        kth = np.sort(logp, axis=-1)[:, -top_k][:, None]
        logp[logp < kth] = -np.inf
    if top_p is not None:
        order = np.argsort(-logp, axis=-1)
        sorted_p = np.exp(np.take_along_axis(logp, order, axis=-1))
        sorted_p /= sorted_p.sum(axis=-1, keepdims=True)
        # keep the smallest prefix whose mass reaches top_p
        drop = np.cumsum(sorted_p, axis=-1) - sorted_p >= top_p
        np.put_along_axis(logp, order, np.where(drop, -np.inf,
                          np.take_along_axis(logp, order, axis=-1)), axis=-1)
    p = np.exp(logp - _logsumexp(logp))
    cumulative = np.cumsum(p, axis=-1)
    u = rng.random((p.shape[0], 1)) * cumulative[:, -1:]
    return (cumulative < u).sum(axis=-1)


def _beam_step(tokens, scores, done, logp, width, stop):
    """Extends every beam by one token and keeps the `width` best per source.

    Finished beams only extend with padding (0) at no cost. Returns the new
    tokens, scores, done flags and the rows the caches must be gathered
    from."""
    batch, vocab = logp.shape
    cand = scores[:, None] + logp
    finished = np.full(vocab, -np.inf)
    finished[0] = 0.0
    cand = np.where(done[:, None], scores[:, None] + finished, cand)
    cand = cand.reshape(batch // width, width * vocab)
    best = np.argsort(-cand, axis=1, kind="stable")[:, :width]
    rows = (np.arange(batch // width)[:, None] * width + best // vocab).ravel()
    choice = (best % vocab).ravel().astype(np.int32)
    new_scores = np.take_along_axis(cand, best, axis=1).ravel()
    new_done = done[rows] | np.isin(choice, stop)
    choice = np.where(done[rows], 0, choice).astype(np.int32)
    tokens = np.concatenate([tokens[rows], choice[:, None]], axis=1)
    return tokens, new_scores, new_done, rows
