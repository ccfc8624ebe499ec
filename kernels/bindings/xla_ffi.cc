// XLA FFI adapter: the CPU attention kernel as JAX custom-call targets.
// Compiled at run time against the installed jaxlib's headers
// (jax.ffi.include_dir()); mmkeras loads it with ctypes and registers the
// handlers with jax.ffi.register_ffi_target(..., platform="cpu").
//
// Leading dims beyond (T, N, H) are folded into the batch, which is how
// jax.vmap (vmap_method="broadcast_all") reaches the kernel.
#include <exception>
#include <vector>

#include "flash_attention.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <typename Buf>
std::vector<int64_t> dims(const Buf& b) {
  auto d = b.dimensions();
  return std::vector<int64_t>(d.begin(), d.end());
}

mmkeras::AttentionProblem problem(ffi::Buffer<ffi::F32>& q,
                                  ffi::Buffer<ffi::F32>& k,
                                  ffi::Buffer<ffi::F32>& v,
                                  ffi::Buffer<ffi::PRED>& mask,
                                  int64_t has_mask, int64_t causal,
                                  float scale) {
  const uint8_t* mptr =
      has_mask ? reinterpret_cast<const uint8_t*>(mask.typed_data()) : nullptr;
  return mmkeras::make_problem(dims(q), dims(k), dims(v), mptr,
                               has_mask ? dims(mask) : std::vector<int64_t>{},
                               causal != 0, scale);
}

ffi::Error Forward(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                   ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> mask,
                   ffi::ResultBuffer<ffi::F32> out,
                   ffi::ResultBuffer<ffi::F32> lse, int64_t has_mask,
                   int64_t causal, float scale) {
  try {
    auto p = problem(q, k, v, mask, has_mask, causal, scale);
    mmkeras::attention_forward(p, q.typed_data(), k.typed_data(),
                               v.typed_data(), out->typed_data(),
                               lse->typed_data());
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, e.what());
  }
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                    ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> mask,
                    ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> lse,
                    ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dq,
                    ffi::ResultBuffer<ffi::F32> dk,
                    ffi::ResultBuffer<ffi::F32> dv, int64_t has_mask,
                    int64_t causal, float scale) {
  try {
    auto p = problem(q, k, v, mask, has_mask, causal, scale);
    mmkeras::attention_backward(p, q.typed_data(), k.typed_data(),
                                v.typed_data(), out.typed_data(),
                                lse.typed_data(), dout.typed_data(),
                                dq->typed_data(), dk->typed_data(),
                                dv->typed_data());
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasAttentionForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("has_mask")
                                  .Attr<int64_t>("causal")
                                  .Attr<float>("scale"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasAttentionBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("has_mask")
                                  .Attr<int64_t>("causal")
                                  .Attr<float>("scale"));
