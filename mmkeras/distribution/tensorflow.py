"""TensorFlow: `tf.distribute.MirroredStrategy` (data parallel only).

`plan("data")` replicates the model on every local GPU (or, without a GPU,
on every logical CPU device) and lets Keras split each global batch over the
replicas: build, compile and fit inside `plan.scope()` and give `fit` the
global batch size. mmkeras's custom TF ops (fused attention, gated fusion,
...; CPU kernels loaded with `tf.load_op_library`) run inside every replica
on that replica's device, forward and backward; on GPUs the fused ops take
the `keras.ops` reference path (see `mmkeras.kernels`).

Several logical CPUs on one machine (e.g. for tests) must be configured
before TensorFlow initializes its devices:

```python
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
```

Several machines: `tf.distribute.MultiWorkerMirroredStrategy`. Start the same
script on every worker with the `TF_CONFIG` environment variable naming the
cluster and this worker's index, for example on worker 1 of 2:

```
TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
            "task": {"type": "worker", "index": 1}}' python train.py
```

then create `tf.distribute.MultiWorkerMirroredStrategy()` first thing in the
program (before any other TensorFlow op) and build, compile and fit in its
`scope()`, with the global batch size, exactly as with `MirroredStrategy`.
Every worker must call `fit` with the same data; Keras shards it. Only
worker 0 (the chief) should write the model; the others write to temporary
paths. `plan("data")` itself uses `MirroredStrategy` over this machine's
devices: pass `strategy=` to `MirroredPlan` to use a multi-worker one.

Model parallelism is not offered: Keras shards weights over devices only on
the JAX backend (`keras.distribution.ModelParallel`).
"""

import keras

from mmkeras import distribution as base


class MirroredPlan(base.Plan):
    """Data parallel training with a `tf.distribute` strategy.

    Args:
        devices: device names for `MirroredStrategy` (default: all local
            GPUs, or all logical CPUs when there is no GPU).
        strategy: a ready `tf.distribute.Strategy` to use instead (e.g. a
            `MultiWorkerMirroredStrategy`); `devices` must then be None.
    """

    mode = "data"

    def __init__(self, devices=None, strategy=None):
        import tensorflow as tf

        if strategy is not None and devices is not None:
            raise ValueError(
                "Pass either `devices` or `strategy`, not both. Received: "
                f"devices={devices!r}, strategy={strategy!r}")
        if strategy is None:
            if devices is None:
                devices = [d.name for d in tf.config.list_logical_devices("GPU")]
                devices = devices or [
                    d.name for d in tf.config.list_logical_devices("CPU")]
            devices = list(devices)
            if not devices:
                raise ValueError(
                    "Argument `devices` must name at least one device. "
                    f"Received: devices={devices!r}")
            strategy = tf.distribute.MirroredStrategy(devices)
        self.strategy = strategy
        resolver = getattr(strategy, "cluster_resolver", None)
        if resolver is not None and resolver.task_type is not None:
            # Multi-worker: one process per worker, worker 0 is the chief.
            self.rank = int(resolver.task_id or 0)
            self.world_size = max(1, len(
                resolver.cluster_spec().as_dict().get(resolver.task_type, ())))

    @property
    def num_replicas(self):
        return self.strategy.num_replicas_in_sync

    def scope(self):
        return self.strategy.scope()

    def prepare(self, model):
        _build_from_one_replica(model, self.strategy)
        return model

    def shard(self, arrays, batch_size):
        # Keras splits every global batch over the replicas itself; only keep
        # the last, partial batch divisible too, so that each replica's
        # mean loss weighs its rows as the single-device mean does.
        keep = base.even_rows(arrays, batch_size, self.num_replicas)
        return base.take_rows(arrays, slice(0, keep)), batch_size

    def describe(self):
        devices = self.strategy.extended.worker_devices
        names = ", ".join(d.rsplit("/", 1)[-1] for d in devices)
        kind = type(self.strategy).__name__
        workers = f", worker {self.rank} of {self.world_size}" \
            if self.world_size > 1 else ""
        return (f"tensorflow {kind} (data parallel) over {self.num_replicas} "
                f"replicas: {names}{workers}")

    def close(self):
        self.strategy = None


def _build_from_one_replica(model, strategy):
    """Makes Keras build `model` from one replica's batch, not their mean.

    Keras (3.15, `TensorFlowTrainer._maybe_symbolic_build`) builds a model
    created under a strategy from `strategy.reduce("MEAN", first_batch)`.
    The mean turns integer inputs (token ids) into floats, which mmkeras
    models reject ("holds token ids and must be an integer tensor"). The
    build only needs shapes and dtypes, so give it replica 0's batch.
    """
    import tensorflow as tf

    original = model._maybe_symbolic_build
    if getattr(original, "_mmkeras_one_replica", False):
        return

    def first_replica(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def build(iterator=None, data_batch=None):
        if data_batch is None and iterator is not None:
            for _, _, it in iterator:
                data_batch = keras.tree.map_structure(first_replica, next(it))
                break
        return original(data_batch=data_batch)

    build._mmkeras_one_replica = True
    # An instance attribute: only this model's fit/evaluate see the change.
    object.__setattr__(model, "_maybe_symbolic_build", build)


def plan(mode, devices=None, strategy=None):
    """`MirroredPlan` for mode "data"; "model" raises `ValueError`."""
    if mode == "model":
        raise ValueError(
            "mode='model' (model parallelism) needs the JAX backend: Keras "
            "shards weights over devices only with JAX "
            "(keras.distribution.ModelParallel). Run with KERAS_BACKEND=jax, "
            "or use mode='data' on TensorFlow. Received: mode='model', "
            "backend=tensorflow")
    if mode != "data":
        raise ValueError("Argument `mode` must be 'data' or 'model'. "
                         f"Received: mode={mode!r}")
    return MirroredPlan(devices=devices, strategy=strategy)

