// Building and checking fusion problems from the dims of the inputs
// (contract in fusion.h). Plain C++, compiled once for every CPU: the
// vectorized kernels are in fusion.cc.
#include <stdexcept>
#include <string>
#include <vector>

#include "fusion.h"

namespace mmkeras {
namespace {

std::string dims_str(const std::vector<int64_t>& d) {
  std::string s = "(";
  for (size_t i = 0; i < d.size(); ++i)
    s += (i ? ", " : "") + std::to_string(d[i]);
  return s + (d.size() == 1 ? ",)" : ")");
}

void check_mask(const std::vector<int64_t>& mask_dims, int64_t B, int64_t M) {
  if (!mask_dims.empty() && mask_dims != std::vector<int64_t>{B, M})
    throw std::invalid_argument("modality mask must have shape (B, M) = " +
                                dims_str({B, M}) + ", got " +
                                dims_str(mask_dims));
}

}  // namespace

GatedFusionProblem make_gated_fusion_problem(
    const std::vector<int64_t>& h_dims, const std::vector<int64_t>& g_dims,
    const std::vector<int64_t>& mask_dims) {
  if (h_dims.size() != 3 || g_dims != h_dims)
    throw std::invalid_argument(
        "projections and gate_logits must both have shape (M, B, D), got " +
        dims_str(h_dims) + " and " + dims_str(g_dims));
  GatedFusionProblem p{h_dims[0], h_dims[1], h_dims[2]};
  if (p.M < 1 || p.B < 0 || p.D < 0)
    throw std::invalid_argument("gated fusion needs at least one modality");
  check_mask(mask_dims, p.B, p.M);
  return p;
}

LowRankFusionProblem make_low_rank_fusion_problem(
    const std::vector<int64_t>& f_dims, const std::vector<int64_t>& mask_dims) {
  if (f_dims.size() != 4)
    throw std::invalid_argument("factors must have shape (M, R, B, O), got " +
                                dims_str(f_dims));
  LowRankFusionProblem p{f_dims[0], f_dims[1], f_dims[2], f_dims[3]};
  if (p.M < 1 || p.R < 1 || p.B < 0 || p.O < 0)
    throw std::invalid_argument(
        "low-rank fusion needs at least one modality and rank >= 1, got " +
        dims_str(f_dims));
  check_mask(mask_dims, p.B, p.M);
  return p;
}

}  // namespace mmkeras
