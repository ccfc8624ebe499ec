import keras
import numpy as np
import pytest

from model_helpers import encoders, inputs_of, shapes_of
from mmkeras import losses, models

NAMES = ["audio", "image"]


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_fit_retrieve_and_save(digits, tmp_path, kind):
    train, test, info = digits
    keras.utils.set_random_seed(0)
    model = models.DualEncoder(encoders(NAMES, info), shapes_of(train, NAMES),
                               embedding_dim=8, kind=kind)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False,
                  loss=losses.ContrastiveLoss(kind=kind, learnable=True),
                  metrics=[models.RecallAtK(1)])
    history = model.fit(inputs_of(train, NAMES), np.zeros(len(train["label"])),
                        epochs=3, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert 0.0 <= history.history["recall_at_1"][-1] <= 1.0
    top, scores = model.retrieve(test["audio"], test["image"], k=3)
    assert top.shape == scores.shape == (32, 3)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    embeddings = model.encode(test["image"], "image")
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0,
                               rtol=1e-4)

    path = tmp_path / "dual.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.encode(test["image"], "image"),
                               embeddings, rtol=1e-5, atol=1e-6)


def test_recall_at_k_function():
    a = np.eye(4)
    assert models.recall_at_k(a, a, k=1) == 1.0
    assert models.recall_at_k(a, a[::-1], k=1) == 0.0
    labels = np.array([0, 1, 0, 1])
    assert models.recall_at_k(a, a[[2, 3, 0, 1]], 1, labels, labels) == 1.0


def test_needs_two_towers(digits):
    train, _, info = digits
    with pytest.raises(ValueError, match="exactly two"):
        models.DualEncoder(encoders(["image"], info), shapes_of(train, ["image"]))
