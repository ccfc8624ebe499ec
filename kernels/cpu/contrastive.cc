// Contrastive losses on the CPU without the B x B logit matrix (contract in
// contrastive.h).
//
// The logits are produced in kBlock x kBlock tiles by the same register-tiled
// micro-kernel as attention's q.k (vec.h: dot_tile against b^T tiles) and
// consumed at once:
// - forward, softmax: an online logsumexp per row (the task owning a block of
//   rows) and per column (per-thread partial statistics over that thread's
//   rows, merged at the end); the diagonal is read off the diagonal tiles.
// - forward, sigmoid: a per-thread sum of softplus terms.
// - backward: the tile's logit cotangent dL (from the saved logsumexps, or
//   the sigmoid) is multiplied into da (rows owned by the thread) and into a
//   per-thread partial db, which are reduced at the end.
// Extra memory: O(B * D) for padded copies of a and b, plus one (B, D)
// partial db per thread in the backward; never O(B^2).
#include "contrastive.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "vec.h"

namespace mmkeras {
namespace {

constexpr int64_t BLK = kBlock;  // rows and columns of a logit tile
constexpr int RT = kTileRows;
constexpr int CV = kBlockVecs;
// Logit of a padding row or column: finite, so that exp(kMasked - m) is 0
// for any real maximum m and a padding-only max never makes inf - inf.
constexpr float kMasked = -1e30f;

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

// Padded copies of a and b for one call: rows padded to Bp (a multiple of
// BLK) and Dp (a multiple of kLanes) with zeros, and b^T tiles.
struct Packed {
  int64_t B, D, Bp, nb, Dp;
  Buffer ar;  // (Bp, Dp) rows of a
  Buffer br;  // (Bp, Dp) rows of b (backward only)
  Buffer bt;  // (nb, D, BLK) b^T tiles
  Packed(const ContrastiveProblem& p, const float* a, const float* b,
         bool rows_b)
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
      }
    });
  }
  // s[r][j] = a[rb * BLK + r] . b[cb * BLK + j] for a whole tile (rows of
  // s past `rows`, rounded up to RT, are left unwritten).
  void tile(int64_t rb, int64_t cb, int64_t rows, float* s) const {
    dot_block(ar.ptr + rb * BLK * Dp, Dp, bt.ptr + cb * D * BLK, D, s,
              round_up(rows, RT));
  }
};

// Turns a tile of dot products into logits s * x + t in place; padding rows
// (r >= rows) and columns (j >= cols) become kMasked.
void to_logits(float* tile, int64_t rows, int64_t cols, float s, float t) {
  for (int64_t r = 0; r < BLK; ++r) {
    float* row = tile + r * BLK;
    if (r >= rows) {
      std::fill(row, row + BLK, kMasked);
      continue;
    }
    for (int c = 0; c < CV; ++c)
      store(row + c * kLanes, load(row + c * kLanes) * s + t);
    std::fill(row + cols, row + BLK, kMasked);
  }
}

float bias_value(const ContrastiveProblem& p, const float* bias) {
  return p.has_bias ? *bias : 0.0f;
}

