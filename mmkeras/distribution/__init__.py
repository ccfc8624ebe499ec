"""Scale-out on the engines Keras users already have.

`plan(mode)` returns a `Plan` for the current Keras backend; mmkeras adds no
communication layer of its own:

- jax: `keras.distribution.DataParallel` / `ModelParallel` (with
  `layout_map()` for the attention and fusion weights). The fused kernels are
  partitioned by XLA: every device runs them on its own batch and head shard.
- tensorflow: `tf.distribute.MirroredStrategy` (data only).
- torch: `torch.nn.parallel.DistributedDataParallel` in a process group
  started by `torchrun` (gloo on the CPU, nccl on GPUs; data only).

A training script uses a plan the same way on every backend:

```python
plan = mmkeras.distribution.plan("data")
with plan.scope():                       # build, compile and fit inside
    model = build_and_compile()
    model.build()                        # weights exist before `prepare`
    model = plan.prepare(model)          # torch: attaches DDP
    (x, y), batch_size = plan.shard((x, y), global_batch_size)
    model.fit(x, y, batch_size=batch_size)
# Predict and evaluate outside the scope: the trained weights stay where
# they are and the inputs need not split evenly over the devices.
if plan.is_chief:
    model.save("model.keras")
plan.close()
```
"""

import contextlib

import keras

MODES = ("data", "model")


class Plan:
    """How one training run is spread over devices or processes.

    The defaults describe a single process on one device; each backend
    module overrides what its engine needs.

    Attributes:
        mode: "data" or "model".
        rank: index of this process (0 except under torchrun).
        world_size: number of processes.
    """

    mode = None
    rank = 0
    world_size = 1

    @property
    def is_chief(self):
        """True in the process that prints and writes results."""
        return self.rank == 0

    def scope(self):
        """Context to build, compile and fit the model in."""
        return contextlib.nullcontext()

    def prepare(self, model):
        """Called with the built and compiled model; returns the model."""
        return model

    def shard(self, arrays, batch_size):
        """This process's part of `arrays` (a nest of arrays with a common
        first dim) for a global batch of `batch_size`, and the per-process
        batch size to give to `fit`. Batch i of this process holds rows
        `[i*batch_size + rank*local, i*batch_size + (rank+1)*local)`, so the
        processes together see exactly the single-device batches."""
        return arrays, batch_size

    def even_batches(self, arrays, batch_size):
        """`arrays` trimmed so that every batch of `batch_size`, the last
        one included, splits evenly over the data-parallel devices (for
        validation data, which every process sees whole). Identity where
        the engine takes uneven batches."""
        return arrays

    def describe(self):
        """One line for logs: engine, devices, mode."""
        return "single device"

    def close(self):
        """Releases what the plan set up (distribution, process group)."""


def num_rows(arrays):
    """The common first dim of a nest of arrays (None entries skipped)."""
    return len(next(a for a in keras.tree.flatten(arrays) if a is not None))


def take_rows(arrays, rows):
    """`arrays` (a nest; None entries kept) indexed by `rows` on dim 0."""
    return keras.tree.map_structure(
        lambda a: None if a is None else a[rows], arrays)


def even_rows(arrays, batch_size, shards):
    """How many leading rows of `arrays` to keep so that every batch of
    `batch_size` rows, the last one included, splits evenly in `shards`.

    Raises:
        ValueError: `batch_size` is not a positive multiple of `shards`.
    """
    if not isinstance(batch_size, int) or batch_size < 1 or batch_size % shards:
        raise ValueError(
            "The global batch size must be a positive multiple of the number "
            f"of data-parallel shards ({shards}). "
            f"Received: batch_size={batch_size!r}")
    n = num_rows(arrays)
    return n - (n % batch_size) % shards


def gather_batch(x):
    """`x`'s rows from every data-parallel replica, in replica order.

    Losses that couple the rows of a batch (the contrastive losses) call it
    so that every replica sees the global batch, as on one device; the
    gradient flows back to each replica's own rows through the engine's
    collective (TF: `ReplicaContext.all_gather`; torch:
    `torch.distributed.nn.functional.all_gather`, only while gradients are
    recorded, i.e. in DDP training steps: evaluation runs per process on its
    own data). On one device and on JAX, whose arrays are already global,
    `x` itself.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if (tf.distribute.has_strategy() and context is not None
                and context.num_replicas_in_sync > 1):
            gathered = context.all_gather(x, axis=0)
            # all_gather forgets the static shape; the row width is known.
            gathered.set_shape([None, *x.shape[1:]])
            return gathered
    elif backend == "torch":
        import torch
        import torch.distributed as dist

        if (dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1 and torch.is_grad_enabled()):
            from torch.distributed.nn.functional import all_gather

            return torch.cat(all_gather(x), dim=0)
    return x


def replica_share(loss):
    """This replica's share of a scalar loss: `loss / replicas` under a
    `tf.distribute` strategy, `loss` elsewhere.

    tf.distribute sums the replicas' gradients; Keras divides the losses it
    reduces itself by the number of replicas, but returns a loss that is
    already a scalar (one per batch, like the contrastive losses) as it is.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            return loss * (1.0 / replicas)
    return loss


def plan(mode, backend=None, **options):
    """The distribution plan for `mode` on `backend` (default: Keras').

    Args:
        mode: "data" (replicate the model, split every batch) or "model"
            (shard the weights too; JAX only, as in Keras).
        backend: "jax", "tensorflow" or "torch"; default the current one.
        **options: passed to the backend's `plan` (jax: `model_parallel`,
            `devices`; tensorflow: `devices`, `strategy`; torch: `backend`,
            `timeout_s`, `find_unused_parameters`).

    Returns:
        A `Plan`.
    """
    if mode not in MODES:
        raise ValueError(f"Argument `mode` must be one of {MODES}. "
                         f"Received: mode={mode!r}")
    backend = backend or keras.backend.backend()
    if backend == "jax":
        from mmkeras.distribution import jax as impl
    elif backend == "tensorflow":
        from mmkeras.distribution import tensorflow as impl
    elif backend == "torch":
        from mmkeras.distribution import torch as impl
    else:
        raise ValueError("Argument `backend` must be one of jax, tensorflow, "
                         f"torch. Received: backend={backend!r}")
    return impl.plan(mode, **options)
