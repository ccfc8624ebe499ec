"""keras-hub tokenizers in the data pipeline and `TextEncoder`, offline.

WordPiece (a vocabulary built here from the data's own text), BytePair and
SentencePiece (a model trained here with the sentencepiece library), their
padding ids, JSON round trips of the data sets' tokenizers and a `.keras`
round trip of a model over a tokenizer that does not pad with 0.
"""

import io
import json

import keras
import numpy as np
import pytest
from manifest_helpers import write_manifest

import mmkeras  # noqa: F401  first: imports Triton before keras-hub's TF
from mmkeras import data as mm_data
from mmkeras import hub
from mmkeras import layers
from mmkeras import models

keras_hub = hub.keras_hub()

CORPUS = ["a handwritten seven", "the digit seven written by hand",
          "a handwritten one", "the number one drawn by hand"]


def byte_pair(pad_with_end=True):
    """A tiny GPT-2 style BytePair tokenizer; its padding id is its end
    token's, 7 (not 0), as CLIP's is."""
    vocabulary = {"<|endoftext|>": 7, "a": 0, "b": 1, "ab": 2, "Ġ": 3,
                  "Ġa": 4, "Ġb": 5, "Ġab": 6}
    tokenizer = keras_hub.tokenizers.BytePairTokenizer(
        vocabulary=vocabulary, merges=["a b", "Ġ a", "Ġ b", "Ġa b"],
        unsplittable_tokens=["<|endoftext|>"])
    return mm_data.HubTokenizer(tokenizer, pad_id=7 if pad_with_end else None)


def sentence_piece():
    import sentencepiece

    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4), model_writer=proto,
        vocab_size=15, model_type="word", pad_id=0, unk_id=1, bos_id=2,
        eos_id=3, minloglevel=2)
    return keras_hub.tokenizers.SentencePieceTokenizer(
        proto=proto.getvalue())


def test_word_piece_vocabulary_is_built_offline_and_covers_typos():
    vocabulary = mm_data.build_word_piece_vocabulary(CORPUS * 2 + ["odd"])
    assert vocabulary[:4] == ["[PAD]", "[UNK]", "[START]", "[END]"]
    assert vocabulary == mm_data.build_word_piece_vocabulary(
        CORPUS * 2 + ["odd"])
    for token in ("handwritten", "seven", "h", "##d", "hand", "##en"):
        assert token in vocabulary, token
    assert len(set(vocabulary)) == len(vocabulary)
    tokenizer = mm_data.word_piece_tokenizer(vocabulary)
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.start_id,
            tokenizer.end_id) == (0, 1, 2, 3)
    # A typo is pieces of known words, never "[UNK]"; the text comes back.
    ids = tokenizer.encode(["A handwriten Seven"], max_length=10,
                           add_start_end=True)[0]
    assert ids[0] == 2 and 1 not in ids
    assert ids[list(ids).index(3) + 1:].tolist() == [0] * (
        10 - list(ids).index(3) - 1)
    assert tokenizer.decode(ids) == "a handwriten seven"
    pieces = [tokenizer.vocabulary[i] for i in ids[1:list(ids).index(3)]]
    assert pieces[:2] == ["a", "hand"] and pieces[-1] == "seven", pieces
    # A limited size keeps the characters, then the most frequent words;
    # the pieces go first.
    small = mm_data.build_word_piece_vocabulary(CORPUS, vocabulary_size=40)
    characters = [t for t in vocabulary if len(t.lstrip("#")) == 1]
    assert len(small) == 40 and set(characters) <= set(small)
    assert {"a", "by", "hand", "handwritten", "one", "seven"} <= set(small)
    assert set(small) <= set(vocabulary)
    with pytest.raises(ValueError, match="Received: vocabulary_size=5"):
        mm_data.build_word_piece_vocabulary(CORPUS, vocabulary_size=5)
    with pytest.raises(ValueError, match="6 tokens, more than `max_len"):
        tokenizer.encode(CORPUS[1], max_length=4)


@pytest.mark.parametrize("kind", ["byte_pair", "sentence_piece"])
def test_any_keras_hub_tokenizer_encodes_decodes_and_saves(kind):
    if kind == "byte_pair":
        tokenizer = byte_pair()
        texts, pad = ["ab a", "b"], 7
        expected = [[2, 4, 7, 7], [1, 7, 7, 7]]
    else:
        tokenizer = mm_data.as_tokenizer(sentence_piece())
        texts, pad = ["a handwritten seven", "the digit"], 0
        # "<pad>", "<s>" and "</s>" found by token: no attribute names them.
        assert (tokenizer.start_id, tokenizer.end_id) == (2, 3)
        expected = None
    ids = tokenizer.encode(texts, max_length=4)
    assert tokenizer.pad_id == pad and ids.dtype == np.int32
    if expected is not None:
        np.testing.assert_array_equal(ids, expected)
    assert tokenizer.decode(ids) == [t for t in texts]
    assert tokenizer.sequence_lengths(texts) == [
        int((row != pad).sum()) for row in ids]
    # JSON (vocabulary, merges or proto inline) rebuilds the same tokenizer.
    config = json.loads(json.dumps(mm_data.tokenizer_config(tokenizer)))
    restored = mm_data.tokenizer_from_config(config)
    np.testing.assert_array_equal(restored.encode(texts, 4), ids)
    assert restored.pad_id == pad


