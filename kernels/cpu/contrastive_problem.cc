// Building and checking contrastive problems from the dims of the inputs
// (contract in contrastive.h). Plain C++, compiled once for every CPU: the
// vectorized kernels are in contrastive.cc.
#include <stdexcept>
#include <string>

#include "contrastive.h"

namespace mmkeras {

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

}  // namespace mmkeras
