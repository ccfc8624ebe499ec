// XLA FFI adapter: the CPU fusion kernels as JAX custom-call targets
// (contract in fusion.h). Compiled at run time
// against the installed jaxlib's headers (jax.ffi.include_dir()) into its own
// library; mmkeras loads it with ctypes and registers the handlers with
// jax.ffi.register_ffi_target(..., platform="cpu").
//
// Every handler takes its optional operand (the mask) as a buffer with a
// `has_mask` attribute saying whether it is real; the glue passes a dummy
// when it is not.
#include <cstdint>

#include "fusion.h"
#include "xla_ffi_common.h"

namespace mmkeras::xla_ffi {
namespace {

ffi::Error GatedForward(F32 h, F32 g, Pred mask, Out out, HasMask has_mask) {
  return guarded([&] {
    auto p = mmkeras::make_gated_fusion_problem(dims(h), dims(g),
                                                mask_dims(mask, *has_mask));
    mmkeras::gated_fusion_forward(p, h.typed_data(), g.typed_data(),
                                  mask_ptr(mask, *has_mask), out->typed_data());
  });
}

ffi::Error GatedBackward(F32 h, F32 g, Pred mask, F32 dout, Out dh, Out dg,
                         HasMask has_mask) {
  return guarded([&] {
    auto p = mmkeras::make_gated_fusion_problem(dims(h), dims(g),
                                                mask_dims(mask, *has_mask));
    mmkeras::gated_fusion_backward(p, h.typed_data(), g.typed_data(),
                                   mask_ptr(mask, *has_mask), dout.typed_data(),
                                   dh->typed_data(), dg->typed_data());
  });
}

ffi::Error LowRankForward(F32 f, Pred mask, Out out, HasMask has_mask) {
  return guarded([&] {
    auto p = mmkeras::make_low_rank_fusion_problem(dims(f),
                                                   mask_dims(mask, *has_mask));
    mmkeras::low_rank_fusion_forward(p, f.typed_data(),
                                     mask_ptr(mask, *has_mask),
                                     out->typed_data());
  });
}

ffi::Error LowRankBackward(F32 f, Pred mask, F32 dout, Out df,
                           HasMask has_mask) {
  return guarded([&] {
    auto p = mmkeras::make_low_rank_fusion_problem(dims(f),
                                                   mask_dims(mask, *has_mask));
    mmkeras::low_rank_fusion_backward(p, f.typed_data(),
                                      mask_ptr(mask, *has_mask),
                                      dout.typed_data(), df->typed_data());
  });
}

}  // namespace

// C symbols (extern "C"), which mmkeras registers by name.
XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasGatedFusionForward, GatedForward);
XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasGatedFusionBackward, GatedBackward);
XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasLowRankFusionForward, LowRankForward);
XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasLowRankFusionBackward, LowRankBackward);

}  // namespace mmkeras::xla_ffi
