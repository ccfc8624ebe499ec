// pybind11 adapter: the CPU contrastive-loss kernels on numpy float32 arrays
// (contract in contrastive.h). Registered into mmkeras._cpu_kernels by
// pybind_module.cc; used by the torch glue (zero-copy views of CPU tensors)
// and by tests.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <vector>

#include "contrastive.h"
#include "pybind_common.h"

namespace py = pybind11;

namespace {

using mmkeras_pybind::check_same;
using mmkeras_pybind::check_scalar;
using mmkeras_pybind::dims;
using mmkeras_pybind::F32;

mmkeras::ContrastiveProblem contrastive_problem(
    const F32& a, const F32& b, const F32& scale,
    const std::optional<F32>& bias, bool sigmoid) {
  check_scalar(scale, "logit_scale");
  if (bias) check_scalar(*bias, "logit_bias");
  return mmkeras::make_contrastive_problem(dims(a), dims(b), sigmoid,
                                           bias.has_value());
}

py::tuple contrastive_forward(const F32& a, const F32& b, const F32& scale,
                              const std::optional<F32>& bias, bool sigmoid) {
  auto p = contrastive_problem(a, b, scale, bias, sigmoid);
  F32 loss(std::vector<int64_t>{});
  F32 lse(std::vector<int64_t>{2, p.B});
  {
    py::gil_scoped_release release;
    mmkeras::contrastive_forward(p, a.data(), b.data(), scale.data(),
                                 bias ? bias->data() : nullptr,
                                 loss.mutable_data(), lse.mutable_data());
  }
  return py::make_tuple(loss, lse);
}

py::tuple contrastive_backward(const F32& a, const F32& b, const F32& scale,
                               const std::optional<F32>& bias, const F32& lse,
                               const F32& dloss, bool sigmoid) {
  auto p = contrastive_problem(a, b, scale, bias, sigmoid);
  check_same(lse, {2, p.B}, "lse");
  check_scalar(dloss, "dloss");
  F32 da(dims(a)), db(dims(b));
  F32 dscale(std::vector<int64_t>{}), dbias(std::vector<int64_t>{});
  {
    py::gil_scoped_release release;
    mmkeras::contrastive_backward(
        p, a.data(), b.data(), scale.data(), bias ? bias->data() : nullptr,
        lse.data(), dloss.data(), da.mutable_data(), db.mutable_data(),
        dscale.mutable_data(), dbias.mutable_data());
  }
  return py::make_tuple(da, db, dscale, dbias);
}

}  // namespace

void register_contrastive(py::module_& m) {
  m.def("contrastive_forward", &contrastive_forward, py::arg("a"),
        py::arg("b"), py::arg("logit_scale"), py::arg("logit_bias") = py::none(),
        py::arg("sigmoid") = false,
        "Returns (loss, lse) for float32 a and b (B, D) and scalar "
        "logit_scale / logit_bias; lse (2, B) is the backward's residual.");
  m.def("contrastive_backward", &contrastive_backward, py::arg("a"),
        py::arg("b"), py::arg("logit_scale"), py::arg("logit_bias"),
        py::arg("lse"), py::arg("dloss"), py::arg("sigmoid") = false,
        "Returns (da, db, dlogit_scale, dlogit_bias); dlogit_bias is 0 "
        "without a bias.");
}
