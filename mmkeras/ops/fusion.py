"""Fused cores of two fusion layers: `gated_fusion` (Gated Multimodal Unit)
and `low_rank_fusion` (LMF).

Shape letters: M modalities, B batch, D features, R rank, O output features.
The layers run the per-modality matmuls; these ops take their stacked
results. Each op has a `keras.ops` reference here (the fallback and the
oracle) and native kernels (kernels/cpu/fusion.h states the contract).
"""

import keras
from keras import ops

from mmkeras.kernel_selection import resolve_implementation
from mmkeras.ops._checks import check_floating
from mmkeras.ops._checks import check_modality_mask
from mmkeras.ops._checks import check_rank
from mmkeras.ops._checks import compute_dtype
from mmkeras.ops._checks import dtype_of
from mmkeras.ops._checks import shape_str
from mmkeras.ops._dispatch import call_op
from mmkeras.ops._dispatch import run_fused


def _present(modality_mask, axes):
    """(B, M) mask -> (M, B) with size-1 `axes` inserted, for broadcasting."""
    present = ops.transpose(modality_mask)
    for axis in axes:
        present = ops.expand_dims(present, axis)
    return present


class _FusionOp(keras.Operation):
    """The Keras operation behind a fusion op (symbolic and eager). It takes
    float tensors, then an optional (B, M) modality mask. Subclasses set
    `check` and `reference` (functions of those arguments), `op_name`
    (the public op) and `batch_axis` (the output has
    the first tensor's shape from that axis on)."""

    def __init__(self, implementation=None, name=None):
        super().__init__(name=name)
        self.implementation = resolve_implementation(implementation)

    def compute_output_spec(self, *args):
        self.check(*args)
        x = args[0]
        return keras.KerasTensor(x.shape[self.batch_axis:], dtype=x.dtype)

    def call(self, *args):
        *tensors, modality_mask = args
        tensors = [ops.convert_to_tensor(x) for x in tensors]
        if modality_mask is not None:
            modality_mask = ops.convert_to_tensor(modality_mask)
        self.check(*tensors, modality_mask)
        return run_fused(self.op_name, self.implementation, tensors,
                         (modality_mask,), self.reference)


# ---------------------------------------------------------------- gated fusion


def _check_gated(projections, gate_logits, modality_mask):
    check_rank("projections", projections, 3, "(modalities, batch, features)")
    check_rank("gate_logits", gate_logits, 3, "(modalities, batch, features)")
    check_floating([("projections", projections), ("gate_logits", gate_logits)])
    if tuple(projections.shape) != tuple(gate_logits.shape):
        raise ValueError(
            "Arguments `projections` and `gate_logits` must have the same "
            f"shape (M, B, D). Received: projections.shape="
            f"{shape_str(projections)}, gate_logits.shape="
            f"{shape_str(gate_logits)}"
        )
    if projections.shape[0] == 0:
        raise ValueError(
            "Argument `projections` must hold at least one modality. "
            f"Received: projections.shape={shape_str(projections)}"
        )
    check_modality_mask(modality_mask, projections.shape[1],
                        projections.shape[0])


def gated_fusion_reference(projections, gate_logits, modality_mask=None):
    """The `keras.ops` reference of `gated_fusion` (validated inputs)."""
    dtype = dtype_of(projections)
    compute = compute_dtype(projections)
    h, g = (ops.cast(x, compute) for x in (projections, gate_logits))
    weighted = ops.sigmoid(g) * ops.tanh(h)
    if modality_mask is not None:
        present = _present(modality_mask, (-1,))  # (M, B, 1)
        weighted = ops.where(present, weighted, ops.zeros_like(weighted))
    return ops.cast(ops.sum(weighted, axis=0), dtype)


class GatedFusionOp(_FusionOp):
    """The Keras operation behind `gated_fusion` (symbolic and eager)."""

    check = staticmethod(_check_gated)
    reference = staticmethod(gated_fusion_reference)
    op_name = "gated_fusion"
    batch_axis = 1  # (M, B, D) -> (B, D)


