// FlashAttention-2 on the CPU: tiled forward with an online softmax that never
// holds a T x S buffer, and a backward that recomputes the probabilities from
// the saved logsumexp.
//
// Vectorization uses the GCC/Clang vector extensions of vec.h, which lower to
// AVX-512, AVX2 or SSE depending on the target. K and V are repacked once per
// call into padded, tiled copies so the inner loops run on aligned, unit-stride
// vectors: K^T tiles [H][BC] for q.k (broadcast one q value, FMA over 16
// keys), and row tiles [BC][Hp] for p.V (broadcast one p value, FMA over 16
// head features).
#include "flash_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "isa.h"
#include "vec.h"

namespace mmkeras {
namespace MMKERAS_ISA {
namespace {

constexpr int64_t BR = 64;       // query rows per forward task
constexpr int64_t BC = kBlock;   // keys per block
constexpr int64_t BQ = kBlock;   // query rows per backward dK/dV group
constexpr int RT = kTileRows;    // query rows per register tile
constexpr int CV = kBlockVecs;   // vectors per key block
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Threads for a call: one when the whole call is smaller than starting a
// thread costs (a decoding step: T = 1 against a KV cache), else all.
inline int workers_for(const AttentionProblem& p) {
  constexpr int64_t kSerialWork = int64_t{1} << 20;  // B*N*T*S*H
  return p.B * p.N * p.T * p.S * p.H < kSerialWork ? 1 : 0;
}

// The packed, padded copies of K (and V) for one call.
struct PackedKV {
  int64_t Hp, nkb, Sp;
  Buffer kt;  // (B*K, nkb, H, BC): K^T tiles
  Buffer kr;  // (B*K, Sp, Hp): K rows
  Buffer vt;  // (B*K, nkb, H, BC): V^T tiles
  Buffer vr;  // (B*K, Sp, Hp): V rows
  PackedKV(const AttentionProblem& p, bool transposed_v, bool rows_k)
      : Hp(round_up(p.H, kLanes)),
        nkb(ceil_div(p.S, BC)),
        Sp(nkb * BC),
        kt(p.B * p.K * nkb * p.H * BC),
        kr(rows_k ? p.B * p.K * Sp * Hp : 0),
        vt(transposed_v ? p.B * p.K * nkb * p.H * BC : 0),
        vr(p.B * p.K * Sp * Hp) {}
  const float* kt_block(int64_t bk, int64_t kb, int64_t H) const {
    return kt.ptr + (bk * nkb + kb) * H * BC;
  }
  const float* vt_block(int64_t bk, int64_t kb, int64_t H) const {
    return vt.ptr + (bk * nkb + kb) * H * BC;
  }
  const float* kr_rows(int64_t bk, int64_t j0) const {
    return kr.ptr + (bk * Sp + j0) * Hp;
  }
  const float* vr_rows(int64_t bk, int64_t j0) const {
    return vr.ptr + (bk * Sp + j0) * Hp;
  }
};

void pack_kv(const AttentionProblem& p, const float* k, const float* v,
             PackedKV& pk) {
  const int64_t H = p.H, K = p.K, S = p.S, Hp = pk.Hp;
  parallel_for(p.B * K * pk.nkb, [&](int64_t task) {
    const int64_t bk = task / pk.nkb, kb = task % pk.nkb;
    const int64_t b = bk / K, kvh = bk % K;
    const int64_t j0 = kb * BC, cols = std::min(BC, S - j0);
    float* kt = pk.kt.ptr + (bk * pk.nkb + kb) * H * BC;
    float* vt = pk.vt.ptr ? pk.vt.ptr + (bk * pk.nkb + kb) * H * BC : nullptr;
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t src = ((b * S + j0 + j) * K + kvh) * H;
      const float* krow = k + src;
      const float* vrow = v + src;
      for (int64_t h = 0; h < H; ++h) kt[h * BC + j] = krow[h];
      if (vt)
        for (int64_t h = 0; h < H; ++h) vt[h * BC + j] = vrow[h];
      std::memcpy(pk.vr.ptr + (bk * pk.Sp + j0 + j) * Hp, vrow,
                  H * sizeof(float));
      if (pk.kr.ptr)
        std::memcpy(pk.kr.ptr + (bk * pk.Sp + j0 + j) * Hp, krow,
                    H * sizeof(float));
    }
  }, workers_for(p));
}

// Which keys of block [j0, j0 + cols) row t may attend: writes 0 or -inf
// into bias[0..BC) (keys past `cols` are -inf). Returns false when the row
// attends every key of the block (bias all zero).
inline bool key_bias(const AttentionProblem& p, const uint8_t* mask_row,
                     int64_t t, int64_t j0, int64_t cols, float* bias) {
  const int64_t causal_end = p.causal ? std::min(cols, t - j0 + 1) : cols;
  if (!mask_row && causal_end >= BC) return false;
  for (int64_t j = 0; j < BC; ++j) {
    bool ok = j < causal_end;
    if (ok && mask_row) ok = mask_row[(j0 + j) * p.mask.stride_s] != 0;
    bias[j] = ok ? 0.0f : kNegInf;
  }
  return true;
}

inline const uint8_t* mask_row(const AttentionProblem& p, int64_t b, int64_t n,
                               int64_t t) {
  if (!p.mask.data) return nullptr;
  return p.mask.data + p.mask.batch_offset[b] + n * p.mask.stride_n +
         t * p.mask.stride_t;
}

// How the forward multiplies: the policy supplies the packed K and V, the
// query rows, the score tile (base-2 logits) and the P.V accumulation; the
// online softmax around them is shared.
struct Fp32Products {
  using Elem = float;  // element of a query row
  using Packed = PackedKV;
  // The backward also needs V^T tiles and K rows.
  static Packed pack(const AttentionProblem& p, const float* k,
                     const float* v, bool backward) {
    Packed pk(p, /*transposed_v=*/backward, /*rows_k=*/backward);
    pack_kv(p, k, v, pk);
    return pk;
  }
  static int64_t row_len(int64_t H) { return H; }
  // Query rows pre-scaled to base-2 logits.
  static void load_row(const float* src, int64_t H, float qscale, float* dst) {
    for (int64_t h = 0; h < H; ++h) dst[h] = src ? src[h] * qscale : 0.0f;
  }
  static void scores(const Packed& pk, const float* qs, int64_t H,
                     int64_t bk, int64_t kb, float /*qscale*/, float* s) {
    dot_tile(qs, H, pk.kt_block(bk, kb, H), H, s);
  }
  static void accumulate(const Packed& pk, float* o, int64_t Hp,
                         const float* pbuf, int64_t bk, int64_t j0,
                         int64_t cols) {
    accumulate_rows(o, Hp, pbuf, pk.vr_rows(bk, j0), Hp, cols);
  }

