"""Data for mmkeras: the built-in tri-modal digits set and user manifests.

All loaders return plain numpy arrays (no `tf.data`), so they work on every
Keras backend; `MultimodalDataset` batches them for `model.fit`.
"""

from mmkeras.data.digits import CLASS_NAMES
from mmkeras.data.digits import MultimodalDataset
from mmkeras.data.digits import digits_vocabulary
from mmkeras.data.digits import load_digits_multimodal
from mmkeras.data.manifest import load_manifest
from mmkeras.data.manifest import read_wav
from mmkeras.data.text import END
from mmkeras.data.text import PAD
from mmkeras.data.text import SPECIAL_TOKENS
from mmkeras.data.text import START
from mmkeras.data.text import TOKENIZERS
from mmkeras.data.text import UNK
from mmkeras.data.text import HubTokenizer
from mmkeras.data.text import WordTokenizer
from mmkeras.data.text import as_tokenizer
from mmkeras.data.text import build_vocabulary
from mmkeras.data.text import build_word_piece_vocabulary
from mmkeras.data.text import tokenize
from mmkeras.data.text import tokenizer_config
from mmkeras.data.text import tokenizer_from_config
from mmkeras.data.text import word_piece_tokenizer

__all__ = [
    "CLASS_NAMES",
    "END",
    "PAD",
    "SPECIAL_TOKENS",
    "START",
    "TOKENIZERS",
    "UNK",
    "HubTokenizer",
    "MultimodalDataset",
    "WordTokenizer",
    "as_tokenizer",
    "build_vocabulary",
    "build_word_piece_vocabulary",
    "digits_vocabulary",
    "load_digits_multimodal",
    "load_manifest",
    "read_wav",
    "tokenize",
    "tokenizer_config",
    "tokenizer_from_config",
    "word_piece_tokenizer",
]