def gated_fusion(projections, gate_logits, modality_mask=None,
                 implementation=None):
    """The element-wise core of a Gated Multimodal Unit, fused.

    For modalities m with pre-activation projections h_m and gate logits g_m
    (the layer's per-modality matmuls, already done), returns

        out[b, d] = sum over present m of sigmoid(g[m, b, d]) * tanh(h[m, b, d])

    Each modality has its own independent sigmoid gate (for M = 2 this is
    the GMU of Arevalo et al. 2017 with a separate gate per modality, rather
    than a shared z and 1 - z). An absent modality contributes 0; a sample
    with no modality present gets zeros, and zero gradients. Differentiable
    (gradients for `projections` and `gate_logits`) on every backend; works
    eagerly, in `jax.jit`, `tf.function` and `model.fit`.

    Shape letters: M modalities, B batch, D features.

    Args:
        projections: (M, B, D) float16, bfloat16 or float32 tensor (float64
            runs the reference): the pre-activation features h_m.
        gate_logits: (M, B, D) tensor of the same dtype: the pre-activation
            gates g_m.
        modality_mask: optional boolean (B, M) tensor; True = modality m is
            present in sample b. None means all present.
        implementation: None (from `MMKERAS_KERNELS`, default "auto"),
            "auto", "native" or "reference"; see `mmkeras.kernels`.

    Returns:
        (B, D) tensor in the dtype of `projections`.

    Example:

    >>> import numpy as np
    >>> import mmkeras
    >>> h = np.random.rand(3, 4, 8).astype("float32")
    >>> g = np.random.rand(3, 4, 8).astype("float32")
    >>> present = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1]], bool)
    >>> out = mmkeras.ops.gated_fusion(h, g, modality_mask=present)
    >>> tuple(out.shape)
    (4, 8)
    """
    return call_op(GatedFusionOp(implementation=implementation), projections,
                gate_logits, modality_mask)


# ------------------------------------------------------------- low-rank fusion


def _check_low_rank(factors, modality_mask):
    check_rank("factors", factors, 4, "(modalities, rank, batch, features)")
    check_floating([("factors", factors)])
    M, R = factors.shape[0], factors.shape[1]
    if M is None or M < 1 or (R is not None and R < 1):
        raise ValueError(
            "Argument `factors` must have a known number of modalities >= 1 "
            f"and a rank >= 1. Received: factors.shape={shape_str(factors)}"
        )
    check_modality_mask(modality_mask, factors.shape[2], M)


def low_rank_fusion_reference(factors, modality_mask=None):
    """The `keras.ops` reference of `low_rank_fusion` (validated inputs)."""
    dtype = dtype_of(factors)
    f = ops.cast(factors, compute_dtype(factors))
    if modality_mask is not None:
        present = _present(modality_mask, (1, -1))  # (M, 1, B, 1)
        f = ops.where(present, f, ops.ones_like(f))
    # An explicit product: its gradient is exact where a factor is zero.
    product = f[0]
    for m in range(1, f.shape[0]):
        product = product * f[m]
    return ops.cast(ops.sum(product, axis=0), dtype)


class LowRankFusionOp(_FusionOp):
    """The Keras operation behind `low_rank_fusion` (symbolic and eager)."""

    check = staticmethod(_check_low_rank)
    reference = staticmethod(low_rank_fusion_reference)
    op_name = "low_rank_fusion"
    batch_axis = 2  # (M, R, B, O) -> (B, O)


def low_rank_fusion(factors, modality_mask=None, implementation=None):
    """The product-and-sum core of low-rank multimodal fusion (LMF), fused.

    With `factors[m, r] = W_m^(r) [z_m; 1]` (the layer's modality-specific
    low-rank projections, already done), returns

        out[b, o] = sum_r prod_m f'[m, r, b, o]

    where f' is `factors` for a present modality and 1 (the neutral factor)
    for an absent one. A sample with no modality present therefore gets R in
    every feature (each product is empty) and zero gradients. The gradient
    is exact where factors are zero (prefix/suffix products, no division).
    Differentiable on every backend; works eagerly, in `jax.jit`,
    `tf.function` and `model.fit`.

    Shape letters: M modalities, R rank, B batch, O output features.

    Args:
        factors: (M, R, B, O) float16, bfloat16 or float32 tensor (float64
            runs the reference); M must be known statically.
        modality_mask: optional boolean (B, M) tensor; True = modality m is
            present in sample b. None means all present.
        implementation: None (from `MMKERAS_KERNELS`, default "auto"),
            "auto", "native" or "reference"; see `mmkeras.kernels`.

    Returns:
        (B, O) tensor in the dtype of `factors`.

    Example:

    >>> import numpy as np
    >>> import mmkeras
    >>> f = np.random.rand(2, 4, 5, 16).astype("float32")
    >>> out = mmkeras.ops.low_rank_fusion(f)
    >>> tuple(out.shape)
    (5, 16)
    """
    return call_op(LowRankFusionOp(implementation=implementation), factors,
                modality_mask)
