// pybind11 adapter: the CPU fusion and contrastive kernels on numpy float32
// arrays (contracts in fusion.h and contrastive.h). Registered into
// mmkeras._cpu_kernels by pybind_module.cc; used by the torch glue
// (zero-copy views of CPU tensors) and by tests.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "contrastive.h"
#include "fusion.h"
#include "pybind_common.h"

namespace py = pybind11;

namespace {

using mmkeras_pybind::Bool;
using mmkeras_pybind::dims;
using mmkeras_pybind::F32;
using mmkeras_pybind::mask_dims;
using mmkeras_pybind::mask_ptr;

void check_same(const F32& x, const std::vector<int64_t>& expected,
                const char* name) {
  if (dims(x) != expected)
    throw std::invalid_argument(std::string(name) +
                                " does not have the expected shape");
}

void check_scalar(const F32& x, const char* name) {
  if (x.size() != 1)
    throw std::invalid_argument(std::string(name) + " must be a scalar");
}

F32 gated_forward(const F32& h, const F32& g, const std::optional<Bool>& mask) {
  auto p = mmkeras::make_gated_fusion_problem(dims(h), dims(g), mask_dims(mask));
  F32 out(std::vector<int64_t>{p.B, p.D});
  {
    py::gil_scoped_release release;
    mmkeras::gated_fusion_forward(p, h.data(), g.data(), mask_ptr(mask),
                                  out.mutable_data());
  }
  return out;
}

py::tuple gated_backward(const F32& h, const F32& g,
                         const std::optional<Bool>& mask, const F32& dout) {
  auto p = mmkeras::make_gated_fusion_problem(dims(h), dims(g), mask_dims(mask));
  check_same(dout, {p.B, p.D}, "dout");
  F32 dh(dims(h)), dg(dims(g));
  {
    py::gil_scoped_release release;
    mmkeras::gated_fusion_backward(p, h.data(), g.data(), mask_ptr(mask),
                                   dout.data(), dh.mutable_data(),
                                   dg.mutable_data());
  }
  return py::make_tuple(dh, dg);
}

F32 low_rank_forward(const F32& f, const std::optional<Bool>& mask) {
  auto p = mmkeras::make_low_rank_fusion_problem(dims(f), mask_dims(mask));
  F32 out(std::vector<int64_t>{p.B, p.O});
  {
    py::gil_scoped_release release;
    mmkeras::low_rank_fusion_forward(p, f.data(), mask_ptr(mask),
                                     out.mutable_data());
  }
  return out;
}

F32 low_rank_backward(const F32& f, const std::optional<Bool>& mask,
                      const F32& dout) {
  auto p = mmkeras::make_low_rank_fusion_problem(dims(f), mask_dims(mask));
  check_same(dout, {p.B, p.O}, "dout");
  F32 df(dims(f));
  {
    py::gil_scoped_release release;
    mmkeras::low_rank_fusion_backward(p, f.data(), mask_ptr(mask), dout.data(),
                                      df.mutable_data());
  }
  return df;
}

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

void register_fusion(py::module_& m) {
  m.def("gated_fusion_forward", &gated_forward, py::arg("projections"),
        py::arg("gate_logits"), py::arg("mask") = py::none(),
        "Returns out (B, D) for float32 projections and gate_logits "
        "(M, B, D) and an optional boolean modality mask (B, M).");
  m.def("gated_fusion_backward", &gated_backward, py::arg("projections"),
        py::arg("gate_logits"), py::arg("mask"), py::arg("dout"),
        "Returns (d_projections, d_gate_logits).");
  m.def("low_rank_fusion_forward", &low_rank_forward, py::arg("factors"),
        py::arg("mask") = py::none(),
        "Returns out (B, O) for float32 factors (M, R, B, O) and an optional "
        "boolean modality mask (B, M).");
  m.def("low_rank_fusion_backward", &low_rank_backward, py::arg("factors"),
        py::arg("mask"), py::arg("dout"), "Returns d_factors.");
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
