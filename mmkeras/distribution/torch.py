"""PyTorch: `torch.nn.parallel.DistributedDataParallel` under `torchrun`.

As in Keras's guide "Multi-GPU distributed training with PyTorch": one
process per device, a `torch.distributed` process group (gloo on the CPU,
nccl on NVIDIA GPUs), the Keras model (a `torch.nn.Module` on this backend)
wrapped in `DistributedDataParallel`, and each process fed its own part of
every global batch. DDP averages the gradients over the processes in the
backward pass; mmkeras adds no communication of its own. The fused kernels
run in every process on its own rows (they are `torch.library` ops).

Launch the same script once per device with `torchrun`, which sets `RANK`,
`WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`:

```
torchrun --nproc_per_node 4 train.py                     # one machine
torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 \\
    --master_addr host0 --master_port 29500 train.py      # on each machine
```

In the script (see `mmkeras.distribution`): create the plan first (it picks
this process's GPU), build and compile the model, `model = plan.prepare(model)`,
`(x, y), batch_size = plan.shard((x, y), global_batch_size)`, then
`model.fit(x, y, batch_size=batch_size)`; write files only where
`plan.is_chief`; `plan.close()` at the end.

`fit` sends the training forward pass through the DDP wrapper (see
`MultimodalModel.train_step`), so only mmkeras models can be prepared.
Evaluation, prediction and the logged metrics run on each process's own
rows, without communication. `fit(shuffle=True)` shuffles each process's
rows separately: still data parallel training, but not the same batches as
a single process would see (`shuffle=False` gives exactly those).

Model parallelism is not offered: Keras shards weights over devices only on
the JAX backend (`keras.distribution.ModelParallel`).
"""

import datetime
import os

import numpy as np

from mmkeras import distribution as base

#: Attribute of a prepared model holding its DDP wrapper; read by
#: `MultimodalModel.train_step`.
DDP_ATTRIBUTE = "_ddp_module"

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DDPPlan(base.Plan):
    """Data parallel training in a `torch.distributed` process group.

    Reads the process layout from the `torchrun` environment and joins (or
    creates) the default process group.

    Args:
        backend: "gloo" or "nccl" (default: nccl with CUDA, else gloo).
        timeout_s: how long collective operations wait for the other
            processes before failing (default: torch's).
        find_unused_parameters: passed to `DistributedDataParallel`; needed
            only if some trainable weights get no gradient in a step.

    Raises:
        ValueError: not started by `torchrun` (no `WORLD_SIZE` etc.).
    """

    mode = "data"

    def __init__(self, backend=None, timeout_s=None,
                 find_unused_parameters=False):
        import torch
        import torch.distributed as dist

        missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
        if missing:
            # Not silently single-process: a user who meant to train on N
            # devices would get one without noticing.
            raise ValueError(
                "Data parallel training on the torch backend runs one process "
                "per device, started by torchrun, e.g. `torchrun "
                "--nproc_per_node 2 train.py` (or `python -m "
                "torch.distributed.run ...`). Missing environment "
                f"variables: {', '.join(missing)}. To train in one process, "
                "do not ask for a distribution.")
        self.rank = int(os.environ["RANK"])
        self.world_size = int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank))
        self.find_unused_parameters = find_unused_parameters
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend not in ("gloo", "nccl"):
            raise ValueError("Argument `backend` must be 'gloo' or 'nccl'. "
                             f"Received: backend={backend!r}")
        if backend == "nccl":
            # Keras puts tensors on "cuda", i.e. the current device: make it
            # this process's GPU before anything is built.
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        self._owns_group = not dist.is_initialized()
        if self._owns_group:
            kwargs = {}
            if timeout_s is not None:
                kwargs["timeout"] = datetime.timedelta(seconds=timeout_s)
            dist.init_process_group(backend=backend, init_method="env://",
                                    rank=self.rank,
                                    world_size=self.world_size, **kwargs)
        self.backend = dist.get_backend()
        self._models = []

    def prepare(self, model):
        """Wraps `model` in DDP and attaches the wrapper for `fit`.

        DDP broadcasts rank 0's weights to every process here, so all
        replicas start equal even if they were initialized differently.
        """
        from torch.nn.parallel import DistributedDataParallel

        from mmkeras.models.base import MultimodalModel

        if not isinstance(model, MultimodalModel):
            # Keras's own train_step would call the model, not the wrapper,
            # and DDP would then never average the gradients.
            raise TypeError(
                "plan.prepare() on the torch backend takes an mmkeras model "
                "(a MultimodalModel, whose train_step runs through DDP). "
                f"Received: {type(model).__name__}")
        if DDP_ATTRIBUTE in model.__dict__:
            return model
        if not model.built:
            model.build()
        ddp = DistributedDataParallel(
            model,
            device_ids=[self.local_rank] if self.device.type == "cuda" else None,
            find_unused_parameters=self.find_unused_parameters)
        # Set in __dict__, not through nn.Module.__setattr__: registered as
        # a submodule, the wrapper would make a cycle (model -> DDP -> model)
        # in module traversal, and Keras would try to track it as a layer.
        object.__setattr__(model, DDP_ATTRIBUTE, ddp)
        self._models.append(model)
        return model

    def shard(self, arrays, batch_size):
        """This process's rows of every global batch of `batch_size`.

        Process `rank` gets rows `[s + rank*l, s + (rank+1)*l)` of the global
        batch starting at row `s`, where `l = batch_size // world_size`; `fit`
        is then given `batch_size=l`. The last, partial global batch is cut
        to a multiple of `world_size` rows (and split the same way), so
        every process runs the same number of steps of equal size and the
        processes together see the single-process batches.

        Raises:
            ValueError: `batch_size` is not divisible by the world size.
        """
        world = self.world_size
        keep = base.even_rows(arrays, batch_size, world)
        rows = []
        for start in range(0, keep, batch_size):
            local = min(batch_size, keep - start) // world
            first = start + self.rank * local
            rows.append(np.arange(first, first + local))
        rows = np.concatenate(rows) if rows else np.zeros((0,), "int64")
        return base.take_rows(arrays, rows), batch_size // world

    def describe(self):
        return (f"torch DistributedDataParallel ({self.backend}), process "
                f"{self.rank} of {self.world_size} on {self.device}")

    def close(self):
        import torch.distributed as dist

        for model in self._models:
            model.__dict__.pop(DDP_ATTRIBUTE, None)
        self._models = []
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self._owns_group = False


def plan(mode, **kwargs):
    """`DDPPlan` for mode "data"; "model" raises `ValueError`."""
    if mode == "model":
        raise ValueError(
            "mode='model' (model parallelism) needs the JAX backend: Keras "
            "shards weights over devices only with JAX "
            "(keras.distribution.ModelParallel). Run with KERAS_BACKEND=jax, "
            "or use mode='data' on torch. Received: mode='model', "
            "backend=torch")
    if mode != "data":
        raise ValueError("Argument `mode` must be 'data' or 'model'. "
                         f"Received: mode={mode!r}")
    return DDPPlan(**kwargs)
