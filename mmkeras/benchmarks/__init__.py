"""Kernel and model benchmarks, shipped with the package so that
`mmkeras bench` works from any install. Each module runs as
`python -m mmkeras.benchmarks.<name>`: attention, fusion (the fused ops side
by side with the frameworks' own), models (an encoder-decoder training
step), accelerate (keras-hub models before and after `mmkeras.accelerate`)
and gpu_check (the Triton attention kernels on an NVIDIA GPU). Results are
kept in benchmarks/RESULTS.md of the source tree."""


def wait_for(result):
    """Returns `result` once the current backend has computed it (JAX
    dispatches asynchronously; TensorFlow and torch on the CPU do not)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jax.block_until_ready(result)
    elif backend == "tensorflow":
        import tensorflow as tf

        # Synchronous eager execution (the default) returns once the outputs
        # are computed. Reading them back with .numpy() would copy them (it
        # does on CPU) and time a memcpy on top of the op.
        if not tf.config.experimental.get_synchronous_execution():
            tf.nest.map_structure(
                lambda t: t.numpy() if t is not None else t, result)
    return result
