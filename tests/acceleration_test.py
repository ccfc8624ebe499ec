"""mmkeras.accelerate on Keras models and keras-hub backbones and tasks.

keras-hub models are built from small configs with random weights (no
network). Without keras-hub installed the keras-hub tests fail, naming the
fix: `bash scripts/setup.sh` installs it.
"""

import keras
import numpy as np
import pytest

import mmkeras
from mmkeras import acceleration


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _assert_float32_close(got, expected):
    # Float32 rounding: the fused kernel sums in another order than Keras.
    np.testing.assert_allclose(_numpy(got), _numpy(expected),
                               rtol=1e-5, atol=2e-5)


def _ran_fused_attention(function):
    mmkeras.kernels.reset_usage()
    result = function()
    return result, "fused_attention" in mmkeras.kernels.usage()


@keras.saving.register_keras_serializable(package="mmkeras_tests")
class CustomAttention(keras.layers.MultiHeadAttention):
    def _compute_attention(self, query, key, value, attention_mask=None,
                           training=None, return_attention_scores=False):
        return super()._compute_attention(query, key, value, attention_mask,
                                          training, return_attention_scores)


@keras.saving.register_keras_serializable(package="mmkeras_tests")
class RegisteredAttention(keras.layers.MultiHeadAttention):
    """A user's MHA subclass that keeps Keras's attention."""


def _functional_model():
    tokens = keras.Input((7,), dtype="int32")
    # No implicit mask: Keras masks padded query rows entirely, and a row
    # without keys is where the fused op differs by contract (zeros).
    x = keras.layers.Embedding(20, 16)(tokens)
    x = x + keras.layers.MultiHeadAttention(4, 4, name="self")(
        x, x, use_causal_mask=True)
    x = RegisteredAttention(2, 8, dropout=0.1, name="dropout")(
        x, x)
    x = CustomAttention(2, 8, name="custom")(x, x)
    pooled = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(3)(pooled))


def _tokens():
    rng = np.random.default_rng(0)
    return rng.integers(0, 20, (3, 7)).astype("int32")


def test_functional_model_same_outputs_saves_and_restores(tmp_path):
    keras.utils.set_random_seed(0)
    model = _functional_model()
    tokens = _tokens()
    expected = model.predict(tokens, verbose=0)

    report = acceleration.accelerate(model)
    changed = {e.path.split("/")[-1]: e.note for e in report.changed}
    kept = {e.path.split("/")[-1]: e.note for e in report.unchanged}
    assert set(changed) == {"self", "dropout"}
    assert "while training" in changed["dropout"]
    assert "overrides _compute_attention" in kept["custom"]
    assert "fused  " in str(report) and "kept   " in str(report)

    # predict() was traced before: accelerate must make it retrace.
    got, fused = _ran_fused_attention(
        lambda: model.predict(tokens, verbose=0))
    assert fused
    _assert_float32_close(got, expected)
    assert type(model.get_layer("self")).__name__ == "MultiHeadAttention"
    assert isinstance(model.get_layer("self"), keras.layers.MultiHeadAttention)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    # Saved under Keras's own class: the file loads without mmkeras.
    assert type(loaded.get_layer("self")) is keras.layers.MultiHeadAttention
    assert type(loaded.get_layer("dropout")) is RegisteredAttention
    _assert_float32_close(loaded(tokens), expected)

    assert acceleration.accelerate(model).changed == []  # already done
    assert acceleration.restore(model) == 2
    assert type(model.get_layer("self")) is keras.layers.MultiHeadAttention
    got, fused = _ran_fused_attention(
        lambda: model.predict(tokens, verbose=0))
    assert not fused
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_fit_runs_the_fused_op_and_trains():
    keras.utils.set_random_seed(0)
    model = _functional_model()
    acceleration.accelerate(model)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    tokens = np.repeat(_tokens(), 8, axis=0)
    target = np.random.default_rng(1).standard_normal((24, 3))
    mmkeras.kernels.reset_usage()
    history = model.fit(tokens, target, epochs=6, batch_size=8, verbose=0)
    assert "fused_attention" in mmkeras.kernels.usage()
    losses = history.history["loss"]
    assert losses[-1] < losses[0], losses


def test_layers_the_kernels_cannot_run_are_left_alone():
    # Built alone: Keras's own JAX attention fails on value_dim != key_dim
    # inside a model.
    layer = keras.layers.MultiHeadAttention(2, 8, value_dim=4)
    layer.build((None, 5, 16), (None, 5, 16))
    assert "value_dim=4 differs from key_dim=8" in (
        acceleration.accelerate(layer).unchanged[0].note)
    layer = keras.layers.MultiHeadAttention(2, 8, attention_axes=(1, 2))
    layer.build((None, 3, 5, 16), (None, 3, 5, 16))
    assert "several axes" in acceleration.accelerate(layer).unchanged[0].note
    fused = mmkeras.layers.FusedMultiHeadAttention(2, 8)
    assert "already" in acceleration.accelerate(fused).unchanged[0].note


