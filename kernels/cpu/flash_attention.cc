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
  });
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
  static Packed pack(const AttentionProblem& p, const float* k,
                     const float* v) {
    Packed pk(p, /*transposed_v=*/false, /*rows_k=*/false);
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
};

#if defined(__AVX512BF16__)
// K^T tiles [H2][BC] with pairs along the head dim, and V rows [Sp/2][Hp]
// with pairs along the keys: the operands of vdpbf16ps (vec.h).
struct PackedKVBf16 {
  int64_t H2, Hp, nkb, Sp;
  AlignedBuffer<BfPair> kt;  // (B*K, nkb, H2, BC)
  AlignedBuffer<BfPair> vr;  // (B*K, Sp/2, Hp)
  explicit PackedKVBf16(const AttentionProblem& p)
      : H2(ceil_div(p.H, 2)),
        Hp(round_up(p.H, kLanes)),
        nkb(ceil_div(p.S, BC)),
        Sp(nkb * BC),
        kt(p.B * p.K * nkb * H2 * BC),
        vr(p.B * p.K * (Sp / 2) * Hp) {}
};

// Products in bfloat16 with float32 accumulation, for bfloat16 inputs (so
// q, k and v convert exactly; only the probabilities are rounded). Scores
// are scaled after the product, so that q stays exact.
struct Bf16Products {
  using Elem = BfPair;
  using Packed = PackedKVBf16;
  static Packed pack(const AttentionProblem& p, const float* k,
                     const float* v) {
    Packed pk(p);
    const int64_t H = p.H, K = p.K, S = p.S, H2 = pk.H2, Hp = pk.Hp;
    parallel_for(p.B * K * pk.nkb, [&](int64_t task) {
      const int64_t bk = task / pk.nkb, kb = task % pk.nkb;
      const int64_t b = bk / K, kvh = bk % K;
      const int64_t j0 = kb * BC, cols = std::min(BC, S - j0);
      auto row = [&](const float* x, int64_t j) {
        return x + ((b * S + j0 + j) * K + kvh) * H;
      };
      BfPair* kt = pk.kt.ptr + (bk * pk.nkb + kb) * H2 * BC;
      for (int64_t j = 0; j < cols; ++j) {
        const float* kr = row(k, j);
        for (int64_t h2 = 0; h2 < H2; ++h2)
          kt[h2 * BC + j] =
              bf16_pair(kr[2 * h2], 2 * h2 + 1 < H ? kr[2 * h2 + 1] : 0.0f);
      }
      BfPair* vr = pk.vr.ptr + (bk * (pk.Sp / 2) + j0 / 2) * Hp;
      for (int64_t jp = 0; 2 * jp < cols; ++jp) {
        const float* v0 = row(v, 2 * jp);
        const float* v1 = 2 * jp + 1 < cols ? row(v, 2 * jp + 1) : nullptr;
        for (int64_t h = 0; h < H; ++h)
          vr[jp * Hp + h] = bf16_pair(v0[h], v1 ? v1[h] : 0.0f);
      }
    });
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
    dot_tile_bf16(qs, H2, pk.kt.ptr + (bk * pk.nkb + kb) * H2 * BC, H2, s);
    for (int64_t i = 0; i < RT * BC; i += kLanes)
      store(s + i, load(s + i) * qscale);
  }
  static void accumulate(const Packed& pk, float* o, int64_t Hp,
                         const float* pbuf, int64_t bk, int64_t j0,
                         int64_t cols) {
    alignas(64) BfPair pairs[RT * BC / 2];
    pairs_of_rows(pbuf, RT, pairs);
    accumulate_rows_bf16(o, Hp, pairs,
                         pk.vr.ptr + (bk * (pk.Sp / 2) + j0 / 2) * Hp, Hp,
                         cols);
  }
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
  const typename Products::Packed pk = Products::pack(p, k, v);
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
  });
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

