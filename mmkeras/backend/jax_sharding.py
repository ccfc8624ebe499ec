"""Partitioning rules that let XLA run the fused kernels on sharded arrays.

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
  before the call (`need_replication`), which is correct, only not cheaper;
- `gated_fusion` and `low_rank_fusion` are element-wise over (batch,
  features): both dims may be sharded. `contrastive_loss` pairs every row
  with every other, so it keeps XLA's default for custom calls (its small
  (B, d) operands are gathered, as CLIP gathers embeddings).

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


def _even_axis(mesh, sharding, dim, size):
    axis = _dim_axis(sharding, dim)
    return axis if axis is not None and size % _axis_size(mesh, axis) == 0 \
        else None


def attention_axes(mesh, q_sharding, q_shape, kv_heads):
    """(batch axis, head axis) the kernel can run sharded over, from how the
    query arrives: an axis is kept when it evenly splits its dim (the head
    axis must also split the kv heads), else that dim is gathered."""
    batch = _even_axis(mesh, q_sharding, 0, q_shape[0])
    heads = _even_axis(mesh, q_sharding, 2, kv_heads)
    return batch, (None if heads == batch else heads)


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


def _forward_rule(shapes):
    q, k, _, mask = shapes
    rule = (f"b t n h, b s k h, b s k h, {_mask_factors(mask, q, k)} "
            "-> b t n h, b n t")
    return rule, _REPLICATED


def _backward_rule(shapes):
    q, k, _, mask = shapes[:4]
    rule = (f"b t n h, b s k h, b s k h, {_mask_factors(mask, q, k)}, "
            "b t n h, b n t, b t n h -> b t n h, b s k h, b s k h")
    return rule, _REPLICATED


def _attention_specs(mesh, arg_shapes):
    q, k, _, mask = arg_shapes[:4]
    batch, heads = attention_axes(mesh, q.sharding, q.shape, k.shape[2])
    seq = P(batch, None, heads, None)
    return seq, P(batch, heads, None), _mask_spec(mask.shape, q.shape,
                                                  batch, heads)


def _forward_specs(mesh, arg_shapes):
    seq, lse, mask = _attention_specs(mesh, arg_shapes)
    return (seq, lse), (seq, seq, seq, mask)


def _backward_specs(mesh, arg_shapes):
    seq, lse, mask = _attention_specs(mesh, arg_shapes)
    return (seq, seq, seq), (seq, seq, seq, mask, seq, lse, seq)


# ------------------------------------------------------------- fusion family
# gated_fusion: h, g (M, B, D) and a (B, M) presence mask (or a (1, 1)
# placeholder) -> (B, D); low_rank_fusion: f (M, R, B, O) -> (B, O). Both are
# element-wise over (B, D|O): any even split of those two dims works.


def _fusion_axes(mesh, x, batch_dim):
    batch = _even_axis(mesh, x.sharding, batch_dim, x.shape[batch_dim])
    feature = _even_axis(mesh, x.sharding, batch_dim + 1,
                         x.shape[batch_dim + 1])
    return batch, (None if feature == batch else feature)


def _fusion_mask(mask_shape, batch_size):
    return "b m" if mask_shape[0] == batch_size > 1 else "x y"


def _mask_p(mask_shape, batch_size, batch):
    return P(batch if mask_shape[0] == batch_size > 1 else None, None)


def _gated_rule(shapes, backward):
    h, _, mask = shapes[:3]
    inputs = f"m b d, m b d, {_fusion_mask(mask, h[1])}"
    rule = (f"{inputs}, b d -> m b d, m b d" if backward
            else f"{inputs} -> b d")
    return rule, {"need_replication_factors": ("m",)}


def _gated_specs(mesh, arg_shapes, backward):
    h, _, mask = arg_shapes[:3]
    batch, feature = _fusion_axes(mesh, h, 1)
    stacked, out = P(None, batch, feature), P(batch, feature)
    inputs = (stacked, stacked, _mask_p(mask.shape, h.shape[1], batch))
    if backward:
        return (stacked, stacked), (*inputs, out)
    return (out,), inputs


def _low_rank_rule(shapes, backward):
    f, mask = shapes[:2]
    inputs = f"m r b o, {_fusion_mask(mask, f[2])}"
    rule = f"{inputs}, b o -> m r b o" if backward else f"{inputs} -> b o"
    return rule, {"need_replication_factors": ("m", "r")}


def _low_rank_specs(mesh, arg_shapes, backward):
    f, mask = arg_shapes[:2]
    batch, feature = _fusion_axes(mesh, f, 2)
    stacked, out = P(None, None, batch, feature), P(batch, feature)
    inputs = (stacked, _mask_p(mask.shape, f.shape[2], batch))
    if backward:
        return (stacked,), (*inputs, out)
    return (out,), inputs


# ------------------------------------------------------------------ wrappers


def _named(mesh, specs):
    return tuple(NamedSharding(mesh, spec) for spec in specs)


def _partitioned(local, rule, specs):
    """`local` (a kernel call on local arrays) as a partitioned call:
    `rule(shapes)` gives the Shardy rule, `specs(mesh, arg_shapes)` the
    (result, operand) partition specs each device runs `local` on."""

    def partition(mesh, arg_shapes, result_shape):
        results, operands = specs(mesh, arg_shapes)
        return mesh, local, _named(mesh, results), _named(mesh, operands)

    fn = custom_partitioning(local)
    fn.def_partition(partition, sharding_rule=lambda mesh, values, results:
                     rule(_shapes(values)))
    return _plain_under_vmap(fn, local)


@functools.cache
def partitioned_forward(local):
    """`local(q, k, v, mask) -> (out, lse)` as a partitioned call."""
    return _partitioned(local, _forward_rule, _forward_specs)


@functools.cache
def partitioned_backward(local):
    """`local(q, k, v, mask, out, lse, dout) -> (dq, dk, dv)` as a
    partitioned call."""
    return _partitioned(local, _backward_rule, _backward_specs)


@functools.cache
def partitioned_gated(local, backward=False):
    """gated_fusion's `local(h, g, mask) -> (out,)` (forward) or
    `local(h, g, mask, dout) -> (dh, dg)` (backward), partitioned."""
    return _partitioned(
        local, functools.partial(_gated_rule, backward=backward),
        functools.partial(_gated_specs, backward=backward))


@functools.cache
def partitioned_low_rank(local, backward=False):
    """low_rank_fusion's `local(f, mask) -> (out,)` (forward) or
    `local(f, mask, dout) -> (df,)` (backward), partitioned."""
    return _partitioned(
        local, functools.partial(_low_rank_rule, backward=backward),
        functools.partial(_low_rank_specs, backward=backward))


def _plain_under_vmap(partitioned, plain):
    fn = jax.custom_batching.custom_vmap(partitioned)

    @fn.def_vmap
    def _rule(axis_size, in_batched, *args):
        outs = jax.vmap(plain, in_axes=[0 if b else None for b in in_batched])(
            *args)
        return outs, tuple(True for _ in outs)

    return fn
