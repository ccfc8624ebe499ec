"""Launch configs and heuristics of the Triton attention kernels.

Kept apart from `flash_attention.py` so that the kernels there read as the
algorithm alone: what this module decides (tile sizes, warps, stages, which
configs the autotuner times, when to split the grouped-query dK/dV pass) can
change speed, never results.

Autotune spaces: (BLOCK_M, BLOCK_N, num_warps, num_stages) per head-dim class,
the first entry of each list being the default. The autotuner holds the union
and the prune hook keeps the list for the call's head dim (and drops tiles
longer than a short sequence). With MMKERAS_TRITON_AUTOTUNE=0 (or
`set_autotune(False)`) only the default runs: no benchmarking, fewer
compiles. Under the interpreter a single small config keeps tests fast and
makes BLOCK_M != BLOCK_N, so the causal block bookkeeping is exercised.
"""

import functools
import os

import torch
import triton

__all__ = ["set_autotune"]

# True when triton.jit builds interpreted (CPU, numpy) kernels: the value
# triton read from TRITON_INTERPRET when this module was imported, which
# flash_attention.py does before it decorates its kernels.
INTERPRET = bool(triton.knobs.runtime.interpret)

HEAD_CLASSES = (64, 128, 256)  # BLOCK_H upper bounds

if INTERPRET:
    FWD_SPACE = {h: [(32, 16, 4, 1)] for h in HEAD_CLASSES}
    DKDV_SPACE = {h: [(16, 32, 4, 1)] for h in HEAD_CLASSES}
    DQ_SPACE = {h: [(32, 16, 4, 1)] for h in HEAD_CLASSES}
    FWD_SPACE_FP32 = FWD_SPACE
    DKDV_SPACE_FP32 = DKDV_SPACE
    DQ_SPACE_FP32 = DQ_SPACE
else:
    # Chosen from sm_90 register/shared-memory reports of AOT compiles (no
    # spills for the defaults); timing on the GPU picks among them.
    FWD_SPACE = {
        64: [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3),
             (64, 64, 4, 3)],
        128: [(128, 64, 8, 3), (128, 128, 8, 2), (128, 64, 8, 2),
              (64, 64, 4, 3)],
        256: [(64, 64, 4, 2), (64, 32, 4, 2), (128, 32, 8, 2)],
    }
    DKDV_SPACE = {
        64: [(64, 128, 8, 3), (64, 64, 4, 3), (32, 64, 4, 3), (128, 128, 8, 2)],
        128: [(32, 128, 8, 2), (32, 128, 8, 3), (32, 64, 4, 3), (64, 64, 8, 2)],
        256: [(16, 32, 4, 2), (32, 32, 4, 2), (16, 64, 8, 2)],
    }
    DQ_SPACE = {
        64: [(128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3)],
        128: [(128, 64, 8, 2), (64, 64, 4, 3), (64, 32, 4, 3), (128, 32, 8, 3)],
        256: [(64, 32, 4, 2), (64, 64, 4, 2), (32, 32, 4, 2)],
    }
    # float32 inputs (3xTF32 dots): tiles twice as many bytes and three MMAs
    # per dot, so small tiles; fp32 is for accuracy, not for speed.
    FWD_SPACE_FP32 = {
        64: [(64, 32, 4, 2), (32, 32, 4, 2)],
        128: [(32, 32, 4, 2)],
        256: [(16, 32, 4, 2)],
    }
    DKDV_SPACE_FP32 = {
        64: [(32, 32, 4, 2), (16, 32, 4, 2)],
        128: [(16, 32, 4, 2)],
        256: [(16, 16, 4, 2)],
    }
    DQ_SPACE_FP32 = {
        64: [(32, 32, 4, 2)],
        128: [(32, 32, 4, 2)],
        256: [(16, 32, 4, 2)],
    }

# The PRECISION values of float32 inputs (see flash_attention._precision):
# they take the *_FP32 spaces.
FP32_PRECISIONS = ("ieee", "tf32x3")

# Launch arguments the autotuner caches its choice on.
TUNE_KEY = ["T_BUCKET", "S_BUCKET", "BLOCK_H", "IS_CAUSAL", "HAS_MASK"]

_AUTOTUNE = os.environ.get("MMKERAS_TRITON_AUTOTUNE", "1").strip().lower()
_AUTOTUNE = _AUTOTUNE not in ("0", "false", "no", "off")


def set_autotune(enabled):
    """Turns benchmarking of the config space on or off for new shapes."""
    global _AUTOTUNE
    _AUTOTUNE = bool(enabled)


def head_class(block_h):
    for h in HEAD_CLASSES:
        if block_h <= h:
            return h
    return HEAD_CLASSES[-1]


def make_autotune(space, space_fp32):
    """The `triton.autotune` decorator over the union of two spaces, pruned
    per call to the list of the call's head-dim class and precision."""
    by_tuple = {}
    for entries in list(space.values()) + list(space_fp32.values()):
        for e in entries:
            if e not in by_tuple:
                bm, bn, warps, stages = e
                by_tuple[e] = triton.Config(
                    {"BLOCK_M": bm, "BLOCK_N": bn},
                    num_warps=warps,
                    num_stages=stages,
                )

    def prune(configs, named_args, **kwargs):
        block_h = kwargs.get("BLOCK_H", named_args.get("BLOCK_H", 64))
        t_len = named_args.get("T_BUCKET", 1 << 30)
        s_len = named_args.get("S_BUCKET", 1 << 30)
        precision = kwargs.get("PRECISION", named_args.get("PRECISION"))
        fp32 = precision in FP32_PRECISIONS
        chosen = space_fp32 if fp32 else space
        # Pick from the configs handed in (torch.compile passes its own).
        given = {
            (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps,
             c.num_stages): c
            for c in configs
        }
        wanted = [given[e] for e in chosen[head_class(block_h)] if e in given]
        wanted = wanted or list(configs[:1])
        # Short sequences: no tile much longer than the sequence.
        short = [
            c for c in wanted
            if c.kwargs["BLOCK_M"] <= max(64, t_len)
            and c.kwargs["BLOCK_N"] <= max(64, s_len)
        ]
        wanted = short or wanted
        return wanted if _AUTOTUNE else wanted[:1]

    return triton.autotune(
        configs=list(by_tuple.values()),
        key=TUNE_KEY,
        prune_configs_by={"early_config_prune": prune},
    )


def bucket(n):
    """Autotune key for a length: next power of two (at least 16)."""
    return max(16, triton.next_power_of_2(int(n)))


def preprocess_block(block_h):
    """Rows per program of the D = rowsum(dO * O) kernel."""
    return 16 if INTERPRET else max(16, min(128, 8192 // block_h))


# Test hook: None = decide by the GPU's SM count; True/False forces the
# grouped-query split of the dK/dV pass (see flash_attention._backward_impl).
_FORCE_GQA_SPLIT = None


def split_gqa(num_programs, device):
    """Whether the dK/dV pass runs one program per query head (into fp32
    buffers summed afterwards) because `num_programs` would not fill the GPU."""
    if _FORCE_GQA_SPLIT is not None:
        return bool(_FORCE_GQA_SPLIT)
    if device.type != "cuda":
        return False
    return num_programs < _sm_count(device.index)


@functools.lru_cache(maxsize=None)
def _sm_count(index):
    return torch.cuda.get_device_properties(
        torch.cuda.current_device() if index is None else index
    ).multi_processor_count
