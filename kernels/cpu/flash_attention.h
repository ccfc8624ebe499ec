// Fused (FlashAttention-2 style) attention on the CPU.
//
// Plain functions over pointers and sizes: no framework types in here. The
// bindings (pybind11, XLA FFI, TensorFlow op) adapt them to their buffers.
//
// Shape letters: B batch, T query length, S key length, N query heads,
// K key/value heads (N % K == 0), H head dim.
// Layouts (row-major, contiguous): q, out, dq (B, T, N, H); k, v, dk, dv
// (B, S, K, H); lse (B, N, T).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common.h"

namespace mmkeras {

// A boolean mask broadcastable to (B, N, T, S), read in place through strides
// (0 on broadcast dims) so that it is never expanded. `batch_offset[b]` is the
// element offset of batch b; a per-batch table (rather than one stride) lets a
// caller fold several leading dims (jax.vmap) into B.
struct MaskView {
  const uint8_t* data = nullptr;  // nullptr: attend everywhere
  std::vector<int64_t> batch_offset;
  int64_t stride_n = 0;
  int64_t stride_t = 0;
  int64_t stride_s = 0;
};

struct AttentionProblem {
  int64_t B = 0, T = 0, S = 0, N = 0, K = 0, H = 0;
  float scale = 1.0f;
  bool causal = false;  // query t attends key s iff s <= t (top-left aligned)
  // q, k, v (and, in the backward, dout) hold bfloat16 values: the kernels
  // may multiply in bfloat16 with float32 accumulation (exact for those
  // inputs; the probabilities and dS are rounded to bfloat16 before they
  // are multiplied), which they do where the CPU has AVX512-BF16 (the
  // avx512bf16 ISA level). Elsewhere they compute in float32.
  bool bf16_products = false;
  MaskView mask;
};

// Builds a MaskView for a mask of dims `mask_dims` = (lead..., N', T', S')
// against leading batch dims `batch_dims` of the query (same count), where
// each mask dim is 1 or the full size. Throws std::invalid_argument otherwise.
MaskView make_mask_view(const uint8_t* data,
                        const std::vector<int64_t>& mask_dims,
                        const std::vector<int64_t>& batch_dims, int64_t N,
                        int64_t T, int64_t S);

// Builds and checks a problem from the dims of q (lead..., T, N, H), k and v
// (lead..., S, K, H) and an optional mask (lead..., N', T', S'), folding all
// leading dims into B. Throws std::invalid_argument naming what is wrong.
AttentionProblem make_problem(const std::vector<int64_t>& q_dims,
                              const std::vector<int64_t>& k_dims,
                              const std::vector<int64_t>& v_dims,
                              const uint8_t* mask,
                              const std::vector<int64_t>& mask_dims,
                              bool causal, float scale);

// Throws std::invalid_argument when the sizes are unusable.
void check_problem(const AttentionProblem& p);

// Writes every element of `out` and `lse`. Rows with no key to attend to get
// out = 0 and lse = +inf.
void attention_forward(const AttentionProblem& p, const float* q,
                       const float* k, const float* v, float* out, float* lse);

// Recomputes the probabilities from `lse`; writes every element of dq, dk, dv.
void attention_backward(const AttentionProblem& p, const float* q,
                        const float* k, const float* v, const float* out,
                        const float* lse, const float* dout, float* dq,
                        float* dk, float* dv);

}  // namespace mmkeras
