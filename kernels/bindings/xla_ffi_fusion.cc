// XLA FFI adapter: the CPU fusion and contrastive kernels as JAX custom-call
// targets (contracts in fusion.h and contrastive.h). Compiled at run time
// against the installed jaxlib's headers (jax.ffi.include_dir()) into its own
// library; mmkeras loads it with ctypes and registers the handlers with
// jax.ffi.register_ffi_target(..., platform="cpu").
//
// Every handler takes its optional operands (mask, bias) as buffers with a
// `has_*` attribute saying whether they are real; the glue passes a dummy
// when they are not.
#include <exception>
#include <vector>

#include "contrastive.h"
#include "fusion.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using F32 = ffi::Buffer<ffi::F32>;
using Pred = ffi::Buffer<ffi::PRED>;
using Out = ffi::ResultBuffer<ffi::F32>;

template <typename Buf>
std::vector<int64_t> dims(const Buf& b) {
  auto d = b.dimensions();
  return std::vector<int64_t>(d.begin(), d.end());
}

const uint8_t* mask_ptr(Pred& mask, int64_t has_mask) {
  return has_mask ? reinterpret_cast<const uint8_t*>(mask.typed_data())
                  : nullptr;
}

std::vector<int64_t> mask_dims(Pred& mask, int64_t has_mask) {
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

ffi::Error GatedForward(F32 h, F32 g, Pred mask, Out out, int64_t has_mask) {
  return guarded([&] {
    auto p = mmkeras::make_gated_fusion_problem(dims(h), dims(g),
                                                mask_dims(mask, has_mask));
    mmkeras::gated_fusion_forward(p, h.typed_data(), g.typed_data(),
                                  mask_ptr(mask, has_mask), out->typed_data());
  });
}

ffi::Error GatedBackward(F32 h, F32 g, Pred mask, F32 dout, Out dh, Out dg,
                         int64_t has_mask) {
  return guarded([&] {
    auto p = mmkeras::make_gated_fusion_problem(dims(h), dims(g),
                                                mask_dims(mask, has_mask));
    mmkeras::gated_fusion_backward(p, h.typed_data(), g.typed_data(),
                                   mask_ptr(mask, has_mask), dout.typed_data(),
                                   dh->typed_data(), dg->typed_data());
  });
}

ffi::Error LowRankForward(F32 f, Pred mask, Out out, int64_t has_mask) {
  return guarded([&] {
    auto p = mmkeras::make_low_rank_fusion_problem(dims(f),
                                                   mask_dims(mask, has_mask));
    mmkeras::low_rank_fusion_forward(p, f.typed_data(),
                                     mask_ptr(mask, has_mask),
                                     out->typed_data());
  });
}

ffi::Error LowRankBackward(F32 f, Pred mask, F32 dout, Out df,
                           int64_t has_mask) {
  return guarded([&] {
    auto p = mmkeras::make_low_rank_fusion_problem(dims(f),
                                                   mask_dims(mask, has_mask));
    mmkeras::low_rank_fusion_backward(p, f.typed_data(),
                                      mask_ptr(mask, has_mask),
                                      dout.typed_data(), df->typed_data());
  });
}

ffi::Error ContrastiveForward(F32 a, F32 b, F32 scale, F32 bias, Out loss,
                              Out lse, int64_t has_bias, int64_t sigmoid) {
  return guarded([&] {
    auto p = mmkeras::make_contrastive_problem(dims(a), dims(b), sigmoid != 0,
                                               has_bias != 0);
    mmkeras::contrastive_forward(p, a.typed_data(), b.typed_data(),
                                 scale.typed_data(), bias.typed_data(),
                                 loss->typed_data(), lse->typed_data());
  });
}

ffi::Error ContrastiveBackward(F32 a, F32 b, F32 scale, F32 bias, F32 lse,
                               F32 dloss, Out da, Out db, Out dscale,
                               Out dbias, int64_t has_bias, int64_t sigmoid) {
  return guarded([&] {
    auto p = mmkeras::make_contrastive_problem(dims(a), dims(b), sigmoid != 0,
                                               has_bias != 0);
    mmkeras::contrastive_backward(
        p, a.typed_data(), b.typed_data(), scale.typed_data(),
        bias.typed_data(), lse.typed_data(), dloss.typed_data(),
        da->typed_data(), db->typed_data(), dscale->typed_data(),
        dbias->typed_data());
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasGatedFusionForward, GatedForward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<Pred>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("has_mask"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasGatedFusionBackward, GatedBackward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<Pred>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("has_mask"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasLowRankFusionForward, LowRankForward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<Pred>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("has_mask"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasLowRankFusionBackward, LowRankBackward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<Pred>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("has_mask"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasContrastiveForward, ContrastiveForward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("has_bias")
                                  .Attr<int64_t>("sigmoid"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasContrastiveBackward, ContrastiveBackward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("has_bias")
                                  .Attr<int64_t>("sigmoid"));
