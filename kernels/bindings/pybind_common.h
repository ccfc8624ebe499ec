// Array types and helpers shared by the pybind11 adapters (pybind_module.cc,
// pybind_fusion.cc): the kernels take C-contiguous float32 and bool buffers,
// so pybind11 converts anything else on the way in.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace mmkeras_pybind {

namespace py = pybind11;

using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using Bool = py::array_t<bool, py::array::c_style | py::array::forcecast>;

inline std::vector<int64_t> dims(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

// An optional mask's dims (empty when absent) and data (nullptr when absent).
inline std::vector<int64_t> mask_dims(const std::optional<Bool>& mask) {
  return mask ? dims(*mask) : std::vector<int64_t>{};
}

inline const uint8_t* mask_ptr(const std::optional<Bool>& mask) {
  return mask ? reinterpret_cast<const uint8_t*>(mask->data()) : nullptr;
}

// Shape checks of the adapters' extra inputs (gradients, scalars).
inline void check_same(const F32& x, const std::vector<int64_t>& expected,
                       const char* name) {
  if (dims(x) != expected)
    throw std::invalid_argument(std::string(name) +
                                " does not have the expected shape");
}

inline void check_scalar(const F32& x, const char* name) {
  if (x.size() != 1)
    throw std::invalid_argument(std::string(name) + " must be a scalar");
}

}  // namespace mmkeras_pybind
