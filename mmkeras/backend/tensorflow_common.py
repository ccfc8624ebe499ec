"""Helpers shared by the TensorFlow glue modules: building and loading the
custom-op libraries, and the reasons a CPU-only op cannot take a call."""

import tensorflow as tf

from mmkeras.backend import BuildFailure
from mmkeras.backend import build


def compile_flags():
    """Compiler flags of a TensorFlow custom-op library."""
    # TensorFlow's bundled Eigen does not compile with AVX512-FP16
    # (PacketMathFP16.h), which -march=native in CXXFLAGS turns on for
    # Sapphire Rapids and newer; the adapter has no use for it.
    return [*tf.sysconfig.get_compile_flags(), "-mno-avx512fp16"]


def load_op_library(name, sources, what):
    """Builds the custom ops of `sources` (once; cached by `build`) and loads
    them. Returns `(ops_module, None)` or `(None, reason)`, where the reason
    names the ops as `what`."""
    try:
        path = build.build_library(
            name,
            sources,
            cflags=compile_flags(),
            ldflags=tf.sysconfig.get_link_flags(),
            tag=f"tensorflow-{tf.__version__}",
        )
        return tf.load_op_library(str(path)), None
    except Exception as e:  # noqa: BLE001  any failure disables the adapter
        return None, BuildFailure(f"could not build or load {what}: {e}")


def loaded_ops(load):
    """The ops module of `load()` (a cached `load_op_library` call), or a
    RuntimeError saying why there is none."""
    ops, reason = load()
    if ops is None:
        raise RuntimeError(reason)
    return ops


def cpu_only_reason(x, load, kernels):
    """`unavailable_reason` of ops that run on the CPU only: why `kernels`
    ("the TensorFlow ... kernel runs") cannot take a call on tensor `x`."""
    device = getattr(x, "device", "") or ""
    if "GPU" in device.upper():
        return (
            f"{kernels} on the CPU; on GPUs TensorFlow uses the reference "
            "path (XLA)"
        )
    return load()[1]
