// Helpers shared by the XLA FFI adapters (xla_ffi.cc, xla_ffi_fusion.cc):
// the buffer and attribute types their handlers take, and the glue between
// those buffers and a kernel that takes pointers and sizes.
//
// Handlers are bound by their signatures (XLA_FFI_DEFINE_HANDLER_SYMBOL with
// no explicit binding): buffers are operands, results are outputs, and
// attributes are ffi::Attr<T, name> parameters, so each handler states its
// interface once.
#pragma once

#include <cstdint>
#include <exception>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace mmkeras::xla_ffi {

namespace ffi = ::xla::ffi;

using F32 = ffi::Buffer<ffi::F32>;
using Pred = ffi::Buffer<ffi::PRED>;
using Out = ffi::ResultBuffer<ffi::F32>;

// Attributes, by the names the glue passes them with (with the exact numpy
// type of each: np.int64 for the flags, np.float32 for the scale).
inline constexpr char kHasMask[] = "has_mask";
inline constexpr char kCausal[] = "causal";
inline constexpr char kScale[] = "scale";
inline constexpr char kHasBias[] = "has_bias";
inline constexpr char kSigmoid[] = "sigmoid";
inline constexpr char kBf16Products[] = "bf16_products";
using HasMask = ffi::Attr<int64_t, kHasMask>;
using Causal = ffi::Attr<int64_t, kCausal>;
using Scale = ffi::Attr<float, kScale>;
using HasBias = ffi::Attr<int64_t, kHasBias>;
using Sigmoid = ffi::Attr<int64_t, kSigmoid>;
using Bf16Products = ffi::Attr<int64_t, kBf16Products>;

template <typename Buf>
std::vector<int64_t> dims(const Buf& b) {
  auto d = b.dimensions();
  return std::vector<int64_t>(d.begin(), d.end());
}

// The handlers always take their mask operand; without `has_mask` it is a
// placeholder, which the kernels get as no mask (null, no dims).
inline const uint8_t* mask_ptr(Pred& mask, int64_t has_mask) {
  return has_mask ? reinterpret_cast<const uint8_t*>(mask.typed_data())
                  : nullptr;
}

inline std::vector<int64_t> mask_dims(Pred& mask, int64_t has_mask) {
  return has_mask ? dims(mask) : std::vector<int64_t>{};
}

// Runs fn, turning a C++ exception into an FFI error.
template <typename F>
ffi::Error guarded(F fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, e.what());
  }
  return ffi::Error::Success();
}

}  // namespace mmkeras::xla_ffi