void attention_backward(const AttentionProblem& p, const float* q,
                        const float* k, const float* v, const float* out,
                        const float* lse, const float* dout, float* dq,
                        float* dk, float* dv) {
  check_problem(p);
  const int64_t B = p.B, T = p.T, S = p.S, N = p.N, K = p.K, H = p.H;
  const int64_t G = N / K;
  poison(dq, B * T * N * H);
  poison(dk, B * S * K * H);
  poison(dv, B * S * K * H);
  if (B == 0 || T == 0 || S == 0) {
    std::fill(dq, dq + B * T * N * H, 0.0f);
    std::fill(dk, dk + B * S * K * H, 0.0f);
    std::fill(dv, dv + B * S * K * H, 0.0f);
    return;
  }
  PackedKV pk(p, /*transposed_v=*/true, /*rows_k=*/true);
  pack_kv(p, k, v, pk);
  const int64_t Hp = pk.Hp, nkb = pk.nkb;
  const int64_t Tp = round_up(T, RT);
  const float qscale = p.scale * kLog2e;

  // Per (b, n): q scaled to base-2 logits, dO, both padded to Hp; the log2
  // logsumexp; D = rowsum(dO * O). Padding rows past T stay zero and are
  // marked dead with lse2 = +inf.
  Buffer qp(B * N * Tp * Hp), dop(B * N * Tp * Hp), lse2(B * N * Tp),
      dsum(B * N * Tp);
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
      for (int64_t h = 0; h < H; ++h) {
        qp.ptr[row * Hp + h] = q[src + h] * qscale;
        dop.ptr[row * Hp + h] = dout[src + h];
        d += dout[src + h] * out[src + h];
      }
      dsum.ptr[row] = d;
      lse2.ptr[row] = lse[bn * T + t] * kLog2e;
    }
  });

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
    alignas(64) float pt[BC * BQ];
    alignas(64) float dst[BC * BQ];
    alignas(64) float dk_acc[BC * 256];
    alignas(64) float dv_acc[BC * 256];
    const int64_t kb_lo = chunk * kb_per_chunk;
    const int64_t kb_hi = std::min(nkb, kb_lo + kb_per_chunk);
    for (int64_t kb = kb_lo; kb < kb_hi; ++kb) {
      const int64_t j0 = kb * BC, cols = std::min(BC, S - j0);
      const float* kt = pk.kt_block(bk, kb, H);
      const float* vt = pk.vt_block(bk, kb, H);
      const float* kr = pk.kr_rows(bk, j0);
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
            dot_tile(qp.ptr + row0 * Hp, Hp, kt, H, sbuf);
            dot_tile(dop.ptr + row0 * Hp, Hp, vt, H, dpbuf);
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
            // dQ rows += dS K (unscaled; scale applied in the reduction).
            if (any_row)
              accumulate_rows(dqc + row0 * Hp, Hp, dsbuf, kr, Hp, cols);
            any_group |= any_row;
            const int64_t i0 = r0 - g0;
            for (int r = 0; r < RT; ++r)
              for (int64_t j = 0; j < BC; ++j) {
                pt[j * BQ + i0 + r] = pbuf[r * BC + j];
                dst[j * BQ + i0 + r] = dsbuf[r * BC + j];
              }
          }
          if (!any_group) continue;
          const int64_t grow = bn * Tp + g0;
          accumulate_block(dv_acc, Hp, pt, dop.ptr + grow * Hp, Hp,
                           group_rows, BC);
          accumulate_block(dk_acc, Hp, dst, qp.ptr + grow * Hp, Hp,
                           group_rows, BC);
        }
      }
      // qp holds q * scale * log2(e); dK = scale * dS^T q = dS^T qp / log2(e).
      for (int64_t j = 0; j < cols; ++j) {
        const int64_t dst = ((b * S + j0 + j) * K + kvh) * H;
        for (int64_t h = 0; h < H; ++h) {
          dk[dst + h] = dk_acc[j * Hp + h] * kLn2;
          dv[dst + h] = dv_acc[j * Hp + h];
        }
      }
    }
  });

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
  });
}

}  // namespace MMKERAS_ISA
}  // namespace mmkeras
