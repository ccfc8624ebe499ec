"""Compiles the framework adapters of the C++ kernels on first use.

The XLA FFI handler needs JAX's headers and the TensorFlow op needs
TensorFlow's headers and ABI flags: both come from the framework installed at
run time, not at `pip install` time (the build runs in an isolated
environment). So the adapters are compiled once, with the machine's C++
compiler, into a cache keyed by the sources, the flags and the framework
version (`MMKERAS_CACHE_DIR`, default `~/.cache/mmkeras`).

An adapter is thin: it links the kernel library that `pip install` built
(`libmmkeras_kernels.so`, next to `mmkeras._cpu_kernels`), which holds the
kernels for every ISA level and picks one at run time. The adapter itself is
compiled for the x86-64 baseline, with no ISA flags of ours, so framework
headers never meet the kernels' AVX-512 flags. `CXXFLAGS` is honoured (first,
so the framework's and mmkeras' own flags win).
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mmkeras
from mmkeras.backend import cpu_module

BASE_FLAGS = ["-std=c++17", "-O2", "-fPIC", "-pthread"]


def kernel_source_dir():
    """The C++ sources: inside the installed package, or the source tree."""
    package = Path(mmkeras.__file__).parent
    for candidate in (package / "_kernel_src", package.parent / "kernels"):
        if (candidate / "cpu" / "flash_attention.cc").exists():
            return candidate
    raise FileNotFoundError(
        "mmkeras kernel sources not found next to the package "
        f"(looked in {package / '_kernel_src'} and {package.parent / 'kernels'})"
    )


def cache_dir():
    root = os.environ.get("MMKERAS_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "mmkeras"


def compiler():
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    return cxx


def compile_command(sources, cflags=(), ldflags=(), output=None):
    """The compiler command for an adapter: `sources` (paths relative to the
    kernel source dir) into the shared library `output`, linked against the
    kernel library; with `output=None`, a syntax check that writes nothing.
    """
    src_dir = kernel_source_dir()
    cmd = [compiler(), *os.environ.get("CXXFLAGS", "").split(), *BASE_FLAGS]
    cmd += [f"-I{src_dir / 'cpu'}", *cflags]
    cmd += [str(src_dir / s) for s in sources]
    if output is None:
        return [*cmd, "-fsyntax-only"]
    lib_dir = cpu_module.library_dir()
    return [
        *cmd, "-shared", "-o", str(output), f"-L{lib_dir}",
        "-l:libmmkeras_kernels.so", f"-Wl,-rpath,{lib_dir}", *ldflags,
    ]


def build_library(name, sources, cflags=(), ldflags=(), tag=""):
    """Compiles `sources` (paths relative to the kernel source dir) into a
    shared library, or returns the cached one. Returns its path."""
    src_dir = kernel_source_dir()
    digest = hashlib.sha256()
    for path in [*(src_dir / s for s in sources), *sorted(src_dir.glob("**/*.h"))]:
        digest.update(path.read_bytes())
    digest.update(" ".join([*compile_command(sources, cflags, ldflags, "-"),
                            tag]).encode())
    target = cache_dir() / f"{name}-{digest.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"mmkeras: compiling {name} (once; cached in {target.parent})",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp_target = Path(tmp) / target.name
        cmd = compile_command(sources, cflags, ldflags, tmp_target)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"compiling {name} failed:\n{' '.join(cmd)}\n{result.stderr}"
            )
        os.replace(tmp_target, target)  # atomic: concurrent builds are safe
    return target
