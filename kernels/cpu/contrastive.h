// Symmetric contrastive losses of dual encoders (CLIP-style softmax / InfoNCE
// and SigLIP-style pairwise sigmoid), fused on the CPU: the B x B logit
// matrix is computed in tiles and never stored, in the forward and in the
// backward.
//
// Plain functions over pointers and sizes: no framework types in here. The
// bindings (pybind11, XLA FFI, TensorFlow op) adapt them to their buffers.
// This header is the contract every implementation (keras.ops reference,
// C++, Triton) follows.
//
// Shape letters: B batch (number of pairs), D embedding features.
// Layouts (row-major, contiguous float32):
//   a, b, da, db   (B, D)  the two embeddings, used as given (no
//                          normalization inside)
//   scale, dscale  ()      logit scale s: a multiplier, not its log
//   bias, dbias    ()      logit bias t (ignored / 0 when has_bias is false)
//   loss, dloss    ()      the scalar loss and its cotangent
//   lse            (2, B)  saved residual, see below
//
// Logits: L[i, j] = s * (a[i] . b[j]) + t.
// softmax: loss = (1/B) sum_i [(lse_r[i] - L[i, i]) + (lse_c[i] - L[i, i])] / 2
//          with lse_r[i] = logsumexp_j L[i, j] (row i) and
//               lse_c[j] = logsumexp_i L[i, j] (column j).
// sigmoid: loss = -(1/B) sum_{i,j} log sigmoid(z[i, j] L[i, j])
//               =  (1/B) sum_{i,j} softplus(-z[i, j] L[i, j]),
//          z[i, j] = 1 if i == j else -1.
//
// Backward: with g = dloss, the logit cotangent is
//   softmax: dL[i, j] = g / (2B) * (exp(L[i, j] - lse_r[i])
//                                   + exp(L[i, j] - lse_c[j])) - (g/B) [i == j]
//   sigmoid: dL[i, j] = -(g/B) * z[i, j] * sigmoid(-z[i, j] L[i, j])
// and da = s * dL b, db = s * dL^T a, dscale = sum_{i,j} dL[i, j] (a[i].b[j]),
// dbias = sum_{i,j} dL[i, j].
//
// Saved between forward and backward: the inputs and `lse`, written by the
// forward: lse[0, i] = lse_r[i], lse[1, j] = lse_c[j] (softmax); all zeros
// for sigmoid, whose backward needs no statistics. The backward recomputes
// the logits tile by tile from a, b, s, t.
#pragma once

#include <cstdint>
#include <vector>

namespace mmkeras {

struct ContrastiveProblem {
  int64_t B = 0, D = 0;
  bool sigmoid = false;   // false: softmax (CLIP), true: sigmoid (SigLIP)
  bool has_bias = false;  // false: t = 0 and dbias is written as 0
};

// Builds and checks a problem from the dims of a and b (B >= 1). Throws
// std::invalid_argument naming what is wrong.
ContrastiveProblem make_contrastive_problem(const std::vector<int64_t>& a_dims,
                                            const std::vector<int64_t>& b_dims,
                                            bool sigmoid, bool has_bias);

// Writes *loss and every element of lse. `bias` may be null when
// !p.has_bias.
void contrastive_forward(const ContrastiveProblem& p, const float* a,
                         const float* b, const float* scale, const float* bias,
                         float* loss, float* lse);

// Writes every element of da, db, *dscale and *dbias (0 without a bias).
void contrastive_backward(const ContrastiveProblem& p, const float* a,
                          const float* b, const float* scale,
                          const float* bias, const float* lse,
                          const float* dloss, float* da, float* db,
                          float* dscale, float* dbias);

}  // namespace mmkeras
