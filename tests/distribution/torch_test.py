"""`mmkeras.distribution` on torch: DDP in 2 gloo processes started by
torchrun reaches the weights of one process on the same global batches."""

import json
import os
import signal
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
from model_helpers import encoders, inputs_of, load_small_digits, shapes_of

from mmkeras import distribution, layers, losses, models

HERE = os.path.dirname(os.path.abspath(__file__))
ON_TORCH = keras.backend.backend() == "torch"
SKIP_REASON = ("uses torch.distributed: needs the torch backend (runs in "
               "the KERAS_BACKEND=torch pass)")

NAMES = ["image", "text"]
ROWS, BATCH, LR = 38, 16, 0.5  # 3 steps; the last global batch: 6 rows, 3 each
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                 "MASTER_PORT")


def data(kind="classifier"):
    train, _, info = load_small_digits()
    rows = {k: v[:ROWS] for k, v in train.items()}
    y = rows["label"] if kind == "classifier" else np.zeros(ROWS)
    return inputs_of(rows, NAMES), y, info, train


def build(info, train, kind="classifier"):
    """The small FusionClassifier, or a CLIP-style DualEncoder ("dual"),
    whose loss couples the rows of the global batch."""
    keras.utils.set_random_seed(0)
    if kind == "classifier":
        model = models.FusionClassifier(
            encoders(NAMES, info), shapes_of(train, NAMES),
            layers.GatedFusion(16), num_classes=10)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        model = models.DualEncoder(encoders(NAMES, info),
                                   shapes_of(train, NAMES), embedding_dim=8)
        loss = losses.ContrastiveLoss(kind="softmax", learnable=True)
    model.build()
    model.compile(optimizer=keras.optimizers.SGD(LR), jit_compile=False,
                  loss=loss)
    return model


def weights(model):
    return [keras.ops.convert_to_numpy(v.value) for v in model.trainable_weights]


def load(path, name):
    with np.load(path) as f:
        keys = sorted((k for k in f.files if k.startswith(name + "_")),
                      key=lambda k: int(k.rsplit("_", 1)[1]))
        return [f[k] for k in keys]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(out_dir, nproc=2, timeout=180, kind="classifier"):
    """Runs torch_worker.py under torchrun; kills the whole process group
    (torchrun and its workers) if it hangs."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env.update(KERAS_BACKEND="torch", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run",
               "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()),
               os.path.join(HERE, "torch_worker.py"), str(out_dir), kind]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun timed out after {timeout} s:\n{output[-4000:]}")
    return proc.returncode, output


USAGE = {"classifier": {"fused_attention": ["native"],
                        "gated_fusion": ["native"]},
         "dual": {"fused_attention": ["native"],
                  "contrastive_loss": ["native"]}}


@pytest.mark.skipif(not ON_TORCH, reason=SKIP_REASON)
@pytest.mark.parametrize("kind", ["classifier", "dual"])
def test_ddp_two_processes_match_one_process(tmp_path, kind):
    returncode, output = run_torchrun(tmp_path, kind=kind)
    assert returncode == 0, output[-4000:]

    facts = []
    for rank in (0, 1):
        with np.load(tmp_path / f"rank{rank}.npz") as f:
            facts.append(json.loads(str(f["facts"])))
    for rank, fact in enumerate(facts):
        assert fact["rank"] == rank and fact["world_size"] == 2
        assert "gloo" in fact["describe"]
        assert fact["batch_size"] == BATCH // 2
        assert fact["local_rows"] == ROWS // 2  # 8 + 8 + 3
        assert fact["usage"] == USAGE[kind]

    x, y, info, train = data(kind)
    single = build(info, train, kind)
    initial = weights(single)
    single.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0)
    expected = weights(single)
    moved = max(np.max(np.abs(e - i)) for e, i in zip(expected, initial))
    assert moved > 1e-2  # far above the tolerance below

    for rank in (0, 1):
        path = tmp_path / f"rank{rank}.npz"
        for a, b in zip(load(path, "initial"), initial):
            np.testing.assert_array_equal(a, b)
        trained = load(path, "trained")
        assert len(trained) == len(expected) > 10
        for got, want in zip(trained, expected):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not ON_TORCH, reason=SKIP_REASON)
def test_data_plan_outside_torchrun_says_how_to_launch(monkeypatch):
    for var in TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="torchrun --nproc_per_node"):
        distribution.plan("data", backend="torch")


def test_model_mode_needs_jax():
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        distribution.plan("model", backend="torch")


@pytest.fixture
def one_process_plan(monkeypatch):
    """A real DDP plan in a gloo group of one (this process)."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    from mmkeras.distribution import torch as torch_distribution

    plan = torch_distribution.plan("data", timeout_s=30)
    yield plan
    plan.close()


@pytest.mark.skipif(not ON_TORCH, reason=SKIP_REASON)
def test_shard_gives_each_rank_its_rows(one_process_plan):
    plan = one_process_plan
    x = {"a": np.arange(21), "none": None}
    plan.world_size = 2  # what rank 1 of 2 would get
    plan.rank = 1
    (x1, y1), local = plan.shard((x, np.arange(21) * 10), 8)
    # global batches [0, 8), [8, 16), [16, 21) cut to [16, 20)
    assert local == 4 and x1["none"] is None
    np.testing.assert_array_equal(x1["a"], [4, 5, 6, 7, 12, 13, 14, 15, 18, 19])
    np.testing.assert_array_equal(y1, x1["a"] * 10)
    with pytest.raises(ValueError, match="multiple of the number of data-parallel shards"):
        plan.shard((x,), 7)


@pytest.mark.skipif(not ON_TORCH, reason=SKIP_REASON)
def test_prepare_attaches_ddp_and_close_detaches(one_process_plan, tmp_path):
    plan = one_process_plan
    assert plan.describe() == \
        "torch DistributedDataParallel (gloo), process 0 of 1 on cpu"
    with pytest.raises(TypeError, match="mmkeras model"):
        plan.prepare(keras.Sequential([keras.layers.Dense(2)]))
    x, y, info, train = data()
    model = plan.prepare(build(info, train))
    ddp = model.__dict__["_ddp_module"]
    assert ddp.module is model
    # not registered as a submodule (that would make a cycle)
    assert all(m is not ddp for m in model.modules())
    assert plan.prepare(model).__dict__["_ddp_module"] is ddp  # once only
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0)
    # the chief saves while the wrapper is attached
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-5,
                               atol=1e-6)
    plan.close()
    assert "_ddp_module" not in model.__dict__
