"""The backend-independent parts of `mmkeras.distribution`."""

import numpy as np
import pytest

from mmkeras import distribution


def test_even_rows_keeps_whole_shards_in_the_last_batch():
    arrays = {"a": np.arange(21), "b": None}
    # 2 full batches of 8, then 5 rows: 4 of them split evenly over 2 shards.
    assert distribution.even_rows(arrays, 8, 2) == 20
    assert distribution.even_rows(arrays, 8, 4) == 20
    assert distribution.even_rows(arrays, 7, 1) == 21
    kept = distribution.take_rows(arrays, slice(0, 20))
    assert kept["b"] is None
    np.testing.assert_array_equal(kept["a"], np.arange(20))


@pytest.mark.parametrize("batch_size", [6, 0, 8.0])
def test_even_rows_rejects_a_batch_that_does_not_split(batch_size):
    with pytest.raises(ValueError, match="data-parallel shards \\(4\\)"):
        distribution.even_rows({"a": np.arange(10)}, batch_size, 4)


def test_single_device_plan_changes_nothing():
    plan = distribution.Plan()
    x = {"a": np.arange(5)}
    assert plan.shard(x, 2) == (x, 2)
    assert plan.even_batches(x, 2) is x
    assert plan.is_chief and plan.describe() == "single device"
    assert distribution.gather_batch(x["a"]) is x["a"]


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="Received: mode='pipeline'"):
        distribution.plan("pipeline")
