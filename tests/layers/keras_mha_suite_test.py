"""Keras's own MultiHeadAttention tests, run on FusedMultiHeadAttention.

The test file ships inside the Keras wheel
(`keras/src/layers/attention/multi_head_attention_test.py`). At collection
time it is read from the installed Keras, every `layers.MultiHeadAttention`
is replaced by `FusedMultiHeadAttention` (including the base class of the
subclasses the file defines), the copy is written to a temporary directory
and imported, and its test class is collected here as `TestKerasSuite`.
Nothing of Keras's file is kept in this repository: a new Keras brings its
new tests with it.
"""

import importlib.util
import pathlib
import re
import sys
import tempfile
import unittest

import keras
import numpy as np
import pytest

import mmkeras  # noqa: F401  import order: see mmkeras/_import_guard.py
from mmkeras.layers import FusedMultiHeadAttention

KERAS_TEST_MODULE = "keras.src.layers.attention.multi_head_attention_test"
ORIGINAL = "layers.MultiHeadAttention"
REPLACEMENT = "FusedMultiHeadAttention"


def keras_test_source():
    """Returns the text of Keras's MHA test file from the installed wheel."""
    spec = importlib.util.find_spec(KERAS_TEST_MODULE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"The installed Keras ships no `{KERAS_TEST_MODULE}`: the "
            "drop-in test needs Keras's own test file."
        )
    return pathlib.Path(spec.origin).read_text()


def swapped_source(source):
    """Keras's test source with FusedMultiHeadAttention for every MHA."""
    pattern = r"\b" + re.escape(ORIGINAL) + r"\b"
    swapped, count = re.subn(pattern, REPLACEMENT, source)
    # A Keras release that spelled the class differently would otherwise run
    # its tests on its own layer and pass without testing ours.
    if count < 20 or re.search(r"\bMultiHeadAttention\(", swapped.replace(
            REPLACEMENT + "(", "")):
        raise AssertionError(
            f"Expected Keras's test file to construct `{ORIGINAL}` "
            f"throughout. Received: {count} occurrences, and others left."
        )
    header = "from mmkeras.layers import FusedMultiHeadAttention\n"
    return header + swapped


def _load_swapped_module():
    directory = pathlib.Path(tempfile.mkdtemp(prefix="mmkeras_keras_mha_"))
    path = directory / "fused_multi_head_attention_keras_test.py"
    path.write_text(swapped_source(keras_test_source()))
    spec = importlib.util.spec_from_file_location(
        "fused_multi_head_attention_keras_test", path
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_module = _load_swapped_module()


class TestKerasSuite(_module.MultiHeadAttentionTest):
    """Every test of Keras's file, on FusedMultiHeadAttention."""


def test_the_copy_tests_our_layer():
    # The generated copy must build our class wherever Keras built its own,
    # including as the base of the subclass Keras defines in its file.
    source = swapped_source(keras_test_source())
    assert "class Sub(FusedMultiHeadAttention)" in source
    assert "layers.MultiHeadAttention" not in source
    assert _module.FusedMultiHeadAttention is mmkeras.layers.FusedMultiHeadAttention


def test_swap_refuses_a_file_without_the_class():
    with pytest.raises(AssertionError, match="Received: 0 occurrences"):
        swapped_source("import keras\n")


@pytest.mark.parametrize(
    "name", ["test_masking_not_causal", "test_masking_causal",
             "test_masking_with_different_shapes",
             "test_causal_only_skipped_for_subclass"]
)
def test_keras_tests_run_the_fused_op(name):
    # Passing Keras's tests proves nothing if they ran Keras's attention.
    mmkeras.kernels.reset_usage()
    result = unittest.TestResult()
    TestKerasSuite(name).run(result)
    assert result.wasSuccessful(), result.failures + result.errors
    assert "fused_attention" in mmkeras.kernels.usage()


def _embedded(tokens, vocabulary, seed):
    embedding = keras.layers.Embedding(vocabulary, 8, mask_zero=True)
    embedding.build((None, None))
    rng = np.random.default_rng(seed)
    embedding.set_weights([rng.standard_normal((vocabulary, 8))])
    return embedding(np.array(tokens))


@pytest.mark.parametrize("use_causal_mask", [False, True])
def test_implicit_masks_differ_from_keras_only_on_rows_without_keys(
        use_causal_mask):
    # Keras's test_masking inputs. Padded query positions have no key to
    # attend to: Keras averages the values there, the fused op returns
    # zeros (its documented contract). Every other row equals Keras's.
    query_tokens = [[1, 2, 3, 0, 0], [3, 3, 1, 1, 2], [1, 0, 0, 0, 0]]
    value_tokens = [[5, 4, 0], [3, 0, 0], [2, 1, 1]]
    keras_mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=2)
    fused = FusedMultiHeadAttention(num_heads=2, key_dim=2)
    query = _embedded(query_tokens, 4, seed=0)
    value = _embedded(value_tokens, 6, seed=1)
    expected = keras_mha(query, value, use_causal_mask=use_causal_mask)
    fused(_embedded(query_tokens, 4, 0), _embedded(value_tokens, 6, 1))
    fused.set_weights(keras_mha.get_weights())
    got = fused(_embedded(query_tokens, 4, 0), _embedded(value_tokens, 6, 1),
                use_causal_mask=use_causal_mask)
    has_key = np.array(query_tokens) != 0
    got, expected = (keras.ops.convert_to_numpy(x) for x in (got, expected))
    np.testing.assert_allclose(got[has_key], expected[has_key],
                               rtol=1e-5, atol=1e-6)
    # A row without keys: zero attention, so only the output projection's
    # bias remains (Keras's differs).
    bias = keras.ops.convert_to_numpy(fused.output_dense.bias)
    np.testing.assert_allclose(got[~has_key],
                               np.broadcast_to(bias, got[~has_key].shape),
                               atol=1e-6)
    assert not np.allclose(got[~has_key], expected[~has_key], atol=1e-3)
