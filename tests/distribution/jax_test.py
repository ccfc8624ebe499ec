"""JAX scale-out on 4 virtual CPU devices: with Keras DataParallel and a 2x2
ModelParallel every mmkeras model trains to the single-device weights, and
the fused kernels run on each device's shard (attention: batch and heads,
without gathering q, k or v; fusion: batch and features)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="JAX distribution runs in the jax pass (it needs 4 virtual devices "
           "set before JAX starts, so it runs in its own process)")

HERE = Path(__file__).parent


def run_worker(what):
    env = dict(os.environ, KERAS_BACKEND="jax",
               XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=os.pathsep.join([str(HERE.parent),
                                           os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(HERE / "jax_worker.py"), what],
                          env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained():
    return run_worker("train")


KERNELS = {"FusionClassifier": {"fused_attention", "gated_fusion"},
           "EncoderDecoder": {"fused_attention"},
           "DualEncoder": {"fused_attention", "contrastive_loss"}}


@pytest.mark.parametrize("model", sorted(KERNELS))
@pytest.mark.parametrize("mode", ["data", "model"])
def test_distributed_training_matches_single_device(trained, model, mode):
    result = trained[f"{model}/{mode}"]
    assert result["changed"] > 1e-4  # the steps did move the weights
    assert result["max_diff"] <= 1e-5 * max(1.0, result["max_scale"])
    assert result["kernels"] == {op: ["native"] for op in KERNELS[model]}
    specs = set(result["layouts"].values())
    if mode == "model":
        assert "{'batch': 2, 'model': 2}" in result["describe"]
        assert specs == {"P(None, 'model', None)"}
    else:
        assert "{'batch': 4}" in result["describe"]
        assert specs == {"P(None, None, None)"}


@pytest.fixture(scope="module")
def compiled():
    return run_worker("hlo")


def test_attention_hlo_has_no_gather_of_qkv(compiled):
    result = compiled
    # The kernel's outputs and gradients: the same numbers as on one device.
    assert result["error"] == 0.0
    # The loss sums per-shard partial sums: float32 rounding only.
    assert result["loss_error"] < 1e-6
    hlo = result["hlo"]
    assert "all-gather" not in hlo
    calls = [line for line in hlo.splitlines()
             if re.search(r'custom_call_target="mmkeras_attention_(fwd|bwd)"',
                          line)]
    assert len(calls) == 2, calls
    for line in calls:
        # Global q (4, 17, 4, 8) and k/v (4, 9, 2, 8) arrive as their
        # (batch/2, heads/2) shards.
        operands = line.split("operand_layout_constraints={")[1]
        assert operands.startswith("f32[2,17,2,8]"), line
        assert "f32[2,9,1,8]" in operands and "[4," not in operands, line


def test_pallas_attention_under_the_same_partitioning(compiled):
    # The GPU kernels' sharded forward+backward (in Pallas' interpreter)
    # equals their single-device result.
    assert compiled["pallas_error"] < 1e-5


def test_fusion_kernels_run_on_batch_and_feature_shards(compiled):
    assert compiled["fusion_error"] < 1e-5
    hlo = compiled["fusion_hlo"]
    assert "all-gather" not in hlo
    calls = [line for line in hlo.splitlines()
             if "custom_call_target=\"mmkeras_" in line]
    assert len(calls) == 4, calls  # gated and low-rank, forward and backward
    for line in calls:
        operands = line.split("operand_layout_constraints={")[1]
        # h (3, 8, 6) and f (3, 2, 8, 6) arrive as (batch/2, features/2).
        assert operands.startswith(("f32[3,4,3]", "f32[3,2,4,3]")), line


def test_model_mode_checks_the_mesh():
    from mmkeras.distribution import jax as jax_distribution
    with pytest.raises(ValueError, match="model_parallel"):
        jax_distribution.device_mesh(model_parallel=3,
                                     devices=["cpu:0", "cpu:1"])
