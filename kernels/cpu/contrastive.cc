// Contrastive losses on the CPU without the B x B logit matrix (contract in
// contrastive.h).
//
// The logits are produced in kBlock x kBlock tiles by the register-tiled
// micro-kernel that attention's q.k uses (vec.h: dot_block against b^T
// tiles) and consumed at once; the gradient products dA = dL B and
// dB = dL^T A use vec.h's accumulate_block (the micro-kernel of attention's
// P V). Only those three products are O(B^2 D), and they run at about the
// speed of a BLAS matmul; the rest is O(B^2) element-wise work per tile,
// done in as few passes over the tile as possible:
// - forward, softmax: one pass turns the tile's dot products into logits
//   and takes their row and column maxima; a second sums, per row and per
//   column, exp(L - that maximum); the sums are merged into an online
//   logsumexp per row (in the task owning the row block) and per column
//   (per-worker partial statistics, merged at the end).
// - forward, sigmoid: a per-worker sum of softplus terms.
// - backward: the tile's logit cotangent dL (from the saved logsumexps, or
//   the sigmoid) is multiplied into da (rows owned by the task) and into a
//   per-worker partial db, which are reduced at the end.
// The forward and the backward compute the logits of a tile with the same
// expression (s * S + t from the same dot products), so the backward's
// probabilities are consistent with the saved logsumexps.
//
// Work split: tasks are 64-row blocks of logits (all columns), handed out
// dynamically to the worker threads, so that a thread slowed down by
// another process does not hold the others up.
// Speed: the three products dominate. On a 2-core AVX2 machine (2026-11)
// the micro-kernels ran at the speed of OpenBLAS sgemm in isolation and at
// ~80% of it here; the element-wise work was ~12% of the backward and ~20%
// of the forward at D = 256 (benchmarks/RESULTS.md).
// Extra memory: O(B * D) for padded copies of a and b, plus one (B, D)
// partial db per worker in the backward; never O(B^2).
#include "contrastive.h"

#include <atomic>
#include <cmath>
#include <stdexcept>
#include <string>

#include "isa.h"
#include "vec.h"

