// SIMD helpers of the CPU kernels: GCC/Clang vector extensions that lower to
// AVX-512, AVX2 or SSE depending on the target, a few vector math functions,
// and the two register-tiled matrix-product micro-kernels that the attention
// and contrastive kernels share.
//
// Only the kernel sources include this. Each is compiled once per ISA level
// (isa.h), with MMKERAS_ISA naming the level: everything here lives in that
// level's namespace with internal linkage, so code built for one level is
// never shared with another.
#pragma once

#ifndef MMKERAS_ISA
#error "vec.h is for the kernel sources, compiled with -DMMKERAS_ISA=<level>"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common.h"

namespace mmkeras {
namespace MMKERAS_ISA {
namespace {

// Vector width and register tiles follow the target: AVX-512 has 32 vector
// registers, AVX2 and SSE 16, so the column group kept in registers is
// halved there. The baseline (SSE2) level uses its native 4-lane vectors:
// wider ones would be passed split in two, and change the ABI (-Wpsabi).
#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kGroup = 4;  // vectors per row held in registers
#elif defined(__AVX2__)
constexpr int kLanes = 8;
constexpr int kGroup = 2;
#else
constexpr int kLanes = 4;
constexpr int kGroup = 2;
#endif
constexpr int64_t kBlock = 64;  // columns of a tile (and rows of w below)
constexpr int kTileRows = 4;    // rows of a register tile
constexpr int kBlockVecs = kBlock / kLanes;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

typedef float VF __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t VI __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline VF load(const float* p) {
  VF v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store(float* p, VF v) { std::memcpy(p, &v, sizeof(v)); }
inline VF splat(float x) {
  return x - VF{};  // one vbroadcastss (a lane-by-lane fill is not, on AVX2)
}
// The first n <= kLanes floats; the other lanes are 0.
inline VF load_n(const float* p, int64_t n) {
  if (n == kLanes) return load(p);
  VF v = VF{};
  for (int64_t i = 0; i < n; ++i) v[i] = p[i];
  return v;
}
inline void store_n(float* p, VF v, int64_t n) {
  if (n == kLanes) return store(p, v);
  for (int64_t i = 0; i < n; ++i) p[i] = v[i];
}
// min/max/reciprocal map to single instructions through intrinsics: GCC
// lowers `a < b ? a : b` on vectors to a compare and a blend (twice the
// work), and 1 / x to a division that takes 5-10 times a multiply on AVX2.
// Like the instructions, vmax(a, b) and vmin(a, b) return b when either is
// NaN.
#if defined(__AVX512F__)
inline VF vmax(VF a, VF b) { return (VF)_mm512_max_ps((__m512)a, (__m512)b); }
inline VF vmin(VF a, VF b) { return (VF)_mm512_min_ps((__m512)a, (__m512)b); }
inline VF recip_estimate(VF x) { return (VF)_mm512_rcp14_ps((__m512)x); }
#elif defined(__AVX2__)
inline VF vmax(VF a, VF b) { return (VF)_mm256_max_ps((__m256)a, (__m256)b); }
inline VF vmin(VF a, VF b) { return (VF)_mm256_min_ps((__m256)a, (__m256)b); }
inline VF recip_estimate(VF x) { return (VF)_mm256_rcp_ps((__m256)x); }
#else
inline VF vmax(VF a, VF b) { return (VF)_mm_max_ps((__m128)a, (__m128)b); }
inline VF vmin(VF a, VF b) { return (VF)_mm_min_ps((__m128)a, (__m128)b); }
inline VF recip_estimate(VF x) { return (VF)_mm_rcp_ps((__m128)x); }
#endif
inline VF vabs(VF x) { return x < 0.0f ? -x : x; }
inline VF vclamp(VF x, float lo, float hi) {
  return vmin(splat(hi), vmax(splat(lo), x));
}

// 1 / x for finite x != 0 to ~2.5e-7 relative: the hardware estimate (12
// bits on AVX2, 14 on AVX-512) refined by one Newton step.
inline VF recip(VF x) {
  const VF r = recip_estimate(x);
  return r * (2.0f - x * r);
}

// 2^x for -126 <= x <= 127 (not checked): round-to-nearest split x = n + f
// with |f| <= 1/2, exp(f ln2) by its degree-6 Taylor polynomial (relative
// error ~1e-7), 2^n through the exponent bits.
inline VF exp2v_in_range(VF x) {
  const VF magic = splat(12582912.0f);  // 1.5 * 2^23: rounds to integer
  VF r = (x + magic) - magic;
  const VF y = (x - r) * kLn2;
  // Estrin's scheme: a dependency chain of 3 multiply-adds instead of
  // Horner's 6, so calls on independent vectors overlap in the pipeline.
  const VF y2 = y * y;
  const VF p01 = 1.0f + y;
  const VF p23 = 0.5f + y * (1.0f / 6.0f);
  const VF p45 = 1.0f / 24.0f + y * (1.0f / 120.0f);
  const VF p6 = splat(1.0f / 720.0f);
  const VF poly = (p01 + y2 * p23) + (y2 * y2) * (p45 + y2 * p6);
  VI bits = (__builtin_convertvector(r, VI) + 127) << 23;
  VF scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return poly * scale;
}

// 2^x for x <= 0 (x may be -inf, and NaN passes through); inputs below
// -126 flush to 0.
inline VF exp2v(VF x) {
  const VF lo = splat(-126.0f);
  const VF result = exp2v_in_range(vmax(lo, x));
  return x < lo ? VF{} : result;
}

// exp(x) for x <= 0.
inline VF expv_neg(VF x) { return exp2v(x * kLog2e); }

// sigmoid(x) and sigmoid(-x) = 1 - sigmoid(x), both to ~3e-7 relative
// (no cancellation), from e = exp(-|x|) <= 1 (never overflows).
inline void sigmoid_pair(VF x, VF* pos, VF* neg) {
  const VF e = expv_neg(-vabs(x));
  const VF inv = recip(1.0f + e);
  const VF ei = e * inv;
  *pos = x >= 0.0f ? inv : ei;
  *neg = x >= 0.0f ? ei : inv;
}

inline float hmax(VF v) {
  float m = v[0];
  for (int i = 1; i < kLanes; ++i) m = std::max(m, v[i]);
  return m;
}
inline float hsum(VF v) {
  float s = 0.0f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// The register tile of the products below: s[r][j] = sum_h x[r][h] * yt[h][j]
// for kTileRows rows of x (rows `x_stride` floats apart) and the kGroup
// vectors of columns starting at column g * kLanes of a tile yt of kBlock
// columns stored transposed ([H][kBlock]); s rows are kBlock floats apart.
// The accumulators stay in registers for the whole h loop.
inline void dot_micro(const float* x, int64_t x_stride, const float* yt,
                      int64_t H, float* s, int g) {
  VF acc[kTileRows][kGroup] = {};
  for (int64_t h = 0; h < H; ++h) {
    VF yv[kGroup];
    for (int c = 0; c < kGroup; ++c)
      yv[c] = load(yt + h * kBlock + (g + c) * kLanes);
#pragma GCC unroll 4
    for (int r = 0; r < kTileRows; ++r) {
      const VF xv = splat(x[r * x_stride + h]);
      for (int c = 0; c < kGroup; ++c) acc[r][c] += xv * yv[c];
    }
  }
  for (int r = 0; r < kTileRows; ++r)
    for (int c = 0; c < kGroup; ++c)
      store(s + r * kBlock + (g + c) * kLanes, acc[r][c]);
}

// kTileRows rows of x against all kBlock columns of yt.
inline void dot_tile(const float* x, int64_t x_stride, const float* yt,
                     int64_t H, float* s) {
  for (int g = 0; g < kBlockVecs; g += kGroup) dot_micro(x, x_stride, yt, H, s, g);
}

// `rows` (a multiple of kTileRows) rows of x against all kBlock columns of
// yt. Column groups run outermost, so each H x (kGroup * kLanes) panel of yt
// stays in L1 across the row tiles (for large H, where the whole tile does
// not fit).
inline void dot_block(const float* x, int64_t x_stride, const float* yt,
                      int64_t H, float* s, int64_t rows) {
  for (int g = 0; g < kBlockVecs; g += kGroup)
    for (int64_t r0 = 0; r0 < rows; r0 += kTileRows)
      dot_micro(x + r0 * x_stride, x_stride, yt, H, s + r0 * kBlock, g);
}

// acc[r][0..Hp) += sum_j w[r][j] * rows[j][0..Hp) for kTileRows rows,
// j < cols (w rows are kBlock floats apart, acc rows `acc_stride`, rows Hp,
// a multiple of kLanes). Chunks of kGroup vectors stay in registers across
// the j loop.
template <int NV>
inline void accumulate_chunk(float* acc, int64_t acc_stride, const float* w,
                             const float* rows, int64_t Hp, int64_t cols,
                             int64_t h0) {
  VF a[kTileRows][NV];
  for (int r = 0; r < kTileRows; ++r)
    for (int c = 0; c < NV; ++c)
      a[r][c] = load(acc + r * acc_stride + h0 + c * kLanes);
  for (int64_t j = 0; j < cols; ++j) {
    VF rv[NV];
    for (int c = 0; c < NV; ++c) rv[c] = load(rows + j * Hp + h0 + c * kLanes);
#pragma GCC unroll 4
    for (int r = 0; r < kTileRows; ++r) {
      const VF wv = splat(w[r * kBlock + j]);
      for (int c = 0; c < NV; ++c) a[r][c] += wv * rv[c];
    }
  }
  for (int r = 0; r < kTileRows; ++r)
    for (int c = 0; c < NV; ++c)
      store(acc + r * acc_stride + h0 + c * kLanes, a[r][c]);
}

// The same for `nrows` (a multiple of kTileRows) rows of acc and w, with
// the feature chunks outermost so each cols x (kGroup * kLanes) panel of
// `rows` stays in L1 across the row tiles.
inline void accumulate_block(float* acc, int64_t acc_stride, const float* w,
                             const float* rows, int64_t Hp, int64_t cols,
                             int64_t nrows) {
  int64_t h0 = 0;
  for (; h0 + kGroup * kLanes <= Hp; h0 += kGroup * kLanes)
    for (int64_t r0 = 0; r0 < nrows; r0 += kTileRows)
      accumulate_chunk<kGroup>(acc + r0 * acc_stride, acc_stride,
                               w + r0 * kBlock, rows, Hp, cols, h0);
  const int rest = static_cast<int>((Hp - h0) / kLanes);  // < kGroup vectors
  for (int64_t r0 = 0; r0 < nrows && rest > 0; r0 += kTileRows) {
    float* a = acc + r0 * acc_stride;
    const float* wr = w + r0 * kBlock;
    switch (rest) {
      case 3: accumulate_chunk<3>(a, acc_stride, wr, rows, Hp, cols, h0); break;
      case 2: accumulate_chunk<2>(a, acc_stride, wr, rows, Hp, cols, h0); break;
      case 1: accumulate_chunk<1>(a, acc_stride, wr, rows, Hp, cols, h0); break;
      default: break;
    }
  }
}

// kTileRows rows of acc and w.
inline void accumulate_rows(float* acc, int64_t acc_stride, const float* w,
                            const float* rows, int64_t Hp, int64_t cols) {
  accumulate_block(acc, acc_stride, w, rows, Hp, cols, kTileRows);
}

#if defined(__AVX512BF16__)
// bfloat16 products with float32 accumulation (AVX512-BF16's vdpbf16ps: per
// float32 lane, acc += a0 * b0 + a1 * b1 over a pair of bfloat16 values).
// Operands travel as pairs: a BfPair holds two bfloat16 values, the one of
// the lower index in the low half, so a vector of 16 pairs is one vdpbf16ps
// operand and one pair broadcast to all lanes is the other.
typedef uint32_t BfPair;

// x rounded to the nearest bfloat16 (ties to even); finite x.
inline uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline BfPair bf16_pair(float lo, float hi) {
  return static_cast<BfPair>(bf16_bits(lo)) |
         (static_cast<BfPair>(bf16_bits(hi)) << 16);
}

// Rows of w (kBlock floats each) as kBlock / 2 pairs, rounded to nearest.
inline void pairs_of_rows(const float* w, int rows, BfPair* out) {
  for (int r = 0; r < rows; ++r)
    for (int64_t c = 0; c < kBlock; c += 2 * kLanes) {
      const __m512bh v = _mm512_cvtne2ps_pbh(
          _mm512_loadu_ps(w + r * kBlock + c + kLanes),
          _mm512_loadu_ps(w + r * kBlock + c));
      _mm512_storeu_si512(out + r * (kBlock / 2) + c / 2, (__m512i)v);
    }
}

// Pairs (lo[i], hi[i]) of two float vectors rounded to bfloat16 (nearest,
// ties to even; finite values), as kLanes BfPairs.
typedef uint32_t VU __attribute__((vector_size(kLanes * sizeof(uint32_t))));
inline VU bf16_pairs(VF lo, VF hi) {
  VU a, b;
  std::memcpy(&a, &lo, sizeof(a));
  std::memcpy(&b, &hi, sizeof(b));
  a = (a + 0x7fffu + ((a >> 16) & 1u)) >> 16;
  b = (b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u;
  return a | b;
}

inline __m512bh bf16_splat(BfPair x) {
  return (__m512bh)_mm512_set1_epi32(static_cast<int>(x));
}

// dot_micro with bfloat16 products: x holds kTileRows rows of H2 pairs
// (rows `x_stride` pairs apart), yt a tile of kBlock columns stored as
// [H2][kBlock] pairs (pair h2 of column j: rows 2 h2 and 2 h2 + 1 of y^T).
inline void dot_micro_bf16(const BfPair* x, int64_t x_stride,
                           const BfPair* yt, int64_t H2, float* s, int g) {
  __m512 acc[kTileRows][kGroup];
  for (int r = 0; r < kTileRows; ++r)
    for (int c = 0; c < kGroup; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t h = 0; h < H2; ++h) {
    __m512bh yv[kGroup];
    for (int c = 0; c < kGroup; ++c)
      yv[c] = (__m512bh)_mm512_loadu_si512(yt + h * kBlock + (g + c) * kLanes);
#pragma GCC unroll 4
    for (int r = 0; r < kTileRows; ++r) {
      const __m512bh xv = bf16_splat(x[r * x_stride + h]);
      for (int c = 0; c < kGroup; ++c)
        acc[r][c] = _mm512_dpbf16_ps(acc[r][c], xv, yv[c]);
    }
  }
  for (int r = 0; r < kTileRows; ++r)
    for (int c = 0; c < kGroup; ++c)
      _mm512_storeu_ps(s + r * kBlock + (g + c) * kLanes, acc[r][c]);
}

inline void dot_tile_bf16(const BfPair* x, int64_t x_stride,
                          const BfPair* yt, int64_t H2, float* s) {
  for (int g = 0; g < kBlockVecs; g += kGroup)
    dot_micro_bf16(x, x_stride, yt, H2, s, g);
}

// accumulate_chunk with bfloat16 products: pair jp of row r of w (its
// columns 2 jp and 2 jp + 1) is w[r * w_row + jp * w_pair]; `rows` holds
// pairs of rows [jp][Hp] (pair (jp, h): rows 2 jp and 2 jp + 1 at feature h).
template <int NV>
inline void accumulate_chunk_bf16(float* acc, int64_t acc_stride,
                                  const BfPair* w, int64_t w_row,
                                  int64_t w_pair, const BfPair* rows,
                                  int64_t Hp, int64_t cols, int64_t h0) {
  __m512 a[kTileRows][NV];
  for (int r = 0; r < kTileRows; ++r)
    for (int c = 0; c < NV; ++c)
      a[r][c] = _mm512_loadu_ps(acc + r * acc_stride + h0 + c * kLanes);
  for (int64_t jp = 0; jp < (cols + 1) / 2; ++jp) {
    __m512bh rv[NV];
    for (int c = 0; c < NV; ++c)
      rv[c] = (__m512bh)_mm512_loadu_si512(rows + jp * Hp + h0 + c * kLanes);
#pragma GCC unroll 4
    for (int r = 0; r < kTileRows; ++r) {
      const __m512bh wv = bf16_splat(w[r * w_row + jp * w_pair]);
      for (int c = 0; c < NV; ++c) a[r][c] = _mm512_dpbf16_ps(a[r][c], wv, rv[c]);
    }
  }
  for (int r = 0; r < kTileRows; ++r)
    for (int c = 0; c < NV; ++c)
      _mm512_storeu_ps(acc + r * acc_stride + h0 + c * kLanes, a[r][c]);
}

// accumulate_block with bfloat16 products: `nrows` (a multiple of
// kTileRows) rows of acc and of w (strides as in accumulate_chunk_bf16).
inline void accumulate_block_bf16(float* acc, int64_t acc_stride,
                                  const BfPair* w, int64_t w_row,
                                  int64_t w_pair, const BfPair* rows,
                                  int64_t Hp, int64_t cols, int64_t nrows) {
  int64_t h0 = 0;
  for (; h0 + kGroup * kLanes <= Hp; h0 += kGroup * kLanes)
    for (int64_t r0 = 0; r0 < nrows; r0 += kTileRows)
      accumulate_chunk_bf16<kGroup>(acc + r0 * acc_stride, acc_stride,
                                    w + r0 * w_row, w_row, w_pair, rows, Hp,
                                    cols, h0);
  const int rest = static_cast<int>((Hp - h0) / kLanes);  // < kGroup vectors
  for (int64_t r0 = 0; r0 < nrows && rest > 0; r0 += kTileRows) {
    float* a = acc + r0 * acc_stride;
    const BfPair* wr = w + r0 * w_row;
    switch (rest) {
      case 3: accumulate_chunk_bf16<3>(a, acc_stride, wr, w_row, w_pair, rows, Hp, cols, h0); break;
      case 2: accumulate_chunk_bf16<2>(a, acc_stride, wr, w_row, w_pair, rows, Hp, cols, h0); break;
      case 1: accumulate_chunk_bf16<1>(a, acc_stride, wr, w_row, w_pair, rows, Hp, cols, h0); break;
      default: break;
    }
  }
}

// kTileRows rows of acc and of w, w's rows kBlock / 2 contiguous pairs.
inline void accumulate_rows_bf16(float* acc, int64_t acc_stride,
                                 const BfPair* w, const BfPair* rows,
                                 int64_t Hp, int64_t cols) {
  accumulate_block_bf16(acc, acc_stride, w, kBlock / 2, 1, rows, Hp, cols,
                        kTileRows);
}
#endif

}  // namespace
}  // namespace MMKERAS_ISA
}  // namespace mmkeras