  // The backward's operands.
  // q pre-scaled to base-2 logits and dO, by row (B * N * Tp rows of Hp).
  struct Rows {
    int64_t Hp;
    Buffer q, dout;
    Rows(int64_t rows, int64_t /*H*/, int64_t Hp)
        : Hp(Hp), q(rows * Hp), dout(rows * Hp) {}
    void set(int64_t row, const float* q_src, const float* dout_src,
             int64_t H, float qscale) {
      for (int64_t h = 0; h < H; ++h) {
        q.ptr[row * Hp + h] = q_src[h] * qscale;
        dout.ptr[row * Hp + h] = dout_src[h];
      }
    }
  };
  static void bwd_scores(const Rows& rw, const Packed& pk, int64_t row0,
                         int64_t bk, int64_t kb, int64_t H, float /*qscale*/,
                         float* s) {
    dot_tile(rw.q.ptr + row0 * rw.Hp, rw.Hp, pk.kt_block(bk, kb, H), H, s);
  }
  static void bwd_dprobs(const Rows& rw, const Packed& pk, int64_t row0,
                         int64_t bk, int64_t kb, int64_t H, float* dp) {
    dot_tile(rw.dout.ptr + row0 * rw.Hp, rw.Hp, pk.vt_block(bk, kb, H), H, dp);
  }
  // dQ rows += dS K (unscaled; the scale is applied in the reduction).
  static void bwd_dq(const Packed& pk, float* dq, int64_t Hp,
                     const float* ds, int64_t bk, int64_t j0, int64_t cols) {
    accumulate_rows(dq, Hp, ds, pk.kr_rows(bk, j0), Hp, cols);
  }
  // P and dS of a group of BQ query rows, transposed ([key][row]).
  using GroupElem = float;
  static constexpr int64_t kGroupStride = BQ;
  static void transpose_into(GroupElem* dst, int64_t i0, const float* src) {
    for (int r = 0; r < RT; ++r)
      for (int64_t j = 0; j < BC; ++j) dst[j * BQ + i0 + r] = src[r * BC + j];
  }
  // acc[BC][Hp] += w^T rows, over the `rows` query rows of the group.
  static void bwd_group(float* acc, int64_t Hp, const GroupElem* w,
                        const Rows& rw, bool of_q, int64_t grow,
                        int64_t rows) {
    const Buffer& x = of_q ? rw.q : rw.dout;
    accumulate_block(acc, Hp, w, x.ptr + grow * Hp, Hp, rows, BC);
  }
  // dK = scale * dS^T q = dS^T (q * scale * log2(e)) * ln(2).
  static float dk_factor(const AttentionProblem&) { return kLn2; }
};

#if defined(__AVX512BF16__)
// The operands of vdpbf16ps (vec.h): K^T tiles [H2][BC] with pairs along
// the head dim (scores), V rows [Sp/2][Hp] with pairs along the keys (P.V);
// for the backward also V^T tiles like K's (dP = dO V^T) and K rows like
// V's (dQ = dS K).
struct PackedKVBf16 {
  int64_t H2, Hp, nkb, Sp;
  AlignedBuffer<BfPair> kt;  // (B*K, nkb, H2, BC)
  AlignedBuffer<BfPair> vt;  // (B*K, nkb, H2, BC), backward only
  AlignedBuffer<BfPair> kr;  // (B*K, Sp/2, Hp), backward only
  AlignedBuffer<BfPair> vr;  // (B*K, Sp/2, Hp)
  PackedKVBf16(const AttentionProblem& p, bool backward)
      : H2(ceil_div(p.H, 2)),
        Hp(round_up(p.H, kLanes)),
        nkb(ceil_div(p.S, BC)),
        Sp(nkb * BC),
        kt(p.B * p.K * nkb * H2 * BC),
        vt(backward ? p.B * p.K * nkb * H2 * BC : 0),
        kr(backward ? p.B * p.K * (Sp / 2) * Hp : 0),
        vr(p.B * p.K * (Sp / 2) * Hp) {}
  const BfPair* kt_block(int64_t bk, int64_t kb) const {
    return kt.ptr + (bk * nkb + kb) * H2 * BC;
  }
  const BfPair* vt_block(int64_t bk, int64_t kb) const {
    return vt.ptr + (bk * nkb + kb) * H2 * BC;
  }
  const BfPair* kr_rows(int64_t bk, int64_t j0) const {
    return kr.ptr + (bk * (Sp / 2) + j0 / 2) * Hp;
  }
  const BfPair* vr_rows(int64_t bk, int64_t j0) const {
    return vr.ptr + (bk * (Sp / 2) + j0 / 2) * Hp;
  }
};

void pack_kv_bf16(const AttentionProblem& p, const float* k, const float* v,
                  PackedKVBf16& pk) {
  const int64_t H = p.H, K = p.K, S = p.S, H2 = pk.H2, Hp = pk.Hp;
  parallel_for(p.B * K * pk.nkb, [&](int64_t task) {
    const int64_t bk = task / pk.nkb, kb = task % pk.nkb;
    const int64_t b = bk / K, kvh = bk % K;
    const int64_t j0 = kb * BC, cols = std::min(BC, S - j0);
    auto row = [&](const float* x, int64_t j) {
      return x + ((b * S + j0 + j) * K + kvh) * H;
    };
    // Pairs along the head dim: tile[h2][j] = (x[j][2 h2], x[j][2 h2 + 1]).
    auto transposed = [&](const float* x, BfPair* tile) {
      for (int64_t j = 0; j < cols; ++j) {
        const float* xr = row(x, j);
        for (int64_t h2 = 0; h2 < H2; ++h2)
          tile[h2 * BC + j] =
              bf16_pair(xr[2 * h2], 2 * h2 + 1 < H ? xr[2 * h2 + 1] : 0.0f);
      }
    };
    // Pairs along the keys: rows[jp][h] = (x[2 jp][h], x[2 jp + 1][h]).
    auto by_key_pairs = [&](const float* x, BfPair* rows) {
      for (int64_t jp = 0; 2 * jp < cols; ++jp) {
        const float* x0 = row(x, 2 * jp);
        const float* x1 = 2 * jp + 1 < cols ? row(x, 2 * jp + 1) : nullptr;
        for (int64_t h = 0; h < H; ++h)
          rows[jp * Hp + h] = bf16_pair(x0[h], x1 ? x1[h] : 0.0f);
      }
    };
    transposed(k, pk.kt.ptr + (bk * pk.nkb + kb) * H2 * BC);
    by_key_pairs(v, pk.vr.ptr + (bk * (pk.Sp / 2) + j0 / 2) * Hp);
    if (pk.vt.ptr) transposed(v, pk.vt.ptr + (bk * pk.nkb + kb) * H2 * BC);
    if (pk.kr.ptr) by_key_pairs(k, pk.kr.ptr + (bk * (pk.Sp / 2) + j0 / 2) * Hp);
  }, workers_for(p));
}

// Products in bfloat16 with float32 accumulation, for bfloat16 inputs (so
// q, k and v convert exactly; only the probabilities are rounded). Scores
// are scaled after the product, so that q stays exact.
struct Bf16Products {
  using Elem = BfPair;
  using Packed = PackedKVBf16;
  static Packed pack(const AttentionProblem& p, const float* k,
                     const float* v, bool backward) {
    Packed pk(p, backward);
    pack_kv_bf16(p, k, v, pk);
    return pk;
  }
  static int64_t row_len(int64_t H) { return ceil_div(H, 2); }
  static void load_row(const float* src, int64_t H, float /*qscale*/,
                       BfPair* dst) {
    for (int64_t h2 = 0; 2 * h2 < H; ++h2)
      dst[h2] = src ? bf16_pair(src[2 * h2],
                                2 * h2 + 1 < H ? src[2 * h2 + 1] : 0.0f)
                    : 0u;
  }
  static void scores(const Packed& pk, const BfPair* qs, int64_t /*H*/,
                     int64_t bk, int64_t kb, float qscale, float* s) {
    const int64_t H2 = pk.H2;
    dot_tile_bf16(qs, H2, pk.kt_block(bk, kb), H2, s);
    scale_tile(s, qscale);
  }
  static void scale_tile(float* s, float factor) {
    for (int64_t i = 0; i < RT * BC; i += kLanes)
      store(s + i, load(s + i) * factor);
  }
  static void accumulate(const Packed& pk, float* o, int64_t Hp,
                         const float* pbuf, int64_t bk, int64_t j0,
                         int64_t cols) {
    alignas(64) BfPair pairs[RT * BC / 2];
    pairs_of_rows(pbuf, RT, pairs);
    accumulate_rows_bf16(o, Hp, pairs, pk.vr_rows(bk, j0), Hp, cols);
  }

