"""Compiles the framework adapters of the C++ kernels on first use.

The XLA FFI handler needs JAX's headers and the TensorFlow op needs
TensorFlow's headers and ABI flags: both come from the framework installed at
run time, not at `pip install` time (the build runs in an isolated
environment). So the adapters are compiled once, with the machine's C++
compiler, into a cache keyed by the sources, the flags and the framework
version (`MMKERAS_CACHE_DIR`, default `~/.cache/mmkeras`).
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mmkeras

# Same optimization flags as CMakeLists.txt uses for the core kernels.
OPT_FLAGS = ["-O3", "-fno-math-errno", "-march=native"]


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


def build_library(name, sources, cflags=(), ldflags=(), tag=""):
    """Compiles `sources` (paths relative to the kernel source dir) into a
    shared library, or returns the cached one. Returns its path."""
    src_dir = kernel_source_dir()
    paths = [src_dir / s for s in sources]
    headers = sorted(src_dir.glob("**/*.h"))
    cmd_flags = ["-std=c++17", "-shared", "-fPIC", "-pthread", *OPT_FLAGS]
    cmd_flags += [f"-I{src_dir / 'cpu'}", *cflags]
    digest = hashlib.sha256()
    for path in [*paths, *headers]:
        digest.update(path.read_bytes())
    digest.update(" ".join([*cmd_flags, *ldflags, tag, compiler()]).encode())
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
        cmd = [compiler(), *cmd_flags, *map(str, paths), "-o", str(tmp_target)]
        cmd += list(ldflags)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"compiling {name} failed:\n{' '.join(cmd)}\n{result.stderr}"
            )
        os.replace(tmp_target, target)  # atomic: concurrent builds are safe
    return target
