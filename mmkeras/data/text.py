"""A tiny word-level tokenizer and vocabulary helpers.

The built-in data set and user manifests both describe samples with short
English sentences, so a whitespace/word tokenizer with a fixed vocabulary is
all the models need. Ids are dense integers; the first four ids are reserved:

- 0 ``"<pad>"``: padding (so ``mask_zero=True`` embeddings just work),
- 1 ``"<unk>"``: any word that is not in the vocabulary,
- 2 ``"<start>"`` and 3 ``"<end>"``: caption boundaries for decoders.
"""

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
        if single:
            texts = [texts]
        if not isinstance(max_length, (int, np.integer)) or max_length < 1:
            raise ValueError(
                "Argument `max_length` must be a positive integer. "
                f"Received: max_length={max_length!r}"
            )
        out = np.zeros((len(texts), int(max_length)), dtype="int32")
        for row, text in enumerate(texts):
            ids = self._ids(text, add_start_end)
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
        return out[0] if single else out

    def _ids(self, text, add_start_end):
        ids = [self.token_to_id(t) for t in tokenize(str(text))]
        if add_start_end:
            ids = [START_ID] + ids + [END_ID]
        return ids

    def sequence_length(self, text, add_start_end=False):
        """Number of ids `text` encodes to (before padding)."""
        return len(self._ids(text, add_start_end))

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
