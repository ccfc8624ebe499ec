// Fused element-wise cores of two multimodal fusion layers, on the CPU:
// the Gated Multimodal Unit (GatedFusion) and low-rank multimodal fusion
// (LowRankFusion). The layers run their per-modality matmuls first; these
// kernels do everything after them in one pass over memory.
//
// Plain functions over pointers and sizes: no framework types in here. The
// bindings (pybind11, XLA FFI, TensorFlow op) adapt them to their buffers.
// This header is the contract every implementation (keras.ops reference,
// C++, Triton) follows.
//
// Shape letters: M modalities, B batch, D features, R rank, O output features.
// All arrays are row-major, contiguous, float32 unless stated.
//
// Modality mask: `mask` is (B, M) uint8 (numpy/torch/XLA bool), nonzero =
// modality m present in sample b; nullptr = every modality present.
//
// ---------------------------------------------------------------- gated_fusion
//   h    (M, B, D)  pre-activation projections h_m
//   g    (M, B, D)  pre-activation gate logits g_m
//   out  (B, D)     out[b, d] = sum over present m of
//                               sigmoid(g[m, b, d]) * tanh(h[m, b, d])
//   A sample with no modality present gets out = 0 and zero gradients.
// Backward, given dout (B, D), for present m (absent m: 0):
//   dh[m, b, d] = dout[b, d] * sigmoid(g) * (1 - tanh(h)^2)
//   dg[m, b, d] = dout[b, d] * tanh(h) * sigmoid(g) * sigmoid(-g)
// Saved between forward and backward: nothing beyond the inputs (h, g, mask);
// the backward recomputes the activations.
//
// ------------------------------------------------------------- low_rank_fusion
//   f    (M, R, B, O)  factors f[m, r] = W_m^(r) [z_m; 1], already computed
//   out  (B, O)        out[b, o] = sum_r prod_m f'[m, r, b, o], where
//                      f' = f for a present modality and 1 for an absent one
//   A sample with no modality present gets out = R (every product is empty)
//   and zero gradients.
// Backward, given dout (B, O), for present m (absent m: 0):
//   df[m, r, b, o] = dout[b, o] * prod_{m' != m} f'[m', r, b, o]
//   computed with prefix and suffix products (no division: zeros are safe).
// Saved between forward and backward: nothing beyond the inputs (f, mask).
#pragma once

#include <cstdint>
#include <vector>

namespace mmkeras {

struct GatedFusionProblem {
  int64_t M = 0, B = 0, D = 0;
};

struct LowRankFusionProblem {
  int64_t M = 0, R = 0, B = 0, O = 0;
};

// Build and check a problem from the dims of the inputs; `mask_dims` is
// empty when there is no mask. Throw std::invalid_argument naming what is
// wrong.
GatedFusionProblem make_gated_fusion_problem(
    const std::vector<int64_t>& h_dims, const std::vector<int64_t>& g_dims,
    const std::vector<int64_t>& mask_dims);
LowRankFusionProblem make_low_rank_fusion_problem(
    const std::vector<int64_t>& f_dims, const std::vector<int64_t>& mask_dims);

// Each writes every element of its outputs.
void gated_fusion_forward(const GatedFusionProblem& p, const float* h,
                          const float* g, const uint8_t* mask, float* out);
void gated_fusion_backward(const GatedFusionProblem& p, const float* h,
                           const float* g, const uint8_t* mask,
                           const float* dout, float* dh, float* dg);

void low_rank_fusion_forward(const LowRankFusionProblem& p, const float* f,
                             const uint8_t* mask, float* out);
void low_rank_fusion_backward(const LowRankFusionProblem& p, const float* f,
                              const uint8_t* mask, const float* dout,
                              float* df);

}  // namespace mmkeras
