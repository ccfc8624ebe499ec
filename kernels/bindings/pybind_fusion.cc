// pybind11 adapter: the CPU fusion kernels on numpy float32 arrays (contract
// in fusion.h). Registered into
// mmkeras._cpu_kernels by pybind_module.cc; used by the torch glue
// (zero-copy views of CPU tensors) and by tests.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "fusion.h"
#include "pybind_common.h"

namespace py = pybind11;

namespace {

using mmkeras_pybind::Bool;
using mmkeras_pybind::check_same;
using mmkeras_pybind::dims;
using mmkeras_pybind::F32;
using mmkeras_pybind::mask_dims;
using mmkeras_pybind::mask_ptr;

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
}
