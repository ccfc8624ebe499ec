// The public kernel functions: each calls the ISA level chosen for this CPU
// (isa.h). Compiled for the x86-64 baseline, like everything that is not a
// kernel source.
#include <cstdlib>
#include <stdexcept>

#include "isa.h"

namespace mmkeras {
namespace {

enum class Level { generic, avx2, avx512, avx512bf16 };

bool cpu_runs(Level level) {
  __builtin_cpu_init();
  switch (level) {
    case Level::generic:
      return true;
    case Level::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case Level::avx512:
      return cpu_runs(Level::avx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl");
    case Level::avx512bf16:
      return cpu_runs(Level::avx512) && __builtin_cpu_supports("avx512bf16");
  }
  return false;
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

Level choose_level() {
  const auto& names = isa_levels();
  const auto supported = supported_isa_levels();
  const char* env = std::getenv("MMKERAS_CPU_ISA");
  if (!env || !*env) return static_cast<Level>(supported.size() - 1);
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] != env) continue;
    if (!cpu_runs(static_cast<Level>(i)))
      throw std::runtime_error(
          "MMKERAS_CPU_ISA=" + names[i] + " is not supported by this CPU " +
          "(it runs: " + joined(supported) + ")");
    return static_cast<Level>(i);
  }
  throw std::runtime_error("MMKERAS_CPU_ISA must be one of " + joined(names) +
                           ". Received: MMKERAS_CPU_ISA=" + env);
}

// Chosen on first use; a bad MMKERAS_CPU_ISA throws on every call.
Level level() {
  static const Level chosen = choose_level();
  return chosen;
}

}  // namespace

namespace {
thread_local TaskPool* lent_pool = nullptr;
}  // namespace

TaskPool* task_pool() { return lent_pool; }
void set_task_pool(TaskPool* pool) { lent_pool = pool; }

const std::vector<std::string>& isa_levels() {
  static const std::vector<std::string> names = {"generic", "avx2", "avx512",
                                                "avx512bf16"};
  return names;
}

std::vector<std::string> supported_isa_levels() {
  std::vector<std::string> out;
  for (size_t i = 0; i < isa_levels().size(); ++i)
    if (cpu_runs(static_cast<Level>(i))) out.push_back(isa_levels()[i]);
  return out;
}

const std::string& active_isa() {
  return isa_levels()[static_cast<size_t>(level())];
}

// The body of a public function: calls `fn` of the chosen level.
#define MMKERAS_DISPATCH(fn, ...)                      \
  switch (level()) {                                   \
    case Level::avx512bf16: return avx512bf16::fn(__VA_ARGS__); \
    case Level::avx512: return avx512::fn(__VA_ARGS__); \
    case Level::avx2: return avx2::fn(__VA_ARGS__);     \
    case Level::generic: return generic::fn(__VA_ARGS__); \
  }

void attention_forward(const AttentionProblem& p, const float* q,
                       const float* k, const float* v, float* out, float* lse) {
  MMKERAS_DISPATCH(attention_forward, p, q, k, v, out, lse);
}

void attention_backward(const AttentionProblem& p, const float* q,
                        const float* k, const float* v, const float* out,
                        const float* lse, const float* dout, float* dq,
                        float* dk, float* dv) {
  MMKERAS_DISPATCH(attention_backward, p, q, k, v, out, lse, dout, dq, dk, dv);
}

void gated_fusion_forward(const GatedFusionProblem& p, const float* h,
                          const float* g, const uint8_t* mask, float* out) {
  MMKERAS_DISPATCH(gated_fusion_forward, p, h, g, mask, out);
}

void gated_fusion_backward(const GatedFusionProblem& p, const float* h,
                           const float* g, const uint8_t* mask,
                           const float* dout, float* dh, float* dg) {
  MMKERAS_DISPATCH(gated_fusion_backward, p, h, g, mask, dout, dh, dg);
}

void low_rank_fusion_forward(const LowRankFusionProblem& p, const float* f,
                             const uint8_t* mask, float* out) {
  MMKERAS_DISPATCH(low_rank_fusion_forward, p, f, mask, out);
}

void low_rank_fusion_backward(const LowRankFusionProblem& p, const float* f,
                              const uint8_t* mask, const float* dout,
                              float* df) {
  MMKERAS_DISPATCH(low_rank_fusion_backward, p, f, mask, dout, df);
}

void contrastive_forward(const ContrastiveProblem& p, const float* a,
                         const float* b, const float* scale, const float* bias,
                         float* loss, float* lse) {
  MMKERAS_DISPATCH(contrastive_forward, p, a, b, scale, bias, loss, lse);
}

void contrastive_backward(const ContrastiveProblem& p, const float* a,
                          const float* b, const float* scale,
                          const float* bias, const float* lse,
                          const float* dloss, float* da, float* db,
                          float* dscale, float* dbias) {
  MMKERAS_DISPATCH(contrastive_backward, p, a, b, scale, bias, lse, dloss, da,
                   db, dscale, dbias);
}

}  // namespace mmkeras
