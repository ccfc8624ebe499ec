// Building and checking attention problems from the dims of the inputs
// (contract in flash_attention.h). Plain C++, compiled once for every CPU:
// the vectorized kernels are in flash_attention.cc.
#include <stdexcept>
#include <string>

#include "flash_attention.h"

namespace mmkeras {

MaskView make_mask_view(const uint8_t* data,
                        const std::vector<int64_t>& mask_dims,
                        const std::vector<int64_t>& batch_dims, int64_t N,
                        int64_t T, int64_t S) {
  const size_t lead = batch_dims.size();
  if (mask_dims.size() != lead + 3)
    throw std::invalid_argument("mask must have rank " +
                                std::to_string(lead + 3));
  std::vector<int64_t> full = batch_dims;
  full.push_back(N);
  full.push_back(T);
  full.push_back(S);
  std::vector<int64_t> strides(full.size());
  int64_t stride = 1;
  for (int64_t d = full.size() - 1; d >= 0; --d) {
    if (mask_dims[d] != 1 && mask_dims[d] != full[d])
      throw std::invalid_argument(
          "mask dim " + std::to_string(d) + " is " +
          std::to_string(mask_dims[d]) + ", expected 1 or " +
          std::to_string(full[d]));
    strides[d] = mask_dims[d] == 1 ? 0 : stride;
    stride *= mask_dims[d];
  }
  MaskView m;
  m.data = data;
  m.stride_n = strides[lead];
  m.stride_t = strides[lead + 1];
  m.stride_s = strides[lead + 2];
  int64_t B = 1;
  for (int64_t d : batch_dims) B *= d;
  m.batch_offset.assign(B, 0);
  for (int64_t b = 0; b < B; ++b) {
    int64_t rest = b, off = 0;
    for (int64_t d = lead - 1; d >= 0; --d) {
      off += (rest % batch_dims[d]) * strides[d];
      rest /= batch_dims[d];
    }
    m.batch_offset[b] = off;
  }
  return m;
}

AttentionProblem make_problem(const std::vector<int64_t>& q_dims,
                              const std::vector<int64_t>& k_dims,
                              const std::vector<int64_t>& v_dims,
                              const uint8_t* mask,
                              const std::vector<int64_t>& mask_dims,
                              bool causal, float scale) {
  const size_t rank = q_dims.size();
  if (rank < 4 || k_dims.size() != rank || v_dims.size() != rank)
    throw std::invalid_argument(
        "query, key and value must have the same rank >= 4");
  const size_t lead = rank - 3;
  std::vector<int64_t> batch(q_dims.begin(), q_dims.begin() + lead);
  for (size_t d = 0; d < rank; ++d) {
    const bool batch_dim = d < lead;
    if (k_dims[d] != v_dims[d] || (batch_dim && k_dims[d] != q_dims[d]))
      throw std::invalid_argument("query, key and value dims do not match");
  }
  AttentionProblem p;
  p.B = 1;
  for (int64_t d : batch) p.B *= d;
  p.T = q_dims[lead];
  p.N = q_dims[lead + 1];
  p.H = q_dims[lead + 2];
  p.S = k_dims[lead];
  p.K = k_dims[lead + 1];
  if (k_dims[lead + 2] != p.H)
    throw std::invalid_argument("key head dim differs from query head dim");
  p.causal = causal;
  p.scale = scale;
  if (mask) p.mask = make_mask_view(mask, mask_dims, batch, p.N, p.T, p.S);
  check_problem(p);
  return p;
}

void check_problem(const AttentionProblem& p) {
  if (p.B < 0 || p.T < 0 || p.S < 0 || p.N < 1 || p.K < 1 || p.H < 1)
    throw std::invalid_argument("attention sizes must be positive");
  if (p.N % p.K != 0)
    throw std::invalid_argument("number of query heads (" + std::to_string(p.N) +
                                ") must be a multiple of key/value heads (" +
                                std::to_string(p.K) + ")");
  if (p.H > 256)
    throw std::invalid_argument("head dim must be at most 256, got " +
                                std::to_string(p.H));
  if (p.mask.data && static_cast<int64_t>(p.mask.batch_offset.size()) != p.B)
    throw std::invalid_argument("mask batch offsets do not match the batch");
}

}  // namespace mmkeras
