"""Small models and data shared by the model tests."""

import numpy as np

from mmkeras import layers
from mmkeras.data import load_digits_multimodal

HIDDEN = 16


def load_small_digits():
    """A small slice of the built-in tri-modal digits data."""
    data = load_digits_multimodal(seed=0, audio_length=800)
    train = {k: v[:128] for k, v in data["train"].items()}
    test = {k: v[:32] for k, v in data["test"].items()}
    return train, test, data["info"]


def shapes_of(split, names):
    return {name: split[name].shape[1:] for name in names}


def make_encoder(name, info):
    if name == "image":
        return layers.ImageEncoder(HIDDEN, patch_size=4, num_layers=1,
                                   num_heads=2)
    if name == "text":
        return layers.TextEncoder(len(info["vocabulary"]),
                                  info["max_text_length"], HIDDEN,
                                  num_layers=1, num_heads=2)
    return layers.AudioEncoder(info["sample_rate"], HIDDEN, num_layers=1,
                               num_heads=2)


def encoders(names, info):
    return {name: make_encoder(name, info) for name in names}


def inputs_of(split, names):
    return {name: split[name] for name in names}


def assert_same(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                               atol=1e-6)
