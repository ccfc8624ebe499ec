"""`contrastive_loss`: CLIP (softmax) and SigLIP (sigmoid) losses of a dual
encoder without the B x B logit matrix.

Shape letters: B batch (number of pairs), D embedding features. The
`keras.ops` reference here is the fallback and the oracle; the native kernels
(kernels/cpu/contrastive.h states the contract) compute the logits in tiles
and never store them.
"""

import keras
from keras import ops

from mmkeras.kernel_selection import resolve_implementation
from mmkeras.ops._checks import check_floating
from mmkeras.ops._checks import check_rank
from mmkeras.ops._checks import compute_dtype
from mmkeras.ops._checks import dtype_of
from mmkeras.ops._checks import same
from mmkeras.ops._checks import shape_str
from mmkeras.ops._dispatch import call_op
from mmkeras.ops._dispatch import run_fused

KINDS = ("softmax", "sigmoid")


def _check_kind(kind):
    if kind not in KINDS:
        raise ValueError(
            "Argument `kind` must be 'softmax' or 'sigmoid'. "
            f"Received: kind={kind!r}"
        )


def _scalar(x):
    """Python numbers become float32 scalars; tensors pass through."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return ops.convert_to_tensor(float(x), "float32")
    return x


def _check_inputs(a, b, logit_scale, logit_bias):
    check_rank("a", a, 2, "(batch, features)")
    check_rank("b", b, 2, "(batch, features)")
    check_floating([("a", a), ("b", b)])
    if not (same(a.shape[0], b.shape[0]) and same(a.shape[1], b.shape[1])):
        raise ValueError(
            "Arguments `a` and `b` must have the same shape (B, D). "
            f"Received: a.shape={shape_str(a)}, b.shape={shape_str(b)}"
        )
    if a.shape[0] == 0:
        raise ValueError(
            "Argument `a` must hold at least one pair. "
            f"Received: a.shape={shape_str(a)}"
        )
    for name, x in (("logit_scale", logit_scale), ("logit_bias", logit_bias)):
        if x is None:
            continue
        if tuple(x.shape) not in ((), (1,)):
            raise ValueError(
                f"Argument `{name}` must be a scalar (shape () or (1,)). "
                f"Received: {name}.shape={shape_str(x)}"
            )
        check_floating([(name, x)])


def contrastive_loss_reference(a, b, logit_scale, logit_bias=None,
                               kind="softmax"):
    """The `keras.ops` reference of `contrastive_loss` (validated inputs;
    `logit_scale` and `logit_bias` of shape ()). Materializes the logits."""
    dtype = dtype_of(a)
    compute = compute_dtype(a)
    a, b, scale = (ops.cast(x, compute) for x in (a, b, logit_scale))
    dots = ops.matmul(a, ops.transpose(b))
    if kind == "softmax":
        # logsumexp_j L[i, j] - L[i, i] = logsumexp_j s (S[i, j] - S[i, i]):
        # the bias cancels, and subtracting the diagonal before scaling keeps
        # the gradient of the scale well conditioned (differentiating
        # s * S directly cancels large diagonal terms in float32).
        diagonal = ops.diagonal(dots)
        rows = scale * (dots - ops.expand_dims(diagonal, 1))
        cols = scale * (dots - ops.expand_dims(diagonal, 0))
        loss = ops.mean(
            ops.logsumexp(rows, axis=1) + ops.logsumexp(cols, axis=0)
        ) / 2
        if logit_bias is not None:  # in the graph, with its zero gradient
            loss = loss + 0 * ops.cast(logit_bias, compute)
        return ops.cast(loss, dtype)
    logits = scale * dots
    if logit_bias is not None:
        logits = logits + ops.cast(logit_bias, compute)
    batch = ops.shape(a)[0]
    # -log sigmoid(z L) = softplus(-z L), z = 1 on the diagonal, else -1.
    signs = 2 * ops.eye(batch, dtype=compute) - 1
    loss = ops.sum(ops.softplus(-signs * logits)) / ops.cast(batch, compute)
    return ops.cast(loss, dtype)


class ContrastiveLossOp(keras.Operation):
    """The Keras operation behind `contrastive_loss` (symbolic and eager)."""

    def __init__(self, kind="softmax", implementation=None, name=None):
        super().__init__(name=name)
        _check_kind(kind)
        self.kind = kind
        self.implementation = resolve_implementation(implementation)

    def compute_output_spec(self, a, b, logit_scale, logit_bias=None):
        _check_inputs(a, b, _scalar(logit_scale), _scalar(logit_bias))
        return keras.KerasTensor((), dtype=a.dtype)

    def call(self, a, b, logit_scale, logit_bias=None):
        a, b = (ops.convert_to_tensor(x) for x in (a, b))
        logit_scale = ops.convert_to_tensor(_scalar(logit_scale))
        if logit_bias is not None:
            logit_bias = ops.convert_to_tensor(_scalar(logit_bias))
        _check_inputs(a, b, logit_scale, logit_bias)
        scale, bias = (None if x is None else ops.reshape(x, ())
                       for x in (logit_scale, logit_bias))
        return run_fused("contrastive_loss", self.implementation,
                         (a, b, scale, bias), (), contrastive_loss_reference,
                         kind=self.kind)


def contrastive_loss(a, b, logit_scale, logit_bias=None, kind="softmax",
                     implementation=None):
    """Symmetric contrastive loss of paired embeddings, fused.

    Exactly (a and b are used as given: no normalization inside):

        L[i, j] = logit_scale * (a[i] . b[j]) (+ logit_bias when given)

    - `kind="softmax"` (CLIP / symmetric InfoNCE):
      loss = mean_i [(logsumexp_j L[i, j] - L[i, i])
                     + (logsumexp_j L[j, i] - L[i, i])] / 2
    - `kind="sigmoid"` (SigLIP): with z[i, j] = 1 if i == j else -1,
      loss = -(1/B) sum_{i, j} log sigmoid(z[i, j] L[i, j]).

    The native kernels compute L in tiles with an online logsumexp over rows
    and columns, so the (B, B) logit matrix is never stored, in the forward
    nor in the backward (which recomputes the tiles). Differentiable with
    respect to `a`, `b`, `logit_scale` and `logit_bias` on every backend;
    works eagerly, in `jax.jit`, `tf.function` and `model.fit`.

    Shape letters: B batch (number of pairs), D embedding features.

    Args:
        a: (B, D) float16, bfloat16 or float32 tensor (float64 runs the
            reference), e.g. image embeddings.
        b: (B, D) tensor of the same dtype, e.g. text embeddings; pair i is
            (a[i], b[i]).
        logit_scale: scalar (shape () or (1,)) floating tensor or Python
            float: the multiplier of the logits (not its log).
        logit_bias: optional scalar added to the logits (SigLIP's bias).
        kind: "softmax" or "sigmoid".
        implementation: None (from `MMKERAS_KERNELS`, default "auto"),
            "auto", "native" or "reference"; see `mmkeras.kernels`.

    Returns:
        A scalar tensor in the dtype of `a`.

    Example:

    >>> import numpy as np
    >>> import mmkeras
    >>> a = np.random.rand(8, 16).astype("float32")
    >>> b = np.random.rand(8, 16).astype("float32")
    >>> loss = mmkeras.ops.contrastive_loss(a, b, 10.0, kind="softmax")
    >>> tuple(loss.shape)
    ()
    """
    op = ContrastiveLossOp(kind=kind, implementation=implementation)
    return call_op(op, a, b, logit_scale, logit_bias)
