"""JAX: Keras's own `DataParallel` and `ModelParallel` distributions.

Both put every batch on a `("batch", ...)` mesh; `ModelParallel` also lays
the weights out with `layout_map()`: attention heads and feed-forward
columns on the "model" axis (Megatron-style), so that the fused attention
runs on each device's batch and head shard (`mmkeras.backend.jax_sharding`)
and the weights never need to be gathered for it.

Several hosts: call `jax.distributed.initialize()` (coordinator address,
process count and id, or the cluster's environment) in every process before
building the plan; `jax.devices()` then lists the devices of all hosts and
each process feeds its own part of every global batch (Keras splits the
batch by `jax.process_index()`).
"""

import keras

from mmkeras import distribution as base

BATCH = "batch"
MODEL = "model"

# Weight paths (regexes that Keras `re.fullmatch`es against `variable.path`)
# -> layout. Heads are
# dim 1 of the (d, heads, head_dim) projections and dim 0 of the output
# projection; the feed-forward's inner dim is split likewise; the fusion
# layers' projections are split on their output features.
_LAYOUTS = {
    r".*/(query|key|value)/kernel": (None, MODEL, None),
    r".*/(query|key|value)/bias": (MODEL, None),
    r".*/attention_output/kernel": (MODEL, None, None),
    r".*/ffn_in/kernel": (None, MODEL),
    r".*/ffn_in/bias": (MODEL,),
    r".*/ffn_out/kernel": (MODEL, None),
    r".*gated_fusion/projection_\d+/kernel": (None, MODEL),
    r".*gated_fusion/projection_\d+/bias": (MODEL,),
}


def device_mesh(model_parallel=1, devices=None):
    """A `keras.distribution.DeviceMesh` of shape (batch, model).

    Args:
        model_parallel: devices per model replica (size of the "model" axis).
        devices: the devices (default: all of `jax.devices()`).
    """
    devices = devices or keras.distribution.list_devices()
    if (not isinstance(model_parallel, int) or model_parallel < 1
            or len(devices) % model_parallel):
        raise ValueError(
            "Argument `model_parallel` must be a positive integer dividing "
            f"the number of devices ({len(devices)}). "
            f"Received: model_parallel={model_parallel!r}")
    shape = (len(devices) // model_parallel, model_parallel)
    return keras.distribution.DeviceMesh(shape, (BATCH, MODEL), devices)


def layout_map(mesh):
    """The `keras.distribution.LayoutMap` of mmkeras models on `mesh`.

    Shards attention heads and feed-forward columns over the mesh's "model"
    axis; everything else is replicated. The number of heads (and of kv
    heads) and the feed-forward width must be divisible by that axis' size.
    """
    layouts = keras.distribution.LayoutMap(mesh)
    for path, axes in _LAYOUTS.items():
        layouts[path] = axes
    return layouts


class JaxPlan(base.Plan):
    def __init__(self, mode, distribution):
        self.mode = mode
        self.distribution = distribution

    def scope(self):
        return self.distribution.scope()

    def shard(self, arrays, batch_size):
        # Keras splits every global batch over the "batch" axis itself.
        return self.even_batches(arrays, batch_size), batch_size

    def even_batches(self, arrays, batch_size):
        shards = self.distribution.device_mesh.shape[0]
        keep = base.even_rows(arrays, batch_size, shards)
        return base.take_rows(arrays, slice(0, keep))

    def describe(self):
        mesh = self.distribution.device_mesh
        sizes = dict(zip(mesh.axis_names, mesh.shape))
        kind = type(self.distribution).__name__
        first = str(mesh.devices.flat[0])  # e.g. "cpu:0"
        return (f"jax {kind} over {mesh.devices.size} "
                f"{first.split(':')[0]} devices, mesh {sizes}")


def plan(mode, model_parallel=2, devices=None):
    """`DataParallel` over all devices ("data") or `ModelParallel` on a
    (batch, model) mesh with `model_parallel` devices per replica ("model")."""
    if mode == "data":
        return JaxPlan(mode, keras.distribution.DataParallel(
            devices=devices or keras.distribution.list_devices()))
    mesh = device_mesh(model_parallel, devices)
    return JaxPlan(mode, keras.distribution.ModelParallel(
        layout_map=layout_map(mesh), batch_dim_name=BATCH))