void softmax_forward(const ContrastiveProblem& p, const Packed& pk, float s,
                     float t, float* loss, float* lse) {
  const int64_t B = p.B, Bp = pk.Bp, nb = pk.nb;
  const int64_t ranges = num_ranges(nb, 1);
  // Per range: online (max, sum) of every column over the range's rows.
  Buffer col_m(ranges * Bp), col_l(ranges * Bp), diag(B);
  std::vector<double> row_term(B);  // lse_r[i] - L[i, i]
  float* lse_r = lse;
  float* lse_c = lse + B;
  parallel_ranges(nb, 1, [&](int64_t c, int64_t lo, int64_t hi) {
    float* cm = col_m.ptr + c * Bp;
    float* cl = col_l.ptr + c * Bp;
    std::fill(cm, cm + Bp, kMasked);
    alignas(64) float L[BLK * BLK];
    for (int64_t rb = lo; rb < hi; ++rb) {
      const int64_t i0 = rb * BLK, rows = std::min(BLK, B - i0);
      float rm[BLK], rl[BLK];
      std::fill(rm, rm + BLK, kMasked);
      std::fill(rl, rl + BLK, 0.0f);
      for (int64_t cb = 0; cb < nb; ++cb) {
        const int64_t j0 = cb * BLK, cols = std::min(BLK, B - j0);
        pk.tile(rb, cb, rows, L);
        to_logits(L, rows, cols, s, t);
        if (rb == cb)
          for (int64_t r = 0; r < rows; ++r) diag.ptr[i0 + r] = L[r * BLK + r];
        for (int64_t r = 0; r < rows; ++r) {  // rows: online logsumexp
          const float* row = L + r * BLK;
          VF mx = load(row);
          for (int c2 = 1; c2 < CV; ++c2) mx = vmax(mx, load(row + c2 * kLanes));
          const float m_new = std::max(rm[r], hmax(mx));
          VF sum = VF{};
          for (int c2 = 0; c2 < CV; ++c2)
            sum += expv_neg(load(row + c2 * kLanes) - m_new);
          rl[r] = rl[r] * std::exp(rm[r] - m_new) + hsum(sum);
          rm[r] = m_new;
        }
        for (int c2 = 0; c2 < CV; ++c2) {  // columns: the same, 8/16 at once
          float* cmv = cm + j0 + c2 * kLanes;
          float* clv = cl + j0 + c2 * kLanes;
          VF mx = load(cmv);
          for (int64_t r = 0; r < rows; ++r)
            mx = vmax(mx, load(L + r * BLK + c2 * kLanes));
          VF sum = load(clv) * expv_neg(load(cmv) - mx);
          for (int64_t r = 0; r < rows; ++r)
            sum += expv_neg(load(L + r * BLK + c2 * kLanes) - mx);
          store(cmv, mx);
          store(clv, sum);
        }
      }
      // The loss terms lse - L[i, i] are formed in double before rounding:
      // the maximum is usually L[i, i] itself, and log(sum) is then small.
      for (int64_t r = 0; r < rows; ++r) {
        const double log_sum = std::log(static_cast<double>(rl[r]));
        lse_r[i0 + r] = static_cast<float>(rm[r] + log_sum);
        row_term[i0 + r] = (static_cast<double>(rm[r]) - diag.ptr[i0 + r]) +
                           log_sum;
      }
    }
  });
  double total = 0.0;
  for (int64_t j = 0; j < B; ++j) {
    float m = kMasked;
    for (int64_t c = 0; c < ranges; ++c) m = std::max(m, col_m.ptr[c * Bp + j]);
    double l = 0.0;
    for (int64_t c = 0; c < ranges; ++c)
      l += col_l.ptr[c * Bp + j] *
           std::exp(static_cast<double>(col_m.ptr[c * Bp + j]) - m);
    lse_c[j] = static_cast<float>(m + std::log(l));
    total += row_term[j] +
             ((static_cast<double>(m) - diag.ptr[j]) + std::log(l));
  }
  *loss = static_cast<float>(total / (2.0 * B));
}

void sigmoid_forward(const ContrastiveProblem& p, const Packed& pk, float s,
                     float t, float* loss, float* lse) {
  const int64_t B = p.B, nb = pk.nb;
  std::fill(lse, lse + 2 * B, 0.0f);
  std::vector<double> partial(num_ranges(nb, 1), 0.0);
  parallel_ranges(nb, 1, [&](int64_t c, int64_t lo, int64_t hi) {
    alignas(64) float L[BLK * BLK];
    double total = 0.0;
    for (int64_t rb = lo; rb < hi; ++rb) {
      const int64_t i0 = rb * BLK, rows = std::min(BLK, B - i0);
      for (int64_t cb = 0; cb < nb; ++cb) {
        const int64_t j0 = cb * BLK, cols = std::min(BLK, B - j0);
        pk.tile(rb, cb, rows, L);
        to_logits(L, rows, cols, s, t);
        // Term softplus(-z L): z = -1 off the diagonal, +1 on it.
        if (rb == cb)
          for (int64_t r = 0; r < rows; ++r) L[r * BLK + r] = -L[r * BLK + r];
        for (int64_t r = 0; r < rows; ++r) {
          VF sum = VF{};
          for (int c2 = 0; c2 < CV; ++c2)
            sum += softplusv(load(L + r * BLK + c2 * kLanes));
          total += hsum(sum);
        }
      }
    }
    partial[c] = total;
  });
  double total = 0.0;
  for (double x : partial) total += x;
  *loss = static_cast<float>(total / B);
}

}  // namespace

