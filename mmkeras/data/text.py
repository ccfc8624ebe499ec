"""Tokenizers: a tiny word-level one, and any keras-hub tokenizer.

The built-in data set and user manifests both describe samples with short
English sentences, so a whitespace/word tokenizer with a fixed vocabulary is
all the models need, and the fastest (`WordTokenizer`, the default). Ids are
dense integers; the first four ids are reserved:

- 0 ``"<pad>"``: padding (so ``mask_zero=True`` embeddings just work),
- 1 ``"<unk>"``: any word that is not in the vocabulary,
- 2 ``"<start>"`` and 3 ``"<end>"``: caption boundaries for decoders.

Any keras-hub tokenizer (`WordPieceTokenizer`, `BytePairTokenizer`,
`SentencePieceTokenizer`, a model's own) works too, wrapped in
`HubTokenizer`, which gives it the same interface (`encode` to padded id
arrays with its own padding id, `decode`, the special ids).
`build_word_piece_vocabulary` builds a WordPiece vocabulary offline from a
corpus, with plain Python (keras-hub's `compute_word_piece_vocabulary` needs
tensorflow-text). `as_tokenizer` turns "word", "wordpiece" or a tokenizer
object into one of the two; `tokenizer_config` / `tokenizer_from_config`
save one as JSON (vocabulary included) and rebuild it.
"""

import base64
import collections
import re

import numpy as np

PAD = "<pad>"
UNK = "<unk>"
START = "<start>"
END = "<end>"
SPECIAL_TOKENS = (PAD, UNK, START, END)
PAD_ID, UNK_ID, START_ID, END_ID = 0, 1, 2, 3

# A token is either a special token written out ("<end>") or a run of word
# characters and apostrophes; other punctuation only separates words.
_TOKEN_PATTERN = re.compile(r"<[a-z]+>|[\w']+")


def tokenize(text):
    """Splits a sentence into lower-case word tokens.

    Args:
        text: a string.

    Returns:
        A list of strings. Punctuation other than apostrophes is dropped;
        special tokens written as ``"<start>"`` stay whole.
    """
    if not isinstance(text, str):
        raise TypeError(
            f"Argument `text` must be a string. Received: text={text!r} "
            f"of type {type(text).__name__}"
        )
    return _TOKEN_PATTERN.findall(text.lower())


def build_vocabulary(texts, max_size=None, min_count=1):
    """Builds a vocabulary from example sentences.

    Args:
        texts: an iterable of strings.
        max_size: optional largest vocabulary size, special tokens included.
        min_count: words seen fewer times than this are left out (they will
            encode as ``"<unk>"``).

    Returns:
        A list of tokens: the four special tokens, then words by decreasing
        frequency, ties broken alphabetically so the result is deterministic.
    """
    if max_size is not None and (
        not isinstance(max_size, int) or max_size < len(SPECIAL_TOKENS)
    ):
        raise ValueError(
            "Argument `max_size` must be None or an integer >= "
            f"{len(SPECIAL_TOKENS)} (room for the special tokens). "
            f"Received: max_size={max_size!r}"
        )
    if not isinstance(min_count, int) or min_count < 1:
        raise ValueError(
            "Argument `min_count` must be a positive integer. "
            f"Received: min_count={min_count!r}"
        )
    counts = collections.Counter()
    for text in texts:
        counts.update(tokenize(text))
    for token in SPECIAL_TOKENS:
        counts.pop(token, None)
    words = sorted(
        (w for w, c in counts.items() if c >= min_count),
        key=lambda w: (-counts[w], w),
    )
    if max_size is not None:
        words = words[: max_size - len(SPECIAL_TOKENS)]
    return list(SPECIAL_TOKENS) + words


def pad_id_rows(texts, rows, max_length, pad_id, truncate):
    """The `encode` of every tokenizer: id lists `rows` (of the sentences
    `texts`) as an int32 `(len(rows), max_length)` array padded with `pad_id`
    on the right; a row too long raises unless `truncate`."""
    if not isinstance(max_length, (int, np.integer)) or max_length < 1:
        raise ValueError(
            "Argument `max_length` must be a positive integer. "
            f"Received: max_length={max_length!r}"
        )
    out = np.full((len(rows), int(max_length)), pad_id, "int32")
    for row, (text, ids) in enumerate(zip(texts, rows)):
        if len(ids) > max_length:
            if not truncate:
                raise ValueError(
                    f"Sentence {row} has {len(ids)} tokens, more than "
                    f"`max_length`={max_length}; pass a larger "
                    "`max_length` or `truncate=True`. "
                    f"Received: text={text!r}"
                )
            ids = ids[:max_length]
        out[row, : len(ids)] = ids
    return out


