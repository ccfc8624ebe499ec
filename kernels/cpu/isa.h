// ISA levels of the CPU kernels, chosen at run time.
//
// The kernel sources (flash_attention.cc, fusion.cc, contrastive.cc) are
// compiled once per level, each time with that level's flags and with
// -DMMKERAS_ISA=<level>, which puts the compiled code in the namespace
// mmkeras::<level>. dispatch.cc, compiled for the x86-64 baseline, defines
// the public functions of flash_attention.h, fusion.h and contrastive.h: each
// calls the best level this CPU runs (or the one MMKERAS_CPU_ISA names). So
// one build runs on every x86-64 CPU, at the speed of a build made for it,
// and no framework header is ever compiled with a kernel's ISA flags.
//
// Levels, lowest first (each CPU that runs a level runs all below it):
//   generic  x86-64 baseline (SSE2)
//   avx2     AVX2 + FMA + F16C (Haswell, Zen and newer)
//   avx512   AVX-512 F/BW/DQ/VL on top of avx2 (Skylake-SP, Zen 4 and newer)
//   avx512bf16  AVX512-BF16 on top of avx512 (Cooper Lake, Sapphire Rapids,
//            Zen 4 and newer): the same code, plus bfloat16 products for
//            bfloat16 inputs (AttentionProblem::bf16_products)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "contrastive.h"
#include "flash_attention.h"
#include "fusion.h"

namespace mmkeras {

// The levels this build has, lowest first.
const std::vector<std::string>& isa_levels();

// The levels this CPU runs, lowest first (always at least "generic").
std::vector<std::string> supported_isa_levels();

// The level the kernels run: MMKERAS_CPU_ISA if set, else the highest
// supported one. Chosen once per process. Throws std::runtime_error when
// MMKERAS_CPU_ISA names an unknown level or one this CPU does not run.
const std::string& active_isa();

}  // namespace mmkeras

// The entry points each level defines (same signatures as the public ones).
#define MMKERAS_DECLARE_LEVEL_KERNELS                                          \
  void attention_forward(const AttentionProblem& p, const float* q,           \
                         const float* k, const float* v, float* out,          \
                         float* lse);                                         \
  void attention_backward(const AttentionProblem& p, const float* q,          \
                          const float* k, const float* v, const float* out,   \
                          const float* lse, const float* dout, float* dq,     \
                          float* dk, float* dv);                              \
  void gated_fusion_forward(const GatedFusionProblem& p, const float* h,      \
                            const float* g, const uint8_t* mask, float* out); \
  void gated_fusion_backward(const GatedFusionProblem& p, const float* h,     \
                             const float* g, const uint8_t* mask,             \
                             const float* dout, float* dh, float* dg);        \
  void low_rank_fusion_forward(const LowRankFusionProblem& p, const float* f, \
                               const uint8_t* mask, float* out);              \
  void low_rank_fusion_backward(const LowRankFusionProblem& p,                \
                                const float* f, const uint8_t* mask,          \
                                const float* dout, float* df);                \
  void contrastive_forward(const ContrastiveProblem& p, const float* a,       \
                           const float* b, const float* scale,                \
                           const float* bias, float* loss, float* lse);       \
  void contrastive_backward(const ContrastiveProblem& p, const float* a,      \
                            const float* b, const float* scale,               \
                            const float* bias, const float* lse,              \
                            const float* dloss, float* da, float* db,         \
                            float* dscale, float* dbias);

namespace mmkeras {
namespace generic {
MMKERAS_DECLARE_LEVEL_KERNELS
}
namespace avx2 {
MMKERAS_DECLARE_LEVEL_KERNELS
}
namespace avx512 {
MMKERAS_DECLARE_LEVEL_KERNELS
}
namespace avx512bf16 {
MMKERAS_DECLARE_LEVEL_KERNELS
}
}  // namespace mmkeras
