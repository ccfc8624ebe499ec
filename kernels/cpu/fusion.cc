// Gated and low-rank fusion on the CPU (contract in fusion.h).
//
// Both are element-wise over the feature axis with a short loop over the
// modalities (and ranks), so one pass over the inputs is all the memory
// traffic there is. Rows of the batch are split across threads; the feature
// axis runs in vectors (vec.h for the gated unit, which needs vector tanh and
// sigmoid; plain fixed-size loops that -O3 vectorizes for the products).
#include "fusion.h"

#include <stdexcept>
#include <string>

#include "isa.h"
#include "vec.h"

namespace mmkeras {
namespace MMKERAS_ISA {
namespace {

// Elements (modalities x features x rows) per thread below which a call is
// not split: starting a thread costs about as much as this much work.
constexpr int64_t kMinWorkPerThread = 1 << 16;
constexpr int64_t kChunk = 64;  // features per register-resident chunk

// The Gated Multimodal Unit's activations share one reciprocal: with
// e_g = exp(-g), e_h = exp(-2h) and q = 1 / ((1 + e_g)(1 + e_h)),
// sigmoid(g) = (1 + e_h) q and tanh(h) = (1 - e_h)(1 + e_g) q, so
// sigmoid(g) tanh(h) = (1 - e_h) q. Clamping g and 2h to [-20, 20] keeps the
// denominator below e^40 and moves sigmoid and tanh by under 3e-9. Errors
// are absolute (~3e-7), not relative: tanh near 0 and sigmoid far below 0
// come from differences, which is what a weighted sum needs.
struct GmuTerms {
  VF e_g, e_h, q;
};
inline GmuTerms gmu_terms(VF g, VF h) {
  const VF x_g = vclamp(-g, -20.0f, 20.0f);
  const VF x_h = vclamp(-2.0f * h, -20.0f, 20.0f);
  GmuTerms t;
  t.e_g = exp2v_in_range(x_g * kLog2e);
  t.e_h = exp2v_in_range(x_h * kLog2e);
  t.q = recip((1.0f + t.e_g) * (1.0f + t.e_h));
  return t;
}

inline bool present(const uint8_t* mask, int64_t M, int64_t b, int64_t m) {
  return !mask || mask[b * M + m] != 0;
}

}  // namespace

void gated_fusion_forward(const GatedFusionProblem& p, const float* h,
                          const float* g, const uint8_t* mask, float* out) {
  const int64_t M = p.M, B = p.B, D = p.D;
  poison(out, B * D);
  const int64_t grain = ceil_div(kMinWorkPerThread, std::max<int64_t>(1, M * D));
  parallel_ranges(B, grain, [&, M, B, D](int64_t, int64_t lo, int64_t hi) {
    // Modality by modality over a row of `out` (in L1), so the inputs are
    // read as M pairs of contiguous streams.
    for (int64_t b = lo; b < hi; ++b) {
      float* o = out + b * D;
      std::fill(o, o + D, 0.0f);
      for (int64_t m = 0; m < M; ++m) {
        if (!present(mask, M, b, m)) continue;
        const int64_t row = (m * B + b) * D;
        for (int64_t d0 = 0; d0 < D; d0 += kLanes) {
          const int64_t n = std::min<int64_t>(kLanes, D - d0);
          const GmuTerms t =
              gmu_terms(load_n(g + row + d0, n), load_n(h + row + d0, n));
          store_n(o + d0, load_n(o + d0, n) + (1.0f - t.e_h) * t.q, n);
        }
      }
    }
  });
}

void gated_fusion_backward(const GatedFusionProblem& p, const float* h,
                           const float* g, const uint8_t* mask,
                           const float* dout, float* dh, float* dg) {
  const int64_t M = p.M, B = p.B, D = p.D;
  poison(dh, M * B * D);
  poison(dg, M * B * D);
  const int64_t grain = ceil_div(kMinWorkPerThread, std::max<int64_t>(1, M * D));
  parallel_ranges(B, grain, [&, M, B, D](int64_t, int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      for (int64_t m = 0; m < M; ++m) {
        const int64_t row = (m * B + b) * D;
        if (!present(mask, M, b, m)) {
          std::fill(dh + row, dh + row + D, 0.0f);
          std::fill(dg + row, dg + row + D, 0.0f);
          continue;
        }
        for (int64_t d0 = 0; d0 < D; d0 += kLanes) {
          const int64_t n = std::min<int64_t>(kLanes, D - d0);
          const VF dy = load_n(dout + b * D + d0, n);
          const GmuTerms t =
              gmu_terms(load_n(g + row + d0, n), load_n(h + row + d0, n));
          const VF sig = (1.0f + t.e_h) * t.q;      // sigmoid(g)
          const VF inv_h = (1.0f + t.e_g) * t.q;    // 1 / (1 + e_h)
          const VF dy_sig = dy * sig;
          // 1 - tanh(h)^2 = 4 e_h / (1 + e_h)^2; sigmoid(-g) = e_g sigmoid(g)
          store_n(dh + row + d0, dy_sig * (4.0f * t.e_h) * inv_h * inv_h, n);
          store_n(dg + row + d0,
                  dy_sig * (1.0f - t.e_h) * inv_h * t.e_g * sig, n);
        }
      }
    }
  });
}

void low_rank_fusion_forward(const LowRankFusionProblem& p, const float* f,
                             const uint8_t* mask, float* out) {
  const int64_t M = p.M, R = p.R, B = p.B, O = p.O;
  poison(out, B * O);
  const int64_t grain =
      ceil_div(kMinWorkPerThread, std::max<int64_t>(1, M * R * O));
  parallel_ranges(B, grain, [&, M, R, B, O](int64_t, int64_t lo, int64_t hi) {
    alignas(64) float acc[kChunk];
    alignas(64) float prod[kChunk];
    for (int64_t b = lo; b < hi; ++b) {
      for (int64_t o0 = 0; o0 < O; o0 += kChunk) {
        const int64_t n = std::min(kChunk, O - o0);
        std::fill(acc, acc + n, 0.0f);
        for (int64_t r = 0; r < R; ++r) {
          std::fill(prod, prod + n, 1.0f);
          for (int64_t m = 0; m < M; ++m) {
            if (!present(mask, M, b, m)) continue;
            const float* src = f + ((m * R + r) * B + b) * O + o0;
            for (int64_t i = 0; i < n; ++i) prod[i] *= src[i];
          }
          for (int64_t i = 0; i < n; ++i) acc[i] += prod[i];
        }
        std::copy(acc, acc + n, out + b * O + o0);
      }
    }
  });
}

void low_rank_fusion_backward(const LowRankFusionProblem& p, const float* f,
                              const uint8_t* mask, const float* dout,
                              float* df) {
  const int64_t M = p.M, R = p.R, B = p.B, O = p.O;
  poison(df, M * R * B * O);
  const int64_t grain =
      ceil_div(kMinWorkPerThread, std::max<int64_t>(1, M * R * O));
  parallel_ranges(B, grain, [&, M, R, B, O](int64_t, int64_t lo, int64_t hi) {
    alignas(64) float run[kChunk];
    for (int64_t b = lo; b < hi; ++b) {
      for (int64_t o0 = 0; o0 < O; o0 += kChunk) {
        const int64_t n = std::min(kChunk, O - o0);
        for (int64_t r = 0; r < R; ++r) {
          // df[m] <- prod_{m' < m} f'[m'] (prefix products, written in place).
          std::fill(run, run + n, 1.0f);
          for (int64_t m = 0; m < M; ++m) {
            const int64_t at = ((m * R + r) * B + b) * O + o0;
            std::copy(run, run + n, df + at);
            if (!present(mask, M, b, m)) continue;
            for (int64_t i = 0; i < n; ++i) run[i] *= f[at + i];
          }
          // df[m] *= dout * prod_{m' > m} f'[m'] (suffix products).
          std::copy(dout + b * O + o0, dout + b * O + o0 + n, run);
          for (int64_t m = M - 1; m >= 0; --m) {
            const int64_t at = ((m * R + r) * B + b) * O + o0;
            if (!present(mask, M, b, m)) {
              std::fill(df + at, df + at + n, 0.0f);
              continue;
            }
            for (int64_t i = 0; i < n; ++i) {
              df[at + i] *= run[i];
              run[i] *= f[at + i];
            }
          }
        }
      }
    }
  });
}

}  // namespace MMKERAS_ISA
}  // namespace mmkeras