ContrastiveProblem make_contrastive_problem(const std::vector<int64_t>& a_dims,
                                            const std::vector<int64_t>& b_dims,
                                            bool sigmoid, bool has_bias) {
  if (a_dims.size() != 2 || b_dims != a_dims)
    throw std::invalid_argument(
        "a and b must both have shape (B, D) with the same B and D");
  ContrastiveProblem p;
  p.B = a_dims[0];
  p.D = a_dims[1];
  if (p.B < 1 || p.D < 0)
    throw std::invalid_argument("contrastive loss needs a batch of at least 1, "
                                "got B = " + std::to_string(p.B));
  p.sigmoid = sigmoid;
  p.has_bias = has_bias;
  return p;
}

void contrastive_forward(const ContrastiveProblem& p, const float* a,
                         const float* b, const float* scale, const float* bias,
                         float* loss, float* lse) {
  poison(loss, 1);
  poison(lse, 2 * p.B);
  const Packed pk(p, a, b, /*rows_b=*/false);
  const float s = *scale, t = bias_value(p, bias);
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
  const Packed pk(p, a, b, /*rows_b=*/true);
  const int64_t Bp = pk.Bp, nb = pk.nb, Dp = pk.Dp;
  const float s = *scale, t = bias_value(p, bias);
  const float g_over_b = *dloss / static_cast<float>(B);
  const float half = 0.5f * g_over_b;
  const float* lse_r = lse;
  // softmax: the column logsumexps and the diagonal S[i, i] = a[i] . b[i]
  // (summed in the same order as the tiles), padded to Bp.
  Buffer lse_cp(p.sigmoid ? 0 : Bp), s_diag(p.sigmoid ? 0 : Bp);
  if (!p.sigmoid) {
    std::copy(lse + B, lse + 2 * B, lse_cp.ptr);
    for (int64_t i = 0; i < B; ++i) {
      float dot = 0.0f;
      for (int64_t h = 0; h < D; ++h) dot += a[i * D + h] * b[i * D + h];
      s_diag.ptr[i] = dot;
    }
  }
  VF lanes;  // 0, 1, ..., kLanes - 1
  for (int i = 0; i < kLanes; ++i) lanes[i] = static_cast<float>(i);

  const int64_t ranges = num_ranges(nb, 1);
  Buffer db_part(ranges * Bp * Dp), da_acc(ranges * BLK * Dp);
  std::vector<double> ds_part(ranges, 0.0), dt_part(ranges, 0.0);
  parallel_ranges(nb, 1, [&](int64_t c, int64_t lo, int64_t hi) {
    alignas(64) float S[BLK * BLK];
    alignas(64) float dL[BLK * BLK];
    alignas(64) float dLT[BLK * BLK];
    float* dbc = db_part.ptr + c * Bp * Dp;
    float* dac = da_acc.ptr + c * BLK * Dp;
    double ds_total = 0.0, dt_total = 0.0;
    for (int64_t rb = lo; rb < hi; ++rb) {
      const int64_t i0 = rb * BLK, rows = std::min(BLK, B - i0);
      std::fill(dac, dac + BLK * Dp, 0.0f);
      for (int64_t cb = 0; cb < nb; ++cb) {
        const int64_t j0 = cb * BLK, cols = std::min(BLK, B - j0);
        pk.tile(rb, cb, rows, S);
        VF ds_acc = VF{}, dt_acc = VF{};
        for (int64_t r = 0; r < BLK; ++r) {
          float* dl_row = dL + r * BLK;
          if (r >= rows) {
            std::fill(dl_row, dl_row + BLK, 0.0f);
            continue;
          }
          const float* s_row = S + r * BLK;
          if (p.sigmoid) {
            for (int c2 = 0; c2 < CV; ++c2) {
              VF pos, neg;
              sigmoid_pair(load(s_row + c2 * kLanes) * s + t, &pos, &neg);
              store(dl_row + c2 * kLanes, g_over_b * pos);  // z = -1
            }
            std::fill(dl_row + cols, dl_row + BLK, 0.0f);
            if (rb == cb)  // the diagonal: z = +1
              dl_row[r] = -g_over_b * sigmoid(-(s * s_row[r] + t));
            for (int c2 = 0; c2 < CV; ++c2) {
              const VF d = load(dl_row + c2 * kLanes);
              ds_acc += d * load(s_row + c2 * kLanes);
              dt_acc += d;
            }
            continue;
          }
          // softmax: dL = (g/2B) (P + Q) - (g/B) [i == j]. The scale
          // gradient is summed as (g/2B) sum P (S - S[i, i]) + Q (S - S[j, j]),
          // equal to sum dL S (rows of P and columns of Q sum to 1) but
          // without cancelling large diagonal terms.
          const float lr = lse_r[i0 + r];
          const VF sr = splat(s_diag.ptr[i0 + r]);
          for (int c2 = 0; c2 < CV; ++c2) {
            const VF sv = load(s_row + c2 * kLanes);
            const VF logit = sv * s + t;
            const VI keep = lanes < static_cast<float>(cols - c2 * kLanes);
            const VF pv = keep ? expv_neg(logit - lr) : VF{};
            const VF qv = keep ? expv_neg(logit - load(lse_cp.ptr + j0 + c2 * kLanes))
                               : VF{};
            ds_acc += pv * (sv - sr) +
                      qv * (sv - load(s_diag.ptr + j0 + c2 * kLanes));
            const VF d = half * (pv + qv);
            dt_acc += d;
            store(dl_row + c2 * kLanes, d);
          }
          if (rb == cb) {
            dl_row[r] -= g_over_b;
            dt_total -= g_over_b;
          }
        }
        if (!p.sigmoid) ds_acc *= half;
        ds_total += hsum(ds_acc);
        dt_total += hsum(dt_acc);
        // da rows of this block += dL b_cb; db rows of cb += dL^T a_rb.
        accumulate_block(dac, Dp, dL, pk.br.ptr + j0 * Dp, Dp, cols,
                         round_up(rows, RT));
        for (int64_t r = 0; r < BLK; ++r)
          for (int64_t j = 0; j < BLK; ++j) dLT[j * BLK + r] = dL[r * BLK + j];
        accumulate_block(dbc + j0 * Dp, Dp, dLT, pk.ar.ptr + i0 * Dp, Dp, rows,
                         round_up(cols, RT));
      }
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t h = 0; h < D; ++h)
          da[(i0 + r) * D + h] = s * dac[r * Dp + h];
    }
    ds_part[c] = ds_total;
    dt_part[c] = dt_total;
  });
  parallel_for(nb, [&](int64_t kb) {
    const int64_t j0 = kb * BLK, cols = std::min(BLK, B - j0);
    for (int64_t j = j0; j < j0 + cols; ++j)
      for (int64_t h = 0; h < D; ++h) {
        float sum = 0.0f;
        for (int64_t c = 0; c < ranges; ++c) sum += db_part.ptr[(c * Bp + j) * Dp + h];
        db[j * D + h] = s * sum;
      }
  });
  double ds = 0.0, dt = 0.0;
  for (int64_t c = 0; c < ranges; ++c) {
    ds += ds_part[c];
    dt += dt_part[c];
  }
  *dscale = static_cast<float>(ds);
  *dbias = p.has_bias ? static_cast<float>(dt) : 0.0f;
}

}  // namespace mmkeras