class WordTokenizer:
    """Encodes sentences to padded id arrays and decodes ids back to text.

    Args:
        vocabulary: a list of unique tokens whose first four entries are
            ``"<pad>", "<unk>", "<start>", "<end>"`` (as returned by
            `build_vocabulary`).

    Example:

    >>> tok = WordTokenizer(build_vocabulary(["a handwritten seven"]))
    >>> ids = tok.encode(["a handwritten seven"], max_length=6,
    ...                  add_start_end=True)
    >>> tok.decode(ids[0])
    'a handwritten seven'
    """

    def __init__(self, vocabulary):
        vocabulary = list(vocabulary)
        if tuple(vocabulary[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(
                "Argument `vocabulary` must start with the special tokens "
                f"{list(SPECIAL_TOKENS)}. "
                f"Received: vocabulary starting with {vocabulary[:4]!r}"
            )
        if len(set(vocabulary)) != len(vocabulary):
            dupes = sorted(
                w for w, c in collections.Counter(vocabulary).items() if c > 1
            )
            raise ValueError(
                "Argument `vocabulary` must not repeat tokens. "
                f"Received: duplicated tokens {dupes[:10]!r}"
            )
        self._vocabulary = vocabulary
        self._index = {token: i for i, token in enumerate(vocabulary)}

    @property
    def vocabulary(self):
        """The list of tokens; a token's position is its id."""
        return list(self._vocabulary)

    @property
    def vocabulary_size(self):
        """Number of tokens, special tokens included."""
        return len(self._vocabulary)

    pad_id = PAD_ID
    unk_id = UNK_ID
    start_id = START_ID
    end_id = END_ID

    def token_to_id(self, token):
        """Returns the id of `token`, or the ``"<unk>"`` id."""
        return self._index.get(token, UNK_ID)

    def id_to_token(self, token_id):
        """Returns the token for `token_id`."""
        token_id = int(token_id)
        if not 0 <= token_id < len(self._vocabulary):
            raise ValueError(
                "Argument `token_id` must be in "
                f"[0, {len(self._vocabulary)}). Received: token_id={token_id}"
            )
        return self._vocabulary[token_id]

    def encode(self, texts, max_length, add_start_end=False, truncate=False):
        """Turns sentences into a padded int32 id array.

        Args:
            texts: a string or a sequence of strings.
            max_length: length of each encoded row, special tokens included.
            add_start_end: whether to wrap each sentence in ``"<start>"`` and
                ``"<end>"`` (caption targets for decoders).
            truncate: whether to cut sentences that do not fit. When False,
                a sentence longer than `max_length` raises, so nothing is
                lost silently.

        Returns:
            An int32 array of shape ``(len(texts), max_length)`` (or
            ``(max_length,)`` for a single string), 0-padded on the right.
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        rows = [self._ids(text, add_start_end) for text in texts]
        out = pad_id_rows(texts, rows, max_length, 0, truncate)
        return out[0] if single else out

    def _ids(self, text, add_start_end):
        ids = [self.token_to_id(t) for t in tokenize(str(text))]
        if add_start_end:
            ids = [START_ID] + ids + [END_ID]
        return ids

    def sequence_length(self, text, add_start_end=False):
        """Number of ids `text` encodes to (before padding)."""
        return len(self._ids(text, add_start_end))

    def sequence_lengths(self, texts):
        """Numbers of ids of many texts (no start/end)."""
        return [self.sequence_length(t) for t in texts]

    def decode(self, ids, skip_special_tokens=True, stop_at_end=True):
        """Turns ids back into sentences.

        Args:
            ids: a 1-D sequence of ids, or a 2-D array (one row a sentence).
                Tensors of any backend are accepted via `np.asarray`.
            skip_special_tokens: drop ``<pad>``, ``<start>`` and ``<end>``
                (``<unk>`` stays visible: it marks a real word).
            stop_at_end: stop reading a row at its first ``"<end>"`` (what a
                decoder emits after the caption is undefined).

        Returns:
            A string for 1-D input, a list of strings for 2-D input.
        """
        ids = np.asarray(ids)
        if ids.ndim == 1:
            return self._decode_row(ids, skip_special_tokens, stop_at_end)
        if ids.ndim != 2:
            raise ValueError(
                "Argument `ids` must be 1-D or 2-D. "
                f"Received: ids with shape {ids.shape}"
            )
        return [
            self._decode_row(row, skip_special_tokens, stop_at_end)
            for row in ids
        ]

    def _decode_row(self, row, skip_special_tokens, stop_at_end):
        words = []
        for token_id in row.tolist():
            if stop_at_end and token_id == END_ID:
                break
            if skip_special_tokens and token_id in (PAD_ID, START_ID, END_ID):
                continue
            words.append(self.id_to_token(token_id))
        return " ".join(words)

    def get_config(self):
        """Returns a JSON-serializable dict that recreates the tokenizer."""
        return {"vocabulary": self.vocabulary}

    @classmethod
    def from_config(cls, config):
        """Rebuilds a tokenizer from `get_config()` output."""
        return cls(**config)


# ---------------------------------------------------------------------------
# WordPiece vocabularies, and keras-hub tokenizers behind one interface.

WORD_PIECE_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[START]", "[END]")
SUFFIX_INDICATOR = "##"
# keras-hub's WordPiece splits on whitespace and keeps each punctuation mark
# as a word of its own; the vocabulary builder splits the same way.
_WORD_PIECE_SPLIT = re.compile(r"\w+|[^\w\s]")

# Where a keras-hub tokenizer keeps its special ids (attributes, first found
# wins), and the token strings tried when it has no such attribute.
_SPECIAL_ID_ATTRIBUTES = {
    "pad_id": ("pad_token_id",),
    "start_id": ("start_token_id", "cls_token_id", "bos_token_id"),
    "end_id": ("end_token_id", "sep_token_id", "eos_token_id"),
}
_SPECIAL_ID_TOKENS = {
    "pad_id": ("[PAD]", "<pad>"),
    "start_id": ("[START]", "[CLS]", "<start>", "<s>", "<|startoftext|>"),
    "end_id": ("[END]", "[SEP]", "<end>", "</s>", "<|endoftext|>"),
}


def build_word_piece_vocabulary(texts, vocabulary_size=None, min_count=1):
    """Builds a WordPiece vocabulary from example sentences, offline.

    The vocabulary holds, after `WORD_PIECE_SPECIAL_TOKENS` (so padding is
    id 0, unknown 1, start 2 and end 3, as with `WordTokenizer`):

    - every character of the corpus, as a word start and as a
      ``"##"`` continuation, so any word spelled with them tokenizes
      without ``"[UNK]"`` (a typo becomes pieces, not an unknown word);
    - whole words seen at least `min_count` times, most frequent first;
    - word starts and ``"##"`` endings shared by at least two distinct
      words, by decreasing frequency (longer first on ties).

    Words and pieces are cut, in that order, at `vocabulary_size`.
    Lower-cased text, split like keras-hub's `WordPieceTokenizer`
    (whitespace, each punctuation mark a word). Deterministic.

    Args:
        texts: an iterable of strings.
        vocabulary_size: optional largest size. It must leave room for the
            special tokens and the characters.
        min_count: words seen fewer times become pieces.

    Returns:
        A list of tokens, for `word_piece_tokenizer` (or
        `keras_hub.tokenizers.WordPieceTokenizer(lowercase=True)`).
    """
    if not isinstance(min_count, int) or min_count < 1:
        raise ValueError(
            "Argument `min_count` must be a positive integer. "
            f"Received: min_count={min_count!r}"
        )
    counts = collections.Counter()
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(
                "Argument `texts` must hold strings. Received: an item "
                f"{text!r} of type {type(text).__name__}"
            )
        counts.update(_WORD_PIECE_SPLIT.findall(text.lower()))
    characters = sorted({w[0] for w in counts})
    characters += sorted({SUFFIX_INDICATOR + c for w in counts for c in w[1:]})
    vocabulary = list(WORD_PIECE_SPECIAL_TOKENS) + characters
    if vocabulary_size is not None and (
        not isinstance(vocabulary_size, int)
        or vocabulary_size < len(vocabulary)
    ):
        raise ValueError(
            "Argument `vocabulary_size` must be None or an integer >= "
            f"{len(vocabulary)} (the special tokens and the "
            f"{len(characters)} characters of the corpus). "
            f"Received: vocabulary_size={vocabulary_size!r}"
        )
    words = sorted((w for w, c in counts.items() if c >= min_count),
                   key=lambda w: (-counts[w], w))
    pieces, owners = collections.Counter(), collections.defaultdict(set)
    for word, count in counts.items():
        for k in range(2, len(word)):
            for piece in (word[:k], SUFFIX_INDICATOR + word[k - 1:]):
                pieces[piece] += count
                owners[piece].add(word)
    shared = sorted((p for p in pieces if len(owners[p]) >= 2),
                    key=lambda p: (-pieces[p], -len(p), p))
    seen = set(vocabulary)
    for token in words + shared:
        if vocabulary_size is not None and len(vocabulary) >= vocabulary_size:
            break
        if token not in seen:
            vocabulary.append(token)
            seen.add(token)
    return vocabulary


def word_piece_tokenizer(vocabulary):
    """A lower-casing keras-hub `WordPieceTokenizer` over `vocabulary`
    (from `build_word_piece_vocabulary`), wrapped in `HubTokenizer`."""
    from mmkeras import hub

    tokenizer = hub.keras_hub().tokenizers.WordPieceTokenizer(
        vocabulary=list(vocabulary), lowercase=True,
        oov_token=WORD_PIECE_SPECIAL_TOKENS[1],
        suffix_indicator=SUFFIX_INDICATOR)
    return HubTokenizer(tokenizer)


class HubTokenizer:
    """A keras-hub tokenizer with `WordTokenizer`'s interface.

    Wraps anything with keras-hub's tokenizer methods (`tokenize`,
    `detokenize`, `vocabulary_size`, `id_to_token`): `WordPieceTokenizer`,
    `BytePairTokenizer`, `SentencePieceTokenizer`, `BertTokenizer`,
    `CLIPTokenizer`, ... `encode` pads with the tokenizer's own padding id
    (CLIP pads with its end token), which is what `TextEncoder(pad_id=...)`
    must be given (`TextEncoder.from_tokenizer` does it).

    Args:
        tokenizer: the keras-hub tokenizer. It must not pad itself
            (`sequence_length=None`): `encode` pads.
        pad_id, start_id, end_id: the special ids. By default they are read
            from the tokenizer's attributes (`pad_token_id`,
            `start_token_id`/`cls_token_id`, `end_token_id`/`sep_token_id`)
            or found by token (``"[PAD]"``, ``"[START]"``, ``"[END]"``,
            ``"<pad>"``, ``"</s>"``, ...). A padding id is required; start
            and end only for `add_start_end=True`.

    Example:

    >>> import keras_hub  # after mmkeras: it imports TensorFlow
    >>> tokenizer = HubTokenizer(keras_hub.tokenizers.WordPieceTokenizer(
    ...     ["[PAD]", "[UNK]", "[START]", "[END]", "a", "hand", "##written"],
    ...     lowercase=True))
    >>> tokenizer.encode(["A handwritten"], max_length=6, add_start_end=True)
    array([[2, 4, 5, 6, 3, 0]], dtype=int32)
    """

    def __init__(self, tokenizer, pad_id=None, start_id=None, end_id=None):
        if isinstance(tokenizer, HubTokenizer):
            tokenizer = tokenizer.tokenizer
        missing = [name for name in ("tokenize", "detokenize",
                                     "vocabulary_size", "id_to_token")
                   if not callable(getattr(tokenizer, name, None))]
        if missing:
            raise TypeError(
                "Argument `tokenizer` must be a keras-hub tokenizer (with "
                "`tokenize`, `detokenize`, `vocabulary_size` and "
                f"`id_to_token`; this one lacks {missing}). "
                f"Received: tokenizer of type {type(tokenizer).__name__}"
            )
        if getattr(tokenizer, "sequence_length", None):
            raise ValueError(
                "Argument `tokenizer` must not pad (keras-hub pads with 0, "
                "which is not every tokenizer's padding id): build it with "
                "`sequence_length=None`; `encode` pads to `max_length`. "
                f"Received: sequence_length={tokenizer.sequence_length}"
            )
        self.tokenizer = tokenizer
        given = {"pad_id": pad_id, "start_id": start_id, "end_id": end_id}
        for name, value in given.items():
            if value is None:
                value = self._find_special_id(name)
            elif (isinstance(value, bool)
                  or not isinstance(value, (int, np.integer))
                  or not 0 <= value < self.vocabulary_size):
                raise ValueError(
                    f"Argument `{name}` must be an id in "
                    f"[0, {self.vocabulary_size}). Received: {name}={value!r}"
                )
            setattr(self, name, None if value is None else int(value))
        if self.pad_id is None:
            raise ValueError(
                "Argument `pad_id` is needed: the tokenizer has no "
                "`pad_token_id` and no '[PAD]' or '<pad>' token. Pass the "
                "id to pad with. Received: pad_id=None for a "
                f"{type(tokenizer).__name__}"
            )
        self.unk_id = self._token_id(getattr(tokenizer, "oov_token", None))

    def _token_id(self, token):
        if token is None:
            return None
        try:
            token_id = int(self.tokenizer.token_to_id(token))
            # SentencePiece answers the unknown id for a missing token.
            found = self.tokenizer.id_to_token(token_id)
        except (ValueError, KeyError, TypeError, IndexError):
            return None
        return token_id if found == token else None

    def _find_special_id(self, name):
        for attribute in _SPECIAL_ID_ATTRIBUTES[name]:
            value = getattr(self.tokenizer, attribute, None)
            if isinstance(value, (int, np.integer)):
                return int(value)
        for token in _SPECIAL_ID_TOKENS[name]:
            value = self._token_id(token)
            if value is not None:
                return value
        return None

    @property
    def vocabulary_size(self):
        """Number of ids."""
        return int(self.tokenizer.vocabulary_size())

    @property
    def vocabulary(self):
        """The list of tokens; a token's position is its id."""
        return [str(self.tokenizer.id_to_token(i))
                for i in range(self.vocabulary_size)]

    def _ids(self, text, add_start_end):
        return self._wrap(self._tokenize([str(text)])[0], add_start_end)

    def _wrap(self, ids, add_start_end):
        if not add_start_end:
            return ids
        if self.start_id is None or self.end_id is None:
            raise ValueError(
                "Argument `add_start_end` needs the tokenizer's start and "
                "end ids; pass `start_id` and `end_id` to HubTokenizer. "
                f"Received: start_id={self.start_id}, end_id={self.end_id}"
            )
        return [self.start_id] + ids + [self.end_id]

    def _tokenize(self, texts):
        ids = self.tokenizer.tokenize(list(texts))
        if hasattr(ids, "to_list"):  # a tf.RaggedTensor (with tf-text)
            ids = ids.to_list()
        return [[int(i) for i in np.asarray(row).reshape(-1)] for row in ids]

    def encode(self, texts, max_length, add_start_end=False, truncate=False):
        """Turns sentences into an int32 id array padded with `pad_id`;
        the arguments are those of `WordTokenizer.encode`."""
        single = isinstance(texts, str)
        texts = [texts] if single else [str(t) for t in texts]
        rows = self._tokenize(texts) if texts else []
        rows = [self._wrap(ids, add_start_end) for ids in rows]
        out = pad_id_rows(texts, rows, max_length, self.pad_id, truncate)
        return out[0] if single else out

    def sequence_length(self, text, add_start_end=False):
        """Number of ids `text` encodes to (before padding)."""
        return len(self._ids(text, add_start_end))

    def sequence_lengths(self, texts):
        """Numbers of ids of many texts (no start/end; one `tokenize`)."""
        texts = [str(t) for t in texts]
        return [len(ids) for ids in self._tokenize(texts)] if texts else []

    def decode(self, ids, skip_special_tokens=True, stop_at_end=True):
        """Turns ids back into sentences; as `WordTokenizer.decode`
        (padding, start and end ids are the special tokens skipped)."""
        ids = np.asarray(ids)
        if ids.ndim not in (1, 2):
            raise ValueError(
                "Argument `ids` must be 1-D or 2-D. "
                f"Received: ids with shape {ids.shape}"
            )
        rows = [ids] if ids.ndim == 1 else list(ids)
        special = {self.pad_id, self.start_id, self.end_id} - {None}
        texts = []
        for row in rows:
            kept = []
            for token_id in row.tolist():
                if stop_at_end and token_id == self.end_id:
                    break
                if skip_special_tokens and token_id in special:
                    continue
                kept.append(int(token_id))
            text = self.tokenizer.detokenize([kept])[0] if kept else ""
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            texts.append(str(text))
        return texts[0] if ids.ndim == 1 else texts

    def get_config(self):
        """A JSON-serializable dict that recreates the tokenizer: its
        keras-hub config with the vocabulary (and merges, or SentencePiece
        proto) written in, which keras-hub keeps in asset files."""
        import keras

        serialized = keras.saving.serialize_keras_object(self.tokenizer)
        config = dict(serialized["config"])
        for name in ("vocabulary", "merges"):
            value = getattr(self.tokenizer, name, None)
            if value is not None:
                config[name] = (dict(value) if isinstance(value, dict)
                                else list(value))
        proto = getattr(self.tokenizer, "proto", None)
        if proto is not None:
            config["proto"] = {"base64": base64.b64encode(proto).decode()}
        serialized["config"] = config
        return {"tokenizer": serialized, "pad_id": self.pad_id,
                "start_id": self.start_id, "end_id": self.end_id}

    @classmethod
    def from_config(cls, config):
        """Rebuilds a tokenizer from `get_config()` output."""
        import copy

        import keras

        from mmkeras import hub

        hub.keras_hub()  # registers the keras-hub classes
        config = copy.deepcopy(config)
        inner = config.pop("tokenizer")
        proto = inner["config"].get("proto")
        if isinstance(proto, dict):
            inner["config"]["proto"] = base64.b64decode(proto["base64"])
        return cls(keras.saving.deserialize_keras_object(inner), **config)


