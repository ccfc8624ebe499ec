"""`mmkeras.distribution` on TensorFlow: MirroredStrategy over 2 logical CPUs
reaches the single-device weights, with the custom ops on every replica."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from mmkeras import distribution

HERE = os.path.dirname(os.path.abspath(__file__))
ON_TF = keras.backend.backend() == "tensorflow"


def load(path, name):
    with np.load(path) as f:
        keys = sorted((k for k in f.files if k.startswith(name + "_")),
                      key=lambda k: int(k.rsplit("_", 1)[1]))
        return [f[k] for k in keys]


@pytest.mark.skipif(not ON_TF, reason="MirroredStrategy needs the tensorflow "
                    "backend (runs in the KERAS_BACKEND=tensorflow pass)")
def test_mirrored_matches_single_device_with_native_kernels(tmp_path):
    out = tmp_path / "weights.npz"
    env = dict(os.environ, KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "tensorflow_worker.py"), str(out)],
        check=False, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]

    with np.load(out) as f:
        report = json.loads(str(f["report"]))
    assert report["replicas"] == 2
    assert "MirroredStrategy" in report["describe"]
    assert "CPU:1" in report["describe"]
    assert report["rows"] == 34  # the partial last batch kept even: 35 -> 34

    # The fused kernels ran native, forward and backward, on both replicas.
    assert report["usage"] == {"fused_attention": ["native"],
                               "gated_fusion": ["native"],
                               "contrastive_loss": ["native"]}
    for op in ("MmkerasAttentionForward", "MmkerasAttentionBackward",
               "MmkerasGatedFusionForward", "MmkerasGatedFusionBackward"):
        devices = report["devices"].get(op, [])
        assert [d.rsplit("/", 1)[-1] for d in devices] == \
            ["device:CPU:0", "device:CPU:1"], (op, report["devices"])

    initial, single = load(out, "initial"), load(out, "single")
    mirrored = load(out, "mirrored")
    assert len(initial) == len(single) == len(mirrored) > 10
    # Training moved the weights far more than the tolerance, so a wrong
    # gradient scale (sum instead of mean, one replica's rows only) fails.
    moved = max(np.max(np.abs(s - i)) for s, i in zip(single, initial))
    assert moved > 1e-2
    for s, m in zip(single, mirrored):
        np.testing.assert_allclose(m, s, rtol=1e-4, atol=1e-5)

    # The contrastive loss of a dual encoder couples the rows of the batch:
    # it matches one device only with the replicas' embeddings gathered.
    dual_single = load(out, "dual_single")
    dual_mirrored = load(out, "dual_mirrored")
    assert len(dual_single) == len(dual_mirrored) > 10
    assert max(np.max(np.abs(s - i)) for s, i in
               zip(dual_single, load(out, "dual_initial"))) > 1e-2
    for s, m in zip(dual_single, dual_mirrored):
        np.testing.assert_allclose(m, s, rtol=1e-4, atol=1e-5)


def test_model_mode_needs_jax():
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        distribution.plan("model", backend="tensorflow")


@pytest.mark.skipif(not ON_TF, reason="builds a tf.distribute strategy "
                    "(runs in the KERAS_BACKEND=tensorflow pass)")
def test_shard_keeps_batches_divisible(monkeypatch):
    plan = distribution.plan("data")
    monkeypatch.setattr(type(plan), "num_replicas", 2)
    x = {"a": np.arange(21), "b": None}
    (x2, y2), batch_size = plan.shard((x, np.arange(21)), 8)
    # Keras splits each global batch itself; the last one (5 rows) -> 4.
    assert batch_size == 8 and x2["b"] is None
    np.testing.assert_array_equal(x2["a"], np.arange(20))
    np.testing.assert_array_equal(y2, np.arange(20))
    with pytest.raises(ValueError, match="multiple of the number of data-parallel shards"):
        plan.shard((x,), 9)
    plan.close()