namespace mmkeras {
namespace MMKERAS_ISA {
namespace {

constexpr int64_t BLK = kBlock;  // rows and columns of a logit tile
constexpr int RT = kTileRows;
constexpr int CV = kBlockVecs;
// Logit of a padding column: finite, so that exp(kMasked - m) is 0 for any
// real maximum m and a padding-only max never makes inf - inf.
constexpr float kMasked = -1e30f;

// Workers of parallel_tasks(n, ...): one per thread, at most one per task.
inline int64_t num_workers(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>(num_threads(), n));
}

// Runs fn(worker, task) for every task in [0, n), handed out dynamically to
// num_workers(n) threads; `worker` in [0, num_workers(n)) indexes
// per-thread scratch (one worker never runs two tasks at once).
template <typename F>
void parallel_tasks(int64_t n, F fn) {
  std::atomic<int64_t> next{0};
  parallel_for(num_workers(n), [&](int64_t w) {
    for (int64_t i = next++; i < n; i = next++) fn(w, i);
  });
}

// softplus(x) = max(x, 0) + log1p(exp(-|x|)), with log1p(e) = 2 atanh(u),
// u = e / (2 + e) in [0, 1/3], as an odd series to u^15 (truncation < 1e-9
// relative); softplus(kMasked) is exactly 0.
inline VF softplusv(VF x) {
  const VF e = expv_neg(-vabs(x));
  const VF u = e / (2.0f + e);
  const VF u2 = u * u;
  VF poly = splat(1.0f / 15.0f);
  poly = poly * u2 + 1.0f / 13.0f;
  poly = poly * u2 + 1.0f / 11.0f;
  poly = poly * u2 + 1.0f / 9.0f;
  poly = poly * u2 + 1.0f / 7.0f;
  poly = poly * u2 + 1.0f / 5.0f;
  poly = poly * u2 + 1.0f / 3.0f;
  poly = poly * u2 + 1.0f;
  return vmax(x, VF{}) + 2.0f * u * poly;
}

inline float sigmoid(float x) {
  const float e = std::exp(-std::fabs(x));
  return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

// Online logsumexp of 8/16 rows or columns at once: the state (m, l) holds
// l = sum exp(x - m) over what was seen; `sum` is a tile's sum of
// exp(x - ref), ref its maximum there. m only grows.
inline void merge(VF* m, VF* l, VF ref, VF sum) {
  const VF m_new = vmax(*m, ref);
  *l = *l * expv_neg(*m - m_new) + sum * expv_neg(ref - m_new);
  *m = m_new;
}

// Padded copies of a and b for one call: rows padded to Bp (a multiple of
// BLK) and Dp (a multiple of kLanes) with zeros, and b^T tiles (columns
// past B are zero).
struct Packed {
  int64_t B, D, Bp, nb, Dp;
  Buffer ar;  // (Bp, Dp) rows of a
  Buffer br;  // (Bp, Dp) rows of b (backward only)
  Buffer bt;  // (nb, D, BLK) b^T tiles
  // diag, when given, receives a[i] . b[i] for i < B.
  Packed(const ContrastiveProblem& p, const float* a, const float* b,
         bool rows_b, float* diag)
      : B(p.B),
        D(p.D),
        Bp(round_up(p.B, BLK)),
        nb(Bp / BLK),
        Dp(round_up(std::max<int64_t>(p.D, 1), kLanes)),
        ar(Bp * Dp),
        br(rows_b ? Bp * Dp : 0),
        bt(nb * D * BLK) {
    parallel_for(nb, [&](int64_t kb) {
      const int64_t j0 = kb * BLK, cols = std::min(BLK, B - j0);
      float* tile = bt.ptr + kb * D * BLK;
      for (int64_t j = 0; j < cols; ++j) {
        const float* arow = a + (j0 + j) * D;
        const float* brow = b + (j0 + j) * D;
        std::copy(arow, arow + D, ar.ptr + (j0 + j) * Dp);
        if (br.ptr) std::copy(brow, brow + D, br.ptr + (j0 + j) * Dp);
        for (int64_t h = 0; h < D; ++h) tile[h * BLK + j] = brow[h];
        if (diag) {
          float dot = 0.0f;
          for (int64_t h = 0; h < D; ++h) dot += arow[h] * brow[h];
          diag[j0 + j] = dot;
        }
      }
    });
  }
  // x[r][j] = a[rb * BLK + r] . b[cb * BLK + j] for a whole tile (0 for
  // padding columns; rows of x past `rows`, rounded up to RT, are left
  // unwritten).
  void tile(int64_t rb, int64_t cb, int64_t rows, float* x) const {
    dot_block(ar.ptr + rb * BLK * Dp, Dp, bt.ptr + cb * D * BLK, D, x,
              round_up(rows, RT));
  }
};

float bias_value(const ContrastiveProblem& p, const float* bias) {
  return p.has_bias ? *bias : 0.0f;
}

// The logits of a tile, L = s S + t, in place of the dot products S, with
// the same expression as the backward uses; padding columns become kMasked.
// Rows past `rows` are left alone.
inline void to_logits(float* tile, int64_t rows, const VF* tk, float s) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = tile + r * BLK;
    for (int c = 0; c < CV; ++c)
      store(row + c * kLanes, load(row + c * kLanes) * s + tk[c]);
  }
}

// tk[c]: the bias for the real columns (j < cols) of a tile, kMasked for the
// padding ones: L = s S + tk is then kMasked there, as S is 0.
inline void column_bias(float t, int64_t cols, VF* tk) {
  alignas(64) float v[BLK];
  for (int64_t j = 0; j < BLK; ++j) v[j] = j < cols ? t : kMasked;
  for (int c = 0; c < CV; ++c) tk[c] = load(v + c * kLanes);
}

void softmax_forward(const ContrastiveProblem& p, const Packed& pk, float s,
                     float t, float* loss, float* lse) {
  const int64_t B = p.B, Bp = pk.Bp, nb = pk.nb;
  const int64_t workers = num_workers(nb);
  // Per worker: online (max, sum) of every column over the worker's rows.
  Buffer col_m(workers * Bp), col_l(workers * Bp);
  // Per row: final (max, sum); the diagonal L[i, i].
  Buffer row_m(Bp), row_l(Bp), diag(Bp);
  std::fill(col_m.ptr, col_m.ptr + workers * Bp, kMasked);
  parallel_tasks(nb, [&](int64_t w, int64_t rb) {
    float* cm = col_m.ptr + w * Bp;
    float* cl = col_l.ptr + w * Bp;
    alignas(64) float L[BLK * BLK];
    alignas(64) float rm[BLK], rl[BLK], rmax[BLK], rsum[BLK];
    std::fill(rm, rm + BLK, kMasked);
    std::fill(rl, rl + BLK, 0.0f);
    std::fill(rmax, rmax + BLK, kMasked);
    std::fill(rsum, rsum + BLK, 0.0f);
    const int64_t i0 = rb * BLK, rows = std::min(BLK, B - i0);
    VF tk[CV];
    for (int64_t cb = 0; cb < nb; ++cb) {
      const int64_t j0 = cb * BLK, cols = std::min(BLK, B - j0);
      column_bias(t, cols, tk);
      pk.tile(rb, cb, rows, L);
      // Logits, and the tile's row and column maxima, in one pass.
      VF cmax[CV];
      for (int c = 0; c < CV; ++c) cmax[c] = splat(kMasked);
      for (int64_t r = 0; r < rows; ++r) {
        float* x = L + r * BLK;
        VF mx = splat(kMasked);
        for (int c = 0; c < CV; ++c) {
          const VF v = load(x + c * kLanes) * s + tk[c];
          store(x + c * kLanes, v);
          mx = vmax(mx, v);
          cmax[c] = vmax(cmax[c], v);
        }
        rmax[r] = hmax(mx);
      }
      if (rb == cb)
        for (int64_t r = 0; r < rows; ++r) diag.ptr[i0 + r] = L[r * BLK + r];
      // Each row and column summed against its own maximum in this tile,
      // then merged into the running statistics.
      VF csum[CV] = {};
      for (int64_t r = 0; r < rows; ++r) {
        const float* x = L + r * BLK;
        const VF mr = splat(rmax[r]);
        VF sum = VF{};
        for (int c = 0; c < CV; ++c) {
          const VF v = load(x + c * kLanes);
          sum += expv_neg(v - mr);
          csum[c] += expv_neg(v - cmax[c]);
        }
        rsum[r] = hsum(sum);
      }
      for (int64_t r = 0; r < BLK; r += kLanes) {
        VF m = load(rm + r), l = load(rl + r);
        merge(&m, &l, load(rmax + r), load(rsum + r));
        store(rm + r, m);
        store(rl + r, l);
      }
      for (int c = 0; c < CV; ++c) {
        VF m = load(cm + j0 + c * kLanes), l = load(cl + j0 + c * kLanes);
        merge(&m, &l, cmax[c], csum[c]);
        store(cm + j0 + c * kLanes, m);
        store(cl + j0 + c * kLanes, l);
      }
    }
    std::copy(rm, rm + rows, row_m.ptr + i0);
    std::copy(rl, rl + rows, row_l.ptr + i0);
  });
  // The loss terms lse - L[i, i] are formed in double before rounding: the
  // maximum is usually L[i, i] itself, and log(sum) is then small.
  float* lse_r = lse;
  float* lse_c = lse + B;
  double total = 0.0;
  for (int64_t i = 0; i < B; ++i) {
    const double log_sum = std::log(static_cast<double>(row_l.ptr[i]));
    lse_r[i] = static_cast<float>(row_m.ptr[i] + log_sum);
    total += (static_cast<double>(row_m.ptr[i]) - diag.ptr[i]) + log_sum;
  }
  for (int64_t j = 0; j < B; ++j) {
    float m = kMasked;
    for (int64_t w = 0; w < workers; ++w) m = std::max(m, col_m.ptr[w * Bp + j]);
    double l = 0.0;
    for (int64_t w = 0; w < workers; ++w)
      l += col_l.ptr[w * Bp + j] *
           std::exp(static_cast<double>(col_m.ptr[w * Bp + j]) - m);
    const double log_sum = std::log(l);
    lse_c[j] = static_cast<float>(m + log_sum);
    total += (static_cast<double>(m) - diag.ptr[j]) + log_sum;
  }
  *loss = static_cast<float>(total / (2.0 * B));
}

void sigmoid_forward(const ContrastiveProblem& p, const Packed& pk, float s,
                     float t, float* loss, float* lse) {
  const int64_t B = p.B, nb = pk.nb;
  std::fill(lse, lse + 2 * B, 0.0f);
  std::vector<double> partial(num_workers(nb), 0.0);
  parallel_tasks(nb, [&](int64_t w, int64_t rb) {
    alignas(64) float L[BLK * BLK];
    VF tk[CV];
    double total = 0.0;
    const int64_t i0 = rb * BLK, rows = std::min(BLK, B - i0);
    for (int64_t cb = 0; cb < nb; ++cb) {
      column_bias(t, std::min(BLK, B - cb * BLK), tk);
      pk.tile(rb, cb, rows, L);
      to_logits(L, rows, tk, s);
      // Term softplus(-z L): z = -1 off the diagonal, +1 on it.
      if (rb == cb)
        for (int64_t r = 0; r < rows; ++r) L[r * BLK + r] = -L[r * BLK + r];
      for (int64_t r = 0; r < rows; ++r) {
        const float* x = L + r * BLK;
        VF sum = VF{};
        for (int c = 0; c < CV; ++c) sum += softplusv(load(x + c * kLanes));
        total += hsum(sum);
      }
    }
    partial[w] += total;
  });
  double total = 0.0;
  for (double x : partial) total += x;
  *loss = static_cast<float>(total / B);
}

}  // namespace