TOKENIZERS = ("word", "wordpiece")


def as_tokenizer(tokenizer, texts=None, word_vocabulary=None):
    """An mmkeras tokenizer (`WordTokenizer` or `HubTokenizer`).

    Args:
        tokenizer: "word", "wordpiece", a `WordTokenizer`, a `HubTokenizer`
            or a keras-hub tokenizer (wrapped).
        texts: the corpus a "word" or "wordpiece" vocabulary is built from
            (when `word_vocabulary` is not given for "word").
        word_vocabulary: the vocabulary of "word", if fixed.

    Returns:
        The tokenizer.
    """
    if isinstance(tokenizer, (WordTokenizer, HubTokenizer)):
        return tokenizer
    if isinstance(tokenizer, str):
        if tokenizer not in TOKENIZERS:
            raise ValueError(
                f"Argument `tokenizer` must be one of {list(TOKENIZERS)} or "
                f"a tokenizer object. Received: tokenizer={tokenizer!r}"
            )
        if texts is None and not (tokenizer == "word" and word_vocabulary):
            raise ValueError(
                f"Argument `texts` is needed to build the {tokenizer!r} "
                "tokenizer's vocabulary. Received: texts=None"
            )
        if tokenizer == "word":
            if word_vocabulary is None:
                word_vocabulary = build_vocabulary(texts)
            return WordTokenizer(word_vocabulary)
        return word_piece_tokenizer(build_word_piece_vocabulary(texts))
    return HubTokenizer(tokenizer)