  // The backward's operands: q (unscaled, exact) and dO (exact too: the
  // gradient of a bfloat16 output) as pairs along the head dim for the
  // score and dP tiles, and as pairs along the query rows for dK and dV.
  struct Rows {
    int64_t H2, Hp;
    AlignedBuffer<BfPair> q, dout;            // (rows, H2)
    AlignedBuffer<uint16_t> q_rows, dout_rows;  // (rows / 2, Hp, 2)
    Rows(int64_t rows, int64_t H, int64_t Hp)
        : H2(ceil_div(H, 2)), Hp(Hp), q(rows * H2), dout(rows * H2),
          q_rows(rows * Hp), dout_rows(rows * Hp) {}
    void set(int64_t row, const float* q_src, const float* dout_src,
             int64_t H, float /*qscale*/) {
      Bf16Products::load_row(q_src, H, 0.0f, q.ptr + row * H2);
      Bf16Products::load_row(dout_src, H, 0.0f, dout.ptr + row * H2);
      uint16_t* qr = q_rows.ptr + ((row / 2) * Hp) * 2 + (row & 1);
      uint16_t* dr = dout_rows.ptr + ((row / 2) * Hp) * 2 + (row & 1);
      for (int64_t h = 0; h < H; ++h) {
        qr[2 * h] = bf16_bits(q_src[h]);
        dr[2 * h] = bf16_bits(dout_src[h]);
      }
    }
  };
  static void bwd_scores(const Rows& rw, const Packed& pk, int64_t row0,
                         int64_t bk, int64_t kb, int64_t /*H*/, float qscale,
                         float* s) {
    dot_tile_bf16(rw.q.ptr + row0 * rw.H2, rw.H2, pk.kt_block(bk, kb), rw.H2,
                  s);
    scale_tile(s, qscale);
  }
  static void bwd_dprobs(const Rows& rw, const Packed& pk, int64_t row0,
                         int64_t bk, int64_t kb, int64_t /*H*/, float* dp) {
    dot_tile_bf16(rw.dout.ptr + row0 * rw.H2, rw.H2, pk.vt_block(bk, kb),
                  rw.H2, dp);
  }
  static void bwd_dq(const Packed& pk, float* dq, int64_t Hp,
                     const float* ds, int64_t bk, int64_t j0, int64_t cols) {
    alignas(64) BfPair pairs[RT * BC / 2];
    pairs_of_rows(ds, RT, pairs);
    accumulate_rows_bf16(dq, Hp, pairs, pk.kr_rows(bk, j0), Hp, cols);
  }
  // [row pair][key]: pairs along the group's query rows, which need no
  // transpose (dV and dK read them with strides).
  using GroupElem = BfPair;
  static constexpr int64_t kGroupStride = BQ / 2;
  static void transpose_into(GroupElem* dst, int64_t i0, const float* src) {
    for (int r = 0; r < RT; r += 2)
      for (int64_t j = 0; j < BC; j += kLanes) {
        const VU pairs =
            bf16_pairs(load(src + r * BC + j), load(src + (r + 1) * BC + j));
        std::memcpy(dst + (i0 + r) / 2 * BC + j, &pairs, sizeof(pairs));
      }
  }
  static void bwd_group(float* acc, int64_t Hp, const GroupElem* w,
                        const Rows& rw, bool of_q, int64_t grow,
                        int64_t rows) {
    const uint16_t* x = (of_q ? rw.q_rows : rw.dout_rows).ptr + grow * Hp;
    accumulate_block_bf16(acc, Hp, w, /*w_row=*/1, /*w_pair=*/BC,
                          reinterpret_cast<const BfPair*>(x), Hp, rows, BC);
  }
  // q is unscaled here: dK = scale * dS^T q.
  static float dk_factor(const AttentionProblem& p) { return p.scale; }
};
#endif

}  // namespace

namespace {

template <typename Products>
void forward(const AttentionProblem& p, const float* q, const float* k,
             const float* v, float* out, float* lse) {
  const int64_t B = p.B, T = p.T, S = p.S, N = p.N, K = p.K, H = p.H;
  poison(out, B * T * N * H);
  poison(lse, B * N * T);
  if (B == 0 || T == 0) return;
  if (S == 0) {  // nothing to attend to
    std::fill(out, out + B * T * N * H, 0.0f);
    std::fill(lse, lse + B * N * T, std::numeric_limits<float>::infinity());
    return;
  }
  const int64_t G = N / K;
  const typename Products::Packed pk = Products::pack(p, k, v, false);
  const int64_t Hp = pk.Hp, nkb = pk.nkb, nqb = ceil_div(T, BR);
  const int64_t QL = Products::row_len(H);
  const float qscale = p.scale * kLog2e;  // logits in base 2

  parallel_for(B * N * nqb, [&](int64_t task) {
    const int64_t qb = task % nqb, n = (task / nqb) % N, b = task / (nqb * N);
    const int64_t bk = b * K + n / G;
    const int64_t t0 = qb * BR, rows = std::min(BR, T - t0);
    const int64_t tiles = ceil_div(rows, RT);
    alignas(64) typename Products::Elem qs[BR * 256];
    alignas(64) float o[BR * 256];
    alignas(64) float sbuf[RT * BC];
    alignas(64) float pbuf[RT * BC];
    alignas(64) float bias[BC];
    float m[BR], l[BR];
    for (int64_t r = 0; r < tiles * RT; ++r) {
      Products::load_row(
          r < rows ? q + ((b * T + t0 + r) * N + n) * H : nullptr, H, qscale,
          qs + r * QL);
      std::fill(o + r * Hp, o + (r + 1) * Hp, 0.0f);
      m[r] = kNegInf;
      l[r] = 0.0f;
    }
    const int64_t kb_end =
        p.causal ? std::min(nkb, ceil_div(t0 + rows, BC)) : nkb;
    for (int64_t kb = 0; kb < kb_end; ++kb) {
      const int64_t j0 = kb * BC, cols = std::min(BC, S - j0);
      for (int64_t tile = 0; tile < tiles; ++tile) {
        const int64_t r0 = tile * RT;
        if (p.causal && j0 > t0 + r0 + RT - 1) continue;  // tile sees none of it
        Products::scores(pk, qs + r0 * QL, H, bk, kb, qscale, sbuf);
        const uint8_t* cached_row = nullptr;
        bool cached_any = false;
        bool any_row = false;
        for (int r = 0; r < RT; ++r) {
          const int64_t t = std::min(t0 + r0 + r, T - 1);
          const uint8_t* mrow = mask_row(p, b, n, t);
          // Key-padding masks share one row: rebuild the bias only on change.
          bool has_bias;
          if (mrow && mrow == cached_row && !p.causal) {
            has_bias = cached_any;
          } else {
            has_bias = key_bias(p, mrow, t, j0, cols, bias);
            cached_row = mrow;
            cached_any = has_bias;
          }
          float* srow = sbuf + r * BC;
          if (has_bias)
            for (int c = 0; c < CV; ++c)
              store(srow + c * kLanes,
                    load(srow + c * kLanes) + load(bias + c * kLanes));
          VF mx = load(srow);
          for (int c = 1; c < CV; ++c) {
            const VF x = load(srow + c * kLanes);
            mx = mx > x ? mx : x;
          }
          const float m_new = std::max(m[r0 + r], hmax(mx));
          float* prow = pbuf + r * BC;
          if (m_new == kNegInf) {  // nothing attended yet in this row
            std::fill(prow, prow + BC, 0.0f);
            continue;
          }
          any_row = true;
          const float alpha = exp2f(m[r0 + r] - m_new);
          VF sum = VF{};
          for (int c = 0; c < CV; ++c) {
            VF pv = exp2v(load(srow + c * kLanes) - m_new);
            sum += pv;
            store(prow + c * kLanes, pv);
          }
          l[r0 + r] = l[r0 + r] * alpha + hsum(sum);
          m[r0 + r] = m_new;
          if (alpha != 1.0f) {
            float* orow = o + (r0 + r) * Hp;
            for (int64_t h = 0; h < Hp; h += kLanes)
              store(orow + h, load(orow + h) * alpha);
          }
        }
        if (any_row)
          Products::accumulate(pk, o + r0 * Hp, Hp, pbuf, bk, j0, cols);
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = t0 + r;
      float* dst = out + ((b * T + t) * N + n) * H;
      if (l[r] == 0.0f) {
        std::fill(dst, dst + H, 0.0f);
        lse[(b * N + n) * T + t] = std::numeric_limits<float>::infinity();
        continue;
      }
      const float inv = 1.0f / l[r];
      for (int64_t h = 0; h < H; ++h) dst[h] = o[r * Hp + h] * inv;
      lse[(b * N + n) * T + t] = (m[r] + std::log2(l[r])) * kLn2;
    }
  }, workers_for(p));
}

}  // namespace

void attention_forward(const AttentionProblem& p, const float* q,
                       const float* k, const float* v, float* out, float* lse) {
  check_problem(p);
#if defined(__AVX512BF16__)
  if (p.bf16_products) return forward<Bf16Products>(p, q, k, v, out, lse);
#endif
  forward<Fp32Products>(p, q, k, v, out, lse);
}

namespace {

template <typename Products>
void backward(const AttentionProblem& p, const float* q, const float* k,
              const float* v, const float* out, const float* lse,
              const float* dout, float* dq, float* dk, float* dv) {
  const int64_t B = p.B, T = p.T, S = p.S, N = p.N, K = p.K, H = p.H;
  const int64_t G = N / K;
  const typename Products::Packed pk = Products::pack(p, k, v, true);
  const int64_t Hp = pk.Hp, nkb = pk.nkb;
  const int64_t Tp = round_up(T, RT);
  const float qscale = p.scale * kLog2e;

  // Per (b, n): the operand rows of q and dO (Products::Rows), padded; the
  // log2 logsumexp; D = rowsum(dO * O). Padding rows past T stay zero and
  // are marked dead with lse2 = +inf.
  typename Products::Rows rows(B * N * Tp, H, Hp);
  Buffer lse2(B * N * Tp), dsum(B * N * Tp);
  parallel_for(B * N, [&](int64_t bn) {
    const int64_t b = bn / N, n = bn % N;
    for (int64_t t = 0; t < Tp; ++t) {
      const int64_t row = bn * Tp + t;
      if (t >= T) {
        lse2.ptr[row] = std::numeric_limits<float>::infinity();
        continue;
      }
      const int64_t src = ((b * T + t) * N + n) * H;
      float d = 0.0f;
      for (int64_t h = 0; h < H; ++h) d += dout[src + h] * out[src + h];
      rows.set(row, q + src, dout + src, H, qscale);
      dsum.ptr[row] = d;
      lse2.ptr[row] = lse[bn * T + t] * kLog2e;
    }
  }, workers_for(p));

  // Tasks own a range of key blocks of one (b, kv head): they own dK and dV
  // there and need no atomics. With few (b, kv head) pairs the key blocks are
  // split into chunks whose dQ contributions go to separate partial buffers.
  const int64_t want = 4 * static_cast<int64_t>(num_threads());
  const int64_t chunks =
      std::min(nkb, std::max<int64_t>(1, ceil_div(want, B * K)));
  const int64_t kb_per_chunk = ceil_div(nkb, chunks);
  Buffer dq_part(chunks * B * N * Tp * Hp);

  parallel_for(B * K * chunks, [&](int64_t task) {
    const int64_t chunk = task % chunks, bk = task / chunks;
    const int64_t b = bk / K, kvh = bk % K;
    float* dqc = dq_part.ptr + chunk * B * N * Tp * Hp;
    alignas(64) float sbuf[RT * BC];
    alignas(64) float dpbuf[RT * BC];
    alignas(64) float pbuf[RT * BC];
    alignas(64) float dsbuf[RT * BC];
    alignas(64) float bias[BC];
    // P and dS of a group of BQ query rows, transposed ([key][row]): dV and
    // dK take them as register-tiled products (dV += P^T dO, dK += dS^T Q),
    // so their accumulators are loaded and stored once per group instead of
    // once per RT rows.
    using GroupElem = typename Products::GroupElem;
    alignas(64) GroupElem pt[BC * Products::kGroupStride];
    alignas(64) GroupElem dst[BC * Products::kGroupStride];
    alignas(64) float dk_acc[BC * 256];
    alignas(64) float dv_acc[BC * 256];
    const int64_t kb_lo = chunk * kb_per_chunk;
    const int64_t kb_hi = std::min(nkb, kb_lo + kb_per_chunk);
    for (int64_t kb = kb_lo; kb < kb_hi; ++kb) {
      const int64_t j0 = kb * BC, cols = std::min(BC, S - j0);
      std::fill(dk_acc, dk_acc + BC * Hp, 0.0f);
      std::fill(dv_acc, dv_acc + BC * Hp, 0.0f);
      for (int64_t n = kvh * G; n < (kvh + 1) * G; ++n) {
        const int64_t bn = b * N + n;
        const int64_t t_start = p.causal ? (j0 / RT) * RT : 0;
        for (int64_t g0 = t_start; g0 < Tp; g0 += BQ) {
          const int64_t group_rows = std::min(BQ, Tp - g0);  // multiple of RT
          bool any_group = false;
          for (int64_t r0 = g0; r0 < g0 + group_rows; r0 += RT) {
            const int64_t row0 = bn * Tp + r0;
            Products::bwd_scores(rows, pk, row0, bk, kb, H, qscale, sbuf);
            Products::bwd_dprobs(rows, pk, row0, bk, kb, H, dpbuf);
            bool any_row = false;
            for (int r = 0; r < RT; ++r) {
              const int64_t t = r0 + r;
              const float l2 = lse2.ptr[row0 + r];
              float* prow = pbuf + r * BC;
              float* dsrow = dsbuf + r * BC;
              if (t >= T || std::isinf(l2)) {  // padding or fully masked row
                std::fill(prow, prow + BC, 0.0f);
                std::fill(dsrow, dsrow + BC, 0.0f);
                continue;
              }
              any_row = true;
              const bool has_bias =
                  key_bias(p, mask_row(p, b, n, t), t, j0, cols, bias);
              const VF d = splat(dsum.ptr[row0 + r]);
              for (int c = 0; c < CV; ++c) {
                VF x = load(sbuf + r * BC + c * kLanes) - l2;
                if (has_bias) x += load(bias + c * kLanes);
                const VF pv = exp2v(x);
                store(prow + c * kLanes, pv);
                store(dsrow + c * kLanes,
                      pv * (load(dpbuf + r * BC + c * kLanes) - d));
              }
            }
            if (any_row)
              Products::bwd_dq(pk, dqc + row0 * Hp, Hp, dsbuf, bk, j0, cols);
            any_group |= any_row;
            Products::transpose_into(pt, r0 - g0, pbuf);
            Products::transpose_into(dst, r0 - g0, dsbuf);
          }
          if (!any_group) continue;
          const int64_t grow = bn * Tp + g0;
          Products::bwd_group(dv_acc, Hp, pt, rows, /*of_q=*/false, grow,
                              group_rows);
          Products::bwd_group(dk_acc, Hp, dst, rows, /*of_q=*/true, grow,
                              group_rows);
        }
      }
      const float dk_factor = Products::dk_factor(p);
      for (int64_t j = 0; j < cols; ++j) {
        const int64_t dst_row = ((b * S + j0 + j) * K + kvh) * H;
        for (int64_t h = 0; h < H; ++h) {
          dk[dst_row + h] = dk_acc[j * Hp + h] * dk_factor;
          dv[dst_row + h] = dv_acc[j * Hp + h];
        }
      }
    }
  }, workers_for(p));

  parallel_for(B * N, [&](int64_t bn) {
    const int64_t b = bn / N, n = bn % N;
    for (int64_t t = 0; t < T; ++t) {
      float* dst = dq + ((b * T + t) * N + n) * H;
      std::fill(dst, dst + H, 0.0f);
      for (int64_t c = 0; c < chunks; ++c) {
        const float* src = dq_part.ptr + ((c * B * N + bn) * Tp + t) * Hp;
        for (int64_t h = 0; h < H; ++h) dst[h] += src[h] * p.scale;
      }
    }
  }, workers_for(p));
}

}  // namespace

void attention_backward(const AttentionProblem& p, const float* q,
                        const float* k, const float* v, const float* out,
                        const float* lse, const float* dout, float* dq,
                        float* dk, float* dv) {
  check_problem(p);
  const int64_t B = p.B, T = p.T, S = p.S, N = p.N, K = p.K, H = p.H;
  poison(dq, B * T * N * H);
  poison(dk, B * S * K * H);
  poison(dv, B * S * K * H);
  if (B == 0 || T == 0 || S == 0) {
    std::fill(dq, dq + B * T * N * H, 0.0f);
    std::fill(dk, dk + B * S * K * H, 0.0f);
    std::fill(dv, dv + B * S * K * H, 0.0f);
    return;
  }
#if defined(__AVX512BF16__)
  if (p.bf16_products)
    return backward<Bf16Products>(p, q, k, v, out, lse, dout, dq, dk, dv);
#endif
  backward<Fp32Products>(p, q, k, v, out, lse, dout, dq, dk, dv);
}

}  // namespace MMKERAS_ISA
}  // namespace mmkeras