def test_hub_tokenizer_refuses_what_it_cannot_pad_right():
    padded = keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=["[PAD]", "[UNK]", "a"], sequence_length=8)
    with pytest.raises(ValueError, match="Received: sequence_length=8"):
        mm_data.HubTokenizer(padded)
    with pytest.raises(ValueError, match="Received: pad_id=None"):
        byte_pair(pad_with_end=False)
    with pytest.raises(TypeError, match="Received: tokenizer of type str"):
        mm_data.HubTokenizer("wordpiece")
    with pytest.raises(ValueError, match="Received: tokenizer='bpe'"):
        mm_data.as_tokenizer("bpe")
    with pytest.raises(ValueError, match="Received: texts=None"):
        layers.TextEncoder.from_tokenizer("wordpiece", 8, 16)
    with pytest.raises(ValueError, match="Received: start_id=None"):
        byte_pair().encode(["ab"], 4, add_start_end=True)
    with pytest.raises(ValueError, match="Received: pad_id=9"):
        layers.TextEncoder(8, 4, 16, pad_id=9)


def test_digits_with_word_pieces_decode_to_their_text_and_reload():
    dataset = mm_data.load_digits_multimodal(seed=0, tokenizer="wordpiece")
    info = dataset["info"]
    assert info["tokenizer"]["class_name"] == "HubTokenizer"
    assert (info["pad_id"], info["start_id"], info["end_id"]) == (0, 2, 3)
    assert info["vocabulary"][:4] == ["[PAD]", "[UNK]", "[START]", "[END]"]
    assert info["vocabulary_size"] == len(info["vocabulary"])
    # Saved as JSON next to the arrays, the tokenizer comes back; every
    # description (typos too: they are pieces) decodes to itself.
    info = json.loads(json.dumps(info))
    tokenizer = mm_data.tokenizer_from_config(info["tokenizer"])
    for split in ("train", "test"):
        arrays = dataset[split]
        assert arrays["text"].shape[1] == info["max_text_length"]
        assert tokenizer.decode(arrays["text"]) == list(arrays["text_raw"])
        assert 1 not in arrays["text"][:, 0]  # no unknown first word
    np.testing.assert_array_equal(
        tokenizer.encode(list(dataset["test"]["text_raw"]), 16),
        dataset["test"]["text"])
    # The word tokenizer stays the default, with the same arrays as before.
    words = mm_data.load_digits_multimodal(seed=0)
    assert words["info"]["vocabulary"] == mm_data.digits_vocabulary()
    np.testing.assert_array_equal(words["test"]["label"],
                                  dataset["test"]["label"])
    with pytest.raises(ValueError, match="Received: max_text_length=9"):
        mm_data.load_digits_multimodal(seed=0, tokenizer="wordpiece",
                                       max_text_length=9)


def test_manifest_takes_word_pieces_and_any_tokenizer(tmp_path):
    path = write_manifest(tmp_path, rows=12)
    pieces = mm_data.load_manifest(path, columns=["text", "label"],
                                   tokenizer="wordpiece", seed=0)
    tokenizer = mm_data.tokenizer_from_config(pieces["info"]["tokenizer"])
    assert tokenizer.decode(pieces["train"]["text"]) == list(
        pieces["train"]["text_raw"])
    assert pieces["info"]["max_text_length"] == 2  # "cat photo": 2 words
    # A keras-hub tokenizer as it is (wrapped on the way in).
    given = mm_data.load_manifest(path, columns=["text", "label"],
                                  tokenizer=sentence_piece(),
                                  max_text_length=5)
    info = given["info"]
    assert info["tokenizer"]["class_name"] == "HubTokenizer"
    assert info["vocabulary_size"] == 15 and info["pad_id"] == 0
    assert given["train"]["text"].shape[1] == 5
    assert (given["train"]["text"][:, 2:] == 0).all()
    with pytest.raises(ValueError, match="Received: vocabulary with"):
        mm_data.load_manifest(path, vocabulary=["<pad>", "<unk>", "<start>",
                                                "<end>"],
                              tokenizer="wordpiece")
    with pytest.raises(ValueError, match=r"row 1 .*column 'text'"):
        mm_data.load_manifest(path, columns=["text"], tokenizer="wordpiece",
                              max_text_length=1)


def test_text_encoder_masks_a_tokenizers_pad_id_and_saves(tmp_path):
    keras.utils.set_random_seed(0)
    tokenizer = byte_pair()
    encoder = layers.TextEncoder.from_tokenizer(tokenizer, max_length=6,
                                                hidden_dim=16, num_layers=1,
                                                num_heads=2)
    assert (encoder.vocabulary_size, encoder.pad_id) == (8, 7)
    ids = tokenizer.encode(["ab a b", "ab a b"], max_length=6)
    ids[1, 3:] = 7  # the same real tokens, more padding
    short = tokenizer.encode(["ab a b"], max_length=3)
    mask = keras.ops.convert_to_numpy(encoder.compute_mask(ids))
    np.testing.assert_array_equal(mask, ids != 7)
    out = keras.ops.convert_to_numpy(encoder(ids))
    np.testing.assert_allclose(out[0, :3],
                               keras.ops.convert_to_numpy(encoder(short))[0],
                               rtol=1e-5, atol=1e-5)

    model = models.FusionClassifier(
        {"text": encoder}, {"text": (6,)}, layers.ConcatFusion(16),
        num_classes=2)
    logits = keras.ops.convert_to_numpy(model({"text": ids}))
    # Padding with the pad id leaves the pooled vector, so the logits, alone.
    np.testing.assert_allclose(logits[0], logits[1], rtol=1e-5, atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.encoders["text"].pad_id == 7
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded({"text": ids})), logits,
        rtol=1e-5, atol=1e-6)