def tokenizer_config(tokenizer):
    """A JSON-serializable description of an mmkeras tokenizer, for
    `tokenizer_from_config` (data sets keep it in ``info["tokenizer"]``)."""
    return {"class_name": type(tokenizer).__name__,
            "config": tokenizer.get_config()}


def tokenizer_from_config(config):
    """The tokenizer `tokenizer_config` described."""
    classes = {"WordTokenizer": WordTokenizer, "HubTokenizer": HubTokenizer}
    name = config.get("class_name") if isinstance(config, dict) else None
    if name not in classes:
        raise ValueError(
            "Argument `config` must come from `tokenizer_config` (class_name "
            f"one of {sorted(classes)}). Received: config={config!r:.200}"
        )
    return classes[name].from_config(config["config"])


def tokenizer_info(tokenizer):
    """What a data set's ``info`` says of its tokenizer: ``vocabulary``,
    ``vocabulary_size``, ``pad_id``, ``start_id``, ``end_id`` and
    ``tokenizer`` (its `tokenizer_config`); all None without one."""
    if tokenizer is None:
        return dict.fromkeys(("vocabulary", "vocabulary_size", "pad_id",
                              "start_id", "end_id", "tokenizer"))
    return {
        "vocabulary": tokenizer.vocabulary,
        "vocabulary_size": tokenizer.vocabulary_size,
        "pad_id": tokenizer.pad_id,
        "start_id": tokenizer.start_id,
        "end_id": tokenizer.end_id,
        "tokenizer": tokenizer_config(tokenizer),
    }
