"""How the public ops call their Keras operation."""

import keras


def call_op(op, *args):
    """`op` on `args`: a symbolic call (shape inference only) when any of them
    is a KerasTensor, as inside a functional model; else an eager call."""
    if any(isinstance(x, keras.KerasTensor) for x in args):
        return op.symbolic_call(*args)
    return op.call(*args)
