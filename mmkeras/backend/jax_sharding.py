"""Partitioning rules that let XLA run the fused attention on sharded arrays.

A custom call is opaque to XLA's partitioner: without a rule it gathers every
operand onto each device and runs the kernel on the whole batch. Here each
kernel call is wrapped in `jax.experimental.custom_partitioning`, so that
under `jax.jit` with sharded inputs (e.g. `keras.distribution.DataParallel`
or `ModelParallel`) every device runs the kernel on its own shard:

- batch (dim 0 of q, k, v, the mask and the outputs) may be sharded;
- heads (dim 2 of q and k/v, dim 1 of the mask and the logsumexp) may be
  sharded when the mesh axis size divides the number of kv heads K. Sharding
  N query heads and K kv heads contiguously in the same number of pieces
  keeps every query head with its kv head (head n uses kv head n // (N/K));
- sequence and head-dim sharding are not supported: those dims are gathered
  before the call (`need_replication`), which is correct, only not cheaper.

Single-device programs and `shard_map` bodies see the plain kernel call (JAX
inlines the wrapped function there). `custom_partitioning` has no batching
rule, so under `jax.vmap` the wrapper runs the plain call, whose FFI batching
folds the mapped dims into the batch.
"""

import functools
import math

import jax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def _dim_axis(sharding, dim):
    """The mesh axis (name or tuple of names) that shards `dim`, or None."""
    spec = getattr(sharding, "spec", None)
    if spec is None or dim >= len(spec):
        return None
    return spec[dim]


def _axis_size(mesh, axis):
    names = axis if isinstance(axis, tuple) else (axis,)
    return math.prod(mesh.shape[name] for name in names)


def attention_axes(mesh, q_sharding, q_shape, kv_heads):
    """(batch axis, head axis) the kernel can run sharded over, from how the
    query arrives: an axis is kept when it evenly splits its dim (the head
    axis must also split the kv heads), else that dim is gathered."""
    batch = _dim_axis(q_sharding, 0)
    if batch is not None and q_shape[0] % _axis_size(mesh, batch):
        batch = None
    heads = _dim_axis(q_sharding, 2)
    if heads is not None and (heads == batch
                              or kv_heads % _axis_size(mesh, heads)):
        heads = None
    return batch, heads


def _mask_spec(mask_shape, q_shape, batch, heads):
    # A broadcast (size-1) mask dim stays whole on every device.
    return P(batch if mask_shape[0] == q_shape[0] > 1 else None,
             heads if mask_shape[1] == q_shape[2] > 1 else None, None, None)


def _mask_factors(mask_shape, q_shape, k_shape):
    sizes = (q_shape[0], q_shape[2], q_shape[1], k_shape[1])
    return " ".join(
        name if got == want else f"m{i}"
        for i, (name, got, want) in enumerate(zip("bnts", mask_shape, sizes))
    )


def _shapes(value_types):
    return [tuple(t.shape) for t in value_types]


# Sequence and head-dim factors: gathered before the call (in order of first
# appearance in the rules, as Shardy requires).
_REPLICATED = {"need_replication_factors": ("t", "h", "s")}


def _forward_rule(mesh, value_types, result_types):
    q, k, _, mask = _shapes(value_types)
    rule = (f"b t n h, b s k h, b s k h, {_mask_factors(mask, q, k)} "
            "-> b t n h, b n t")
    return rule, _REPLICATED


def _backward_rule(mesh, value_types, result_types):
    q, k, _, mask = _shapes(value_types)[:4]
    rule = (f"b t n h, b s k h, b s k h, {_mask_factors(mask, q, k)}, "
            "b t n h, b n t, b t n h -> b t n h, b s k h, b s k h")
    return rule, _REPLICATED


def _specs(mesh, arg_shapes):
    q, k, _, mask = arg_shapes[:4]
    batch, heads = attention_axes(mesh, q.sharding, q.shape, k.shape[2])
    seq = P(batch, None, heads, None)
    return seq, P(batch, heads, None), _mask_spec(mask.shape, q.shape,
                                                  batch, heads)


def _named(mesh, *specs):
    return tuple(NamedSharding(mesh, spec) for spec in specs)


@functools.cache
def partitioned_forward(local):
    """`local(q, k, v, mask) -> (out, lse)` as a partitioned call."""

    def partition(mesh, arg_shapes, result_shape):
        seq, lse, mask = _specs(mesh, arg_shapes)
        return (mesh, local, _named(mesh, seq, lse),
                _named(mesh, seq, seq, seq, mask))

    fn = custom_partitioning(local)
    fn.def_partition(partition, sharding_rule=_forward_rule)
    return _plain_under_vmap(fn, local)


@functools.cache
def partitioned_backward(local):
    """`local(q, k, v, mask, out, lse, dout) -> (dq, dk, dv)` as a
    partitioned call."""

    def partition(mesh, arg_shapes, result_shape):
        seq, lse, mask = _specs(mesh, arg_shapes)
        return (mesh, local, _named(mesh, seq, seq, seq),
                _named(mesh, seq, seq, seq, mask, seq, lse, seq))

    fn = custom_partitioning(local)
    fn.def_partition(partition, sharding_rule=_backward_rule)
    return _plain_under_vmap(fn, local)


def _plain_under_vmap(partitioned, plain):
    fn = jax.custom_batching.custom_vmap(partitioned)

    @fn.def_vmap
    def _rule(axis_size, in_batched, *args):
        outs = jax.vmap(plain, in_axes=[0 if b else None for b in in_batched])(
            *args)
        return outs, tuple(True for _ in outs)

    return fn
