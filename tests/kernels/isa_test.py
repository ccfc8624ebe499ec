"""The CPU kernels' ISA levels (kernels/cpu/isa.h): the level chosen at run
time, each level this CPU runs held to float64, every level compiled for
every host, and shared code that runs on every CPU.

The kernel library is one for all three backends (each adapter links it), so
these checks run once, in the torch backend's pass; each backend's adapter is
compiled and held to float64 in its own pass (build_test.py, tests/ops).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get("KERAS_BACKEND", "tensorflow") != "torch":
    pytest.skip(
        "the kernel library is shared by every backend's adapter, so its ISA "
        "levels are checked once, in the torch backend's pass",
        allow_module_level=True,
    )

from mmkeras.backend import build  # noqa: E402
from mmkeras.backend import cpu_module  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LEVELS = ["generic", "avx2", "avx512", "avx512bf16"]
# CPU flags (as /proc/cpuinfo names them) each level needs beyond the one
# below it: the same checks as dispatch.cc's cpu_runs.
LEVEL_CPU_FLAGS = {
    "generic": set(),
    "avx2": {"avx2", "fma", "f16c"},
    "avx512": {"avx512f", "avx512bw", "avx512dq", "avx512vl"},
    "avx512bf16": {"avx512_bf16"},
}
# Hosts whose -march a user's CXXFLAGS might carry: Sapphire Rapids has
# AVX-512 FP16/BF16 and AMX (the flags that broke TensorFlow's Eigen),
# Haswell AVX2 only.
HOSTS = {"avx512-fp16-bf16-amx": "-march=sapphirerapids", "avx2": "-march=haswell"}


def kernels():
    module, reason = cpu_module.load()
    assert module is not None, reason
    return module


def cpu_flags():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    raise AssertionError("no flags line in /proc/cpuinfo")


def levels_this_cpu_runs():
    flags, levels = cpu_flags(), []
    for level in LEVELS:
        if not LEVEL_CPU_FLAGS[level] <= flags:
            break
        levels.append(level)
    return levels


def cmake_level_flags():
    """The compiler flags of each level, as CMakeLists.txt sets them."""
    text = (ROOT / "CMakeLists.txt").read_text()
    flags = {}
    for name, value in re.findall(r"set\(MMKERAS_FLAGS_(\w+)\s*([^)]*)\)", text):
        words = []
        for word in value.replace('""', "").split():
            ref = re.fullmatch(r"\$\{MMKERAS_FLAGS_(\w+)\}", word)
            words += flags[ref.group(1)] if ref else [word]
        flags[name] = words
    assert sorted(flags) == sorted(LEVELS), flags
    return flags


def run_python(code, level=None, timeout=600):
    env = dict(os.environ)
    env.pop("MMKERAS_CPU_ISA", None)
    if level is not None:
        env["MMKERAS_CPU_ISA"] = level
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_the_best_level_this_cpu_runs_is_chosen():
    proc = run_python(
        "from mmkeras import _cpu_kernels as k\n"
        "print(k.isa_levels(), k.supported_isa_levels(), k.isa())"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = levels_this_cpu_runs()
    assert proc.stdout.split("\n")[0] == f"{LEVELS} {expected} {expected[-1]}"


def test_unknown_or_unsupported_level_is_refused():
    code = (
        "import numpy as np\n"
        "from mmkeras import _cpu_kernels as k\n"
        "x = np.ones((1, 3, 1, 8), np.float32)\n"
        "try:\n"
        "    k.attention_forward(x, x, x)\n"
        "except RuntimeError as e:\n"
        "    print('ERROR', e)\n"
    )
    out = run_python(code, level="sse9").stdout
    assert ("MMKERAS_CPU_ISA must be one of generic, avx2, avx512, "
            "avx512bf16") in out
    assert "Received: MMKERAS_CPU_ISA=sse9" in out
    unsupported = [lv for lv in LEVELS if lv not in levels_this_cpu_runs()]
    for level in unsupported:
        out = run_python(code, level=level).stdout
        assert f"MMKERAS_CPU_ISA={level} is not supported by this CPU" in out


@pytest.mark.parametrize("level", LEVELS)
def test_level_matches_float64(level):
    if level not in levels_this_cpu_runs():
        pytest.skip(f"this CPU does not run the {level} level (it runs "
                    f"{levels_this_cpu_runs()}); test_every_level_compiles "
                    "covers it")
    # The native cases of the op tests (float64 oracles, poisoned outputs,
    # odd sizes, gradients), with the kernels pinned to this level.
    env_check = (
        "from mmkeras import _cpu_kernels as k\n"
        f"assert k.isa() == {level!r}, k.isa()\n"
    )
    assert run_python(env_check, level=level).returncode == 0
    env = dict(os.environ, MMKERAS_CPU_ISA=level)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-k", "native and not reference", "tests/ops/attention_test.py",
         "tests/ops/fusion_ops_test.py", "tests/ops/contrastive_test.py"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", proc.stdout), proc.stdout[-2000:]


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_every_level_compiles(host):
    """Each kernel source compiles at each level, whatever -march the host's
    CXXFLAGS add before the level's flags (compile only: this CPU need not
    run the code)."""
    flags = cmake_level_flags()
    src = ROOT / "kernels" / "cpu"
    failures = []
    for level in LEVELS:
        for name in ("flash_attention.cc", "fusion.cc", "contrastive.cc"):
            cmd = [build.compiler(), "-std=c++17", "-fsyntax-only", "-Wall",
                   "-Werror", HOSTS[host], *flags[level],
                   f"-DMMKERAS_ISA={level}", f"-I{src}", str(src / name)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                failures.append(f"{level} {name}:\n{proc.stderr[-1500:]}")
    assert not failures, "\n".join(failures)


# What only a level's own code may use: VEX instructions (v...) and ymm
# registers need AVX, so not generic; zmm, the mask registers and the upper
# 16 xmm/ymm registers need AVX-512.
NEEDS_AVX = r"^v\w+\s|%ymm"
NEEDS_AVX512 = r"%zmm|%k[0-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b"
FORBIDDEN = {"generic": re.compile(f"{NEEDS_AVX}|{NEEDS_AVX512}"),
             "avx2": re.compile(NEEDS_AVX512)}


def test_shared_code_runs_on_every_cpu():
    """Code the levels share (inline functions and templates compiled in
    every level's sources, of which the link keeps one copy) must be the
    copy every CPU runs: no function outside a level's namespace uses that
    level's instructions."""
    library = cpu_module.library_dir() / "libmmkeras_kernels.so"
    dump = subprocess.run(
        ["objdump", "-d", "-C", "--no-show-raw-insn", str(library)],
        capture_output=True, text=True, check=True,
    ).stdout
    checked, bad = 0, []
    for body in re.split(r"\n(?=[0-9a-f]+ <)", dump):
        header = re.match(r"[0-9a-f]+ <(.*)>:", body)
        if not header or re.search(r"mmkeras::avx512(bf16)?::", header.group(1)):
            continue
        name = header.group(1)
        forbidden = FORBIDDEN["avx2" if "mmkeras::avx2::" in name else "generic"]
        code = [line.split("\t", 1)[1] for line in body.splitlines()[1:]
                if "\t" in line]
        hits = [c for c in code if forbidden.search(c)]
        checked += 1
        if hits:
            bad.append(f"{name}: {hits[0].strip()}")
    assert checked > 50, f"only {checked} functions found in {library}"
    assert not bad, "\n".join(bad[:20])


def test_levels_are_all_in_the_library():
    library = cpu_module.library_dir() / "libmmkeras_kernels.so"
    symbols = subprocess.run(["nm", "-D", "-C", "--defined-only", str(library)],
                             capture_output=True, text=True, check=True).stdout
    for level in LEVELS:
        assert f"mmkeras::{level}::attention_forward(" in symbols, level
        assert f"mmkeras::{level}::contrastive_backward(" in symbols, level