void contrastive_forward(const ContrastiveProblem& p, const float* a,
                         const float* b, const float* scale, const float* bias,
                         float* loss, float* lse) {
  poison(loss, 1);
  poison(lse, 2 * p.B);
  const float s = *scale, t = bias_value(p, bias);
  const Packed pk(p, a, b, /*rows_b=*/false, /*diag=*/nullptr);
  if (p.sigmoid)
    sigmoid_forward(p, pk, s, t, loss, lse);
  else
    softmax_forward(p, pk, s, t, loss, lse);
}

void contrastive_backward(const ContrastiveProblem& p, const float* a,
                          const float* b, const float* scale,
                          const float* bias, const float* lse,
                          const float* dloss, float* da, float* db,
                          float* dscale, float* dbias) {
  const int64_t B = p.B, D = p.D;
  poison(da, B * D);
  poison(db, B * D);
  poison(dscale, 1);
  poison(dbias, 1);
  const int64_t Bp = round_up(B, BLK), nb = Bp / BLK;
  // softmax: the diagonal S[i, i] = a[i] . b[i] and the column logsumexps,
  // padded to Bp.
  Buffer s_diag(p.sigmoid ? 0 : Bp), lse_cp(p.sigmoid ? 0 : Bp);
  const Packed pk(p, a, b, /*rows_b=*/true, s_diag.ptr);
  if (!p.sigmoid) std::copy(lse + B, lse + 2 * B, lse_cp.ptr);
  const int64_t Dp = pk.Dp;
  const float s = *scale, t = bias_value(p, bias);
  const float g_over_b = *dloss / static_cast<float>(B);
  const float half = 0.5f * g_over_b;
  const float* lse_r = lse;

  const int64_t workers = num_workers(nb);
  Buffer db_part(workers * Bp * Dp), da_acc(workers * BLK * Dp);
  std::vector<double> ds_part(workers, 0.0), dt_part(workers, 0.0);
  parallel_tasks(nb, [&](int64_t w, int64_t rb) {
    alignas(64) float S[BLK * BLK];
    alignas(64) float dL[BLK * BLK];
    alignas(64) float dLT[BLK * BLK];
    float* dbw = db_part.ptr + w * Bp * Dp;
    float* dac = da_acc.ptr + w * BLK * Dp;
    double ds_total = 0.0, dt_total = 0.0;
    const int64_t i0 = rb * BLK, rows = std::min(BLK, B - i0);
    const int64_t rows_rt = round_up(rows, RT);
    std::fill(dac, dac + BLK * Dp, 0.0f);
    VF tk[CV];
    for (int64_t cb = 0; cb < nb; ++cb) {
      const int64_t j0 = cb * BLK, cols = std::min(BLK, B - j0);
      column_bias(t, cols, tk);
      pk.tile(rb, cb, rows, S);
      VF ds_acc = VF{}, dt_acc = VF{};
      if (p.sigmoid) {
        // dL = -(g/B) z sigmoid(-z L): (g/B) sigmoid(L) off the diagonal
        // (0 in padding columns, where L = kMasked).
        for (int64_t r = 0; r < rows; ++r) {
          const float* s_row = S + r * BLK;
          float* dl_row = dL + r * BLK;
          for (int c = 0; c < CV; ++c) {
            const VF sv = load(s_row + c * kLanes);
            VF pos, neg;
            sigmoid_pair(sv * s + tk[c], &pos, &neg);
            const VF d = g_over_b * pos;
            store(dl_row + c * kLanes, d);
            ds_acc += d * sv;
            dt_acc += d;
          }
        }
        if (rb == cb)  // the diagonal: z = +1
          for (int64_t r = 0; r < rows; ++r) {
            const float sv = S[r * BLK + r];
            const float d = -g_over_b * sigmoid(-(s * sv + t));
            const float delta = d - dL[r * BLK + r];
            dL[r * BLK + r] = d;
            ds_total += static_cast<double>(delta) * sv;
            dt_total += delta;
          }
      } else {
        // dL = (g/2B) (P + Q) - (g/B) [i == j], P = exp(L - lse_r[i]),
        // Q = exp(L - lse_c[j]); both 0 in padding columns. The scale
        // gradient is summed as (g/2B) sum P (S - S[i, i]) + Q (S - S[j, j]),
        // equal to sum dL S (rows of P and columns of Q sum to 1) but
        // without cancelling large diagonal terms.
        const float* lc = lse_cp.ptr + j0;
        const float* sd = s_diag.ptr + j0;
        for (int64_t r = 0; r < rows; ++r) {
          const float* s_row = S + r * BLK;
          float* dl_row = dL + r * BLK;
          const float lr = lse_r[i0 + r];
          const VF sr = splat(s_diag.ptr[i0 + r]);
          VF acc = VF{};
          for (int c = 0; c < CV; ++c) {
            const VF sv = load(s_row + c * kLanes);
            const VF logit = sv * s + tk[c];
            const VF pv = expv_neg(logit - lr);
            const VF qv = expv_neg(logit - load(lc + c * kLanes));
            acc += pv * (sv - sr) + qv * (sv - load(sd + c * kLanes));
            const VF d = half * (pv + qv);
            dt_acc += d;
            store(dl_row + c * kLanes, d);
          }
          ds_acc += half * acc;
        }
        if (rb == cb)
          for (int64_t r = 0; r < rows; ++r) {
            dL[r * BLK + r] -= g_over_b;
            dt_total -= g_over_b;
          }
      }
      ds_total += hsum(ds_acc);
      dt_total += hsum(dt_acc);
      // Rows of dL past `rows` (up to the register tile) are read below.
      std::fill(dL + rows * BLK, dL + rows_rt * BLK, 0.0f);
      // da rows of this block += dL b_cb; db rows of cb += dL^T a_rb.
      accumulate_block(dac, Dp, dL, pk.br.ptr + j0 * Dp, Dp, cols, rows_rt);
      const int64_t cols_rt = round_up(cols, RT);
      for (int64_t j = 0; j < cols_rt; ++j)
        for (int64_t r = 0; r < rows; ++r) dLT[j * BLK + r] = dL[r * BLK + j];
      accumulate_block(dbw + j0 * Dp, Dp, dLT, pk.ar.ptr + i0 * Dp, Dp, rows,
                       cols_rt);
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t h = 0; h < D; ++h)
        da[(i0 + r) * D + h] = s * dac[r * Dp + h];
    ds_part[w] += ds_total;
    dt_part[w] += dt_total;
  });
  parallel_for(nb, [&](int64_t kb) {
    const int64_t j0 = kb * BLK, cols = std::min(BLK, B - j0);
    for (int64_t j = j0; j < j0 + cols; ++j)
      for (int64_t h = 0; h < D; ++h) {
        float sum = 0.0f;
        for (int64_t w = 0; w < workers; ++w)
          sum += db_part.ptr[(w * Bp + j) * Dp + h];
        db[j * D + h] = s * sum;
      }
  });
  double ds = 0.0, dt = 0.0;
  for (int64_t w = 0; w < workers; ++w) {
    ds += ds_part[w];
    dt += dt_part[w];
  }
  *dscale = static_cast<float>(ds);
  *dbias = p.has_bias ? static_cast<float>(dt) : 0.0f;
}

}  // namespace MMKERAS_ISA
}  // namespace mmkeras