def test_bad_arguments_name_the_argument():
    with pytest.raises(TypeError, match="Argument `model`.*Received"):
        acceleration.accelerate("bert")
    with pytest.raises(ValueError, match="implementation"):
        acceleration.accelerate(_functional_model(), implementation="fast")


# keras-hub models, small configs, random weights.


@pytest.fixture(scope="module")
def keras_hub():
    try:
        import keras_hub
    except ImportError as error:
        pytest.fail(
            "keras-hub is needed by the mmkeras.accelerate tests and is not "
            "importable (`bash scripts/setup.sh` installs it without its "
            f"tensorflow-text dependency). Received: {error!r}"
        )
    return keras_hub


def _compare(model, inputs):
    keras.utils.set_random_seed(0)
    expected = model(inputs, training=False)
    report = acceleration.accelerate(model)
    got, fused = _ran_fused_attention(lambda: model(inputs, training=False))
    assert fused
    keras.tree.map_structure(_assert_float32_close, got, expected)
    return report


def test_bert_backbone(keras_hub):
    model = keras_hub.models.BertBackbone(
        vocabulary_size=30, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=12, dropout=0.1)
    padding = np.ones((2, 12), bool)
    padding[1, 7:] = False
    inputs = {"token_ids": np.arange(24).reshape(2, 12) % 30,
              "segment_ids": np.zeros((2, 12), "int32"),
              "padding_mask": padding}
    report = _compare(model, inputs)
    assert len(report.changed) == 2 and not report.unchanged
    # BERT's attention dropout (0.1) needs Keras's path while training.
    assert all("dropout" in entry.note for entry in report.changed)


def test_vit_and_clip_backbones(keras_hub):
    models = keras_hub.models
    rng = np.random.default_rng(0)
    vit = models.ViTBackbone(image_shape=(16, 16, 3), patch_size=8,
                             num_layers=1, num_heads=2, hidden_dim=16,
                             mlp_dim=32)
    report = _compare(vit, rng.random((2, 16, 16, 3)).astype("float32"))
    assert len(report.changed) == 1
    clip = models.CLIPBackbone(
        vision_encoder=models.CLIPVisionEncoder(
            patch_size=8, hidden_dim=16, num_layers=1, num_heads=2,
            intermediate_dim=32, image_shape=(16, 16, 3)),
        text_encoder=models.CLIPTextEncoder(
            vocabulary_size=30, embedding_dim=16, hidden_dim=16,
            num_layers=1, num_heads=2, intermediate_dim=32,
            max_sequence_length=8),
        projection_dim=8)
    report = _compare(clip, {
        "images": rng.random((2, 16, 16, 3)).astype("float32"),
        "token_ids": rng.integers(0, 30, (2, 8)).astype("int32"),
    })
    assert len(report.changed) == 2  # one vision, one (causal) text layer


def _greedy_generate_same_tokens(causal_lm, vocabulary_size):
    causal_lm.compile(sampler="greedy")
    rng = np.random.default_rng(0)
    token_ids = np.zeros((2, 10), "int32")
    padding_mask = np.zeros((2, 10), bool)
    for row, length in enumerate((3, 5)):
        token_ids[row, :length] = rng.integers(1, vocabulary_size, length)
        padding_mask[row, :length] = True
    prompt = {"token_ids": token_ids, "padding_mask": padding_mask}
    expected = causal_lm.generate(prompt, stop_token_ids=None)
    report = acceleration.accelerate(causal_lm)
    got, fused = _ran_fused_attention(
        lambda: causal_lm.generate(prompt, stop_token_ids=None))
    assert fused
    np.testing.assert_array_equal(_numpy(got["token_ids"]),
                                  _numpy(expected["token_ids"]))
    # The prompt's tokens alone would pass with generation broken.
    assert (_numpy(got["padding_mask"]).sum(axis=1) == 10).all()
    return report


def test_gpt2_causal_lm_generate(keras_hub):
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=40, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=10)
    causal_lm = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    report = _greedy_generate_same_tokens(causal_lm, 40)
    assert [e.class_name for e in report.changed] == [
        "CachedMultiHeadAttention"] * 2


def test_gemma_causal_lm_generate(keras_hub):
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=40, num_layers=2, num_query_heads=4,
        num_key_value_heads=2, hidden_dim=16, intermediate_dim=32,
        head_dim=8)
    causal_lm = keras_hub.models.GemmaCausalLM(backbone, preprocessor=None)
    report = _greedy_generate_same_tokens(causal_lm, 40)
    assert [e.class_name for e in report.changed] == [
        "CachedGemmaAttention"] * 2


def test_soft_capped_gemma_attention_is_left_alone(keras_hub):
    from keras_hub.src.models.gemma.gemma_attention import CachedGemmaAttention

    layer = CachedGemmaAttention(head_dim=8, num_query_heads=2,
                                 num_key_value_heads=1, logit_soft_cap=50.0)
    report = acceleration.accelerate(layer)
    assert not report.changed
    assert "logit_soft_cap=50.0" in report.unchanged[0].note
