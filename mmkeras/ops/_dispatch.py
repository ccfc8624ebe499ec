"""How every fused op runs: the Keras-operation call and the one recipe that
picks an implementation and calls it (docs/architecture.md, "Dispatch")."""

import keras
from keras import ops

from mmkeras import kernel_selection
from mmkeras.ops._checks import dtype_of


def call_op(op, *args):
    """`op` on `args`: a symbolic call (shape inference only) when any of them
    is a KerasTensor, as inside a functional model; else an eager call."""
    if any(isinstance(x, keras.KerasTensor) for x in args):
        return op.symbolic_call(*args)
    return op.call(*args)


def run_fused(op_name, implementation, floats, others, reference,
              native_attrs=None, **attrs):
    """Runs a fused op's native kernel or its `keras.ops` reference.

    The recipe: `kernel_selection.select_native` picks the backend's glue
    module (or None) from the policy and the first tensor's dtype and device;
    the reference gets the inputs as they are; the native kernel gets the
    floating inputs cast to float32 (low-precision inputs are cast here so
    that gradients flow back through the casts in their dtype) and its
    output is cast back to the first input's dtype.

    Args:
        op_name: the public op; the glue function of that name runs it.
        implementation: a resolved policy ("auto", "native", "reference").
        floats: the floating tensors, the first one deciding (None entries,
            absent optional inputs, pass through).
        others: the remaining positional arguments (masks), passed as they
            are after `floats`.
        reference: the reference function, called as
            `reference(*floats, *others, **attrs)`.
        native_attrs: optional dict of attributes for the native kernel
            only.
        **attrs: static attributes of both.

    Returns:
        The op's output.
    """
    glue = kernel_selection.select_native(implementation, floats[0], op_name)
    if glue is None:
        return reference(*floats, *others, **attrs)
    dtype = dtype_of(floats[0])
    floats = [None if x is None else ops.cast(x, "float32") for x in floats]
    out = getattr(glue, op_name)(*floats, *others, **attrs,
                                 **(native_attrs or {}))
    return ops.cast(out, dtype)
