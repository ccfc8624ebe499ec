"""`mmkeras train`: every task end to end (one short epoch), and --data."""

import json
import os
import subprocess
import sys

import pytest
from manifest_helpers import write_manifest

from mmkeras import cli
from mmkeras.train import TASKS

EXPECTED = {
    "classify": ("accuracy", ["confusion_matrix.png", "modality_accuracy.png"]),
    "caption": ("caption_digit_accuracy", ["captions.png"]),
    "retrieve": ("recall_at_1", ["retrieval.png"]),
    "text2image": ("generated_digit_accuracy", ["text2image.png"]),
}


@pytest.mark.parametrize("task", TASKS)
def test_each_task_writes_model_metrics_and_plots(task, tmp_path, capsys):
    out = tmp_path / task
    code = cli.main(["train", "--task", task, "--epochs", "1",
                     "--max-train-samples", "96", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    key, plots = EXPECTED[task]
    assert key in printed and "kernels that ran" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics[key] <= 1.0
    assert metrics["kernels"]["fused_attention"] == ["native"]
    for name in ["model.keras", "training_curves.png", *plots]:
        assert (out / name).stat().st_size > 1000, name
    assert not (tmp_path / f"{task}.partial").exists()


def test_caption_with_word_pieces(tmp_path):
    """`--tokenizer wordpiece`: keras-hub's WordPieceTokenizer over a
    vocabulary built from the training descriptions; captions start and end
    with its own ids, and the model keeps its padding id."""
    import keras

    out = tmp_path / "caption"
    code = cli.main(["train", "--task", "caption", "--epochs", "1",
                     "--max-train-samples", "96", "--out", str(out),
                     "--tokenizer", "wordpiece"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tokenizer"] == "wordpiece"
    assert 0.0 <= metrics["caption_well_formed"] <= 1.0
    model = keras.saving.load_model(out / "model.keras")
    # [START] and [END] are ids 2 and 3 of the WordPiece vocabulary too; the
    # vocabulary is larger than the 75 words of the word tokenizer's.
    assert (model.start_token_id, model.end_token_id) == (2, 3)
    assert model.vocabulary_size > 75
    with pytest.raises(SystemExit):
        cli.main(["train", "--tokenizer", "bpe"])


def test_train_on_a_manifest(tmp_path):
    out = tmp_path / "out"
    code = cli.main(["train", "--task", "classify", "--epochs", "1",
                     "--data", str(write_manifest(tmp_path)),
                     "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["modalities"] == ["image", "text", "audio"]


def test_retrieve_on_a_manifest_with_few_test_rows(tmp_path):
    # 24 rows leave fewer than 5 test images: the top-5 plot takes fewer.
    out = tmp_path / "out"
    code = cli.main(["train", "--task", "retrieve", "--epochs", "1",
                     "--data", str(write_manifest(tmp_path)),
                     "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["recall_at_1"] <= 1.0
    assert (out / "retrieval.png").exists()


def test_missing_file_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path, missing=True)
    code = cli.main(["train", "--data", str(manifest), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "nowhere.png" in err and "row" in err and "image" in err
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_bad_arguments_are_rejected():
    for argv in (["train", "--epochs", "0"], ["train", "--task", "dance"],
                 ["train", "--fusion", "magic"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2


def test_help_runs_for_each_command():
    for command in ("info", "train"):
        proc = subprocess.run([sys.executable, "-m", "mmkeras.cli", command,
                               "--help"], capture_output=True, text=True,
                              env=dict(os.environ))
        assert proc.returncode == 0 and "usage" in proc.stdout


def test_distribute_data(tmp_path, capsys):
    """`--distribute data` with the backend's engine: one process on
    jax/tensorflow; on torch two gloo processes under torchrun, of which
    only the chief writes the results."""
    import keras

    out = tmp_path / "classify"
    args = ["train", "--task", "classify", "--epochs", "1",
            "--max-train-samples", "96", "--out", str(out),
            "--distribute", "data"]
    if keras.backend.backend() == "torch":
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run",
             "--nproc_per_node", "2", "--master_port", str(_free_port()),
             "-m", "mmkeras.cli", *args],
            env=dict(os.environ, KERAS_BACKEND="torch"), cwd=tmp_path,
            capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("wrote the model") == 1  # the chief only
    else:
        assert cli.main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    engine = {"jax": "DataParallel", "tensorflow": "MirroredStrategy",
              "torch": "DistributedDataParallel (gloo), process 0 of 2"}
    assert engine[keras.backend.backend()] in metrics["distribution"]
    assert metrics["kernels"]["fused_attention"] == ["native"]
    assert (out / "model.keras").stat().st_size > 1000


def test_distribute_model_needs_jax(tmp_path, capsys):
    import keras

    if keras.backend.backend() == "jax":
        pytest.skip("model parallelism is the JAX path; its training is "
                    "tested on 4 virtual devices in tests/distribution")
    code = cli.main(["train", "--epochs", "1", "--max-train-samples", "32",
                     "--out", str(tmp_path / "o"), "--distribute", "model"])
    assert code == 2
    assert "jax" in capsys.readouterr().err.lower()
    assert not (tmp_path / "o").exists()


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distribute_data_on_torch_needs_torchrun(tmp_path, capsys,
                                                 monkeypatch):
    import keras

    if keras.backend.backend() != "torch":
        pytest.skip("torch DDP runs one process per device under torchrun; "
                    "other backends distribute inside one process")
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    code = cli.main(["train", "--epochs", "1", "--out", str(tmp_path / "o"),
                     "--distribute", "data"])
    assert code == 2
    assert "torchrun" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
