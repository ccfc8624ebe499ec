"""The adapters of the current backend compile on every x86-64 host, and a
native kernel that fails to build or load is never lost in silence.

Compile-only: each adapter is compiled as mmkeras compiles it, with the
-march of an AVX-512 FP16/BF16/AMX host (Sapphire Rapids, where TensorFlow's
Eigen once broke the build) and of an AVX2-only host in CXXFLAGS, so a machine
without those ISAs still catches that class of break.
"""

import json
import os
import subprocess
import sys
import sysconfig

import keras
import pytest

from mmkeras.backend import FAMILIES
from mmkeras.backend import build

HOSTS = {"avx512-fp16-bf16-amx": "-march=sapphirerapids", "avx2": "-march=haswell"}


def adapters():
    """(sources, compiler flags) of each adapter of the current backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from mmkeras.backend import tensorflow_common

        flags = tensorflow_common.compile_flags()
        return {f"tf_ops_{f}": ([f"bindings/tf_ops_{f}.cc"], flags)
                for f in FAMILIES}
    if backend == "jax":
        from mmkeras.backend import jax_common

        flags = jax_common.compile_flags()
        return {f"xla_ffi_{f}": ([f"bindings/xla_ffi_{f}.cc"], flags)
                for f in FAMILIES}
    # torch calls the pybind11 module, which CMake builds at install time.
    import pybind11

    flags = [f"-I{pybind11.get_include()}",
             f"-I{sysconfig.get_paths()['include']}"]
    return {"pybind": (["bindings/pybind_module.cc"]
                       + [f"bindings/pybind_{f}.cc" for f in FAMILIES], flags)}


@pytest.mark.parametrize("host", sorted(HOSTS))
@pytest.mark.parametrize("adapter", sorted(adapters()))
def test_adapter_compiles_for_host(adapter, host, monkeypatch):
    sources, flags = adapters()[adapter]
    monkeypatch.setenv("CXXFLAGS", HOSTS[host])
    cmd = build.compile_command(sources, flags)
    assert cmd[-1] == "-fsyntax-only" and HOSTS[host] in cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-3000:]}"


def test_adapters_get_no_isa_flags_of_their_own(monkeypatch):
    """Only the kernel sources (CMake, per ISA level) get ISA flags: an
    adapter compiled here runs on any x86-64 CPU."""
    monkeypatch.delenv("CXXFLAGS", raising=False)
    for sources, flags in adapters().values():
        for arg in build.compile_command(sources, flags, output="x.so"):
            isa_flag = arg.startswith(("-march", "-mavx", "-mfma", "-mf16c",
                                       "-mamx", "-msse"))
            assert not isa_flag, arg


BROKEN_KERNELS = """
import json, sys, warnings
sys.modules["mmkeras._cpu_kernels"] = None  # as if the C++ build had failed
import numpy as np
import mmkeras
warnings.simplefilter("always")
x = np.random.rand(1, 5, 2, 8).astype("float32")
with warnings.catch_warnings(record=True) as first:
    out = mmkeras.ops.fused_attention(x, x, x)
with warnings.catch_warnings(record=True) as second:
    mmkeras.ops.fused_attention(x, x, x)
ref = mmkeras.ops.fused_attention(x, x, x, implementation="reference")
assert np.allclose(np.asarray(out), np.asarray(ref), rtol=1e-6, atol=1e-6)
print("FIRST", json.dumps([str(w.message) for w in first
                          if "mmkeras" in str(w.message)]))
print("SECOND", json.dumps([str(w.message) for w in second
                           if "mmkeras" in str(w.message)]))
print("USAGE", mmkeras.kernels.usage()["fused_attention"])
try:
    mmkeras.ops.fused_attention(x, x, x, implementation="native")
except ValueError as e:
    print("NATIVE", e)
"""


def test_a_kernel_that_failed_to_build_warns_once():
    env = dict(os.environ, MMKERAS_KERNELS="auto")
    proc = subprocess.run([sys.executable, "-c", BROKEN_KERNELS], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines()
                 if line.split(" ", 1)[0] in ("FIRST", "SECOND", "USAGE",
                                              "NATIVE"))
    first = json.loads(lines["FIRST"])
    assert len(first) == 1, first
    assert "native kernel of fused_attention should run here" in first[0]
    assert "mmkeras info --all-backends" in first[0]
    assert "\n" not in first[0]
    assert json.loads(lines["SECOND"]) == []
    assert lines["USAGE"] == "{'reference'}"
    assert "implementation='native'" in lines["NATIVE"]
    assert "not built or do not load" in lines["NATIVE"]
