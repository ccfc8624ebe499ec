// pybind11 adapter: the CPU attention kernel on numpy float32 arrays
// (contract in flash_attention.h). Registered into mmkeras._cpu_kernels by
// pybind_module.cc; used by the torch glue (zero-copy views of CPU tensors)
// and by tests.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <vector>

#include "flash_attention.h"
#include "pybind_common.h"

namespace py = pybind11;
using mmkeras_pybind::Bool;
using mmkeras_pybind::dims;
using mmkeras_pybind::F32;

namespace {

mmkeras::AttentionProblem problem(const F32& q, const F32& k, const F32& v,
                                  const std::optional<Bool>& mask, bool causal,
                                  float scale) {
  return mmkeras::make_problem(dims(q), dims(k), dims(v),
                               mmkeras_pybind::mask_ptr(mask),
                               mmkeras_pybind::mask_dims(mask), causal, scale);
}

py::tuple forward(const F32& q, const F32& k, const F32& v,
                  const std::optional<Bool>& mask, bool causal, float scale,
                  bool bf16_products) {
  auto p = problem(q, k, v, mask, causal, scale);
  p.bf16_products = bf16_products;
  F32 out(dims(q));
  std::vector<int64_t> lse_dims(q.shape(), q.shape() + q.ndim() - 3);
  lse_dims.push_back(p.N);
  lse_dims.push_back(p.T);
  F32 lse(lse_dims);
  {
    py::gil_scoped_release release;
    mmkeras::attention_forward(p, q.data(), k.data(), v.data(),
                               out.mutable_data(), lse.mutable_data());
  }
  return py::make_tuple(out, lse);
}

py::tuple backward(const F32& q, const F32& k, const F32& v, const F32& out,
                   const F32& lse, const F32& dout,
                   const std::optional<Bool>& mask, bool causal, float scale,
                   bool bf16_products) {
  auto p = problem(q, k, v, mask, causal, scale);
  p.bf16_products = bf16_products;
  if (dims(out) != dims(q) || dims(dout) != dims(q) ||
      lse.size() != p.B * p.N * p.T)
    throw std::invalid_argument("out, dout or lse shape does not match query");
  F32 dq(dims(q)), dk(dims(k)), dv(dims(v));
  {
    py::gil_scoped_release release;
    mmkeras::attention_backward(p, q.data(), k.data(), v.data(), out.data(),
                                lse.data(), dout.data(), dq.mutable_data(),
                                dk.mutable_data(), dv.mutable_data());
  }
  return py::make_tuple(dq, dk, dv);
}

}  // namespace

void register_attention(py::module_& m) {
  m.def("attention_forward", &forward, py::arg("q"), py::arg("k"),
        py::arg("v"), py::arg("mask") = py::none(), py::arg("causal") = false,
        py::arg("scale") = 1.0f, py::arg("bf16_products") = false,
        "Returns (out, lse) for float32 q (..., T, N, H), k and v "
        "(..., S, K, H) and an optional boolean mask (..., N, T, S). "
        "bf16_products: the inputs hold bfloat16 values (see "
        "AttentionProblem::bf16_products).");
  m.def("attention_backward", &backward, py::arg("q"), py::arg("k"),
        py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("dout"),
        py::arg("mask") = py::none(), py::arg("causal") = false,
        py::arg("scale") = 1.0f, py::arg("bf16_products") = false,
        "Returns (dq, dk, dv).");
}
