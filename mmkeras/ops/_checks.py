"""Input checks shared by the fused ops. They work on static
shapes, so they serve eager tensors and symbolic KerasTensors alike."""

import keras


def shape_str(x):
    return tuple(x.shape)


def dtype_of(x):
    return keras.backend.standardize_dtype(x.dtype)


def same(a, b):
    """Two static dims agree (None matches anything)."""
    return a is None or b is None or a == b


def check_rank(name, x, rank, layout):
    if len(x.shape) != rank:
        raise ValueError(
            f"Argument `{name}` must have rank {rank} {layout}. "
            f"Received: {name}.shape={shape_str(x)}"
        )


def check_floating(named):
    """`named`: (name, tensor) pairs that must be floating, of one dtype."""
    for name, x in named:
        dtype = dtype_of(x)
        if not dtype.startswith(("float", "bfloat")):
            raise ValueError(
                f"Argument `{name}` must be a floating tensor. "
                f"Received: {name}.dtype={dtype}"
            )
    if len({dtype_of(x) for _, x in named}) > 1:
        names = ", ".join(f"`{n}`" for n, _ in named)
        received = ", ".join(f"{n}.dtype={dtype_of(x)}" for n, x in named)
        raise ValueError(
            f"Arguments {names} must have the same dtype. Received: {received}"
        )


def check_modality_mask(mask, batch, modalities):
    """`mask` must be None or a boolean (batch, modalities) tensor."""
    if mask is None:
        return
    dtype = dtype_of(mask)
    if dtype != "bool":
        raise ValueError(
            "Argument `modality_mask` must be a boolean tensor (True = "
            f"modality present). Received: modality_mask.dtype={dtype}"
        )
    shape = tuple(mask.shape)
    if len(shape) != 2 or not (
        same(shape[0], batch) and same(shape[1], modalities)
    ):
        raise ValueError(
            "Argument `modality_mask` must have shape (batch, modalities) = "
            f"{(batch, modalities)}. Received: modality_mask.shape={shape}"
        )


def compute_dtype(x):
    """The dtype a reference computes in: float64 stays, the rest float32."""
    return "float64" if dtype_of(x) == "float64" else "float32"
