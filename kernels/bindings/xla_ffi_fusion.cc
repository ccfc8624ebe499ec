// XLA FFI adapter: the CPU fusion and contrastive kernels as JAX custom-call
// targets (contracts in fusion.h and contrastive.h). Compiled at run time
// against the installed jaxlib's headers (jax.ffi.include_dir()) into its own
// library; mmkeras loads it with ctypes and registers the handlers with
// jax.ffi.register_ffi_target(..., platform="cpu").
//
// Every handler takes its optional operands (mask, bias) as buffers with a
// `has_*` attribute saying whether they are real; the glue passes a dummy
// when they are not.
#include <cstdint>

#include "contrastive.h"
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

ffi::Error ContrastiveForward(F32 a, F32 b, F32 scale, F32 bias, Out loss,
                              Out lse, HasBias has_bias, Sigmoid sigmoid) {
  return guarded([&] {
    auto p = mmkeras::make_contrastive_problem(dims(a), dims(b), *sigmoid != 0,
                                               *has_bias != 0);
    mmkeras::contrastive_forward(p, a.typed_data(), b.typed_data(),
                                 scale.typed_data(), bias.typed_data(),
                                 loss->typed_data(), lse->typed_data());
  });
}

ffi::Error ContrastiveBackward(F32 a, F32 b, F32 scale, F32 bias, F32 lse,
                               F32 dloss, Out da, Out db, Out dscale,
                               Out dbias, HasBias has_bias, Sigmoid sigmoid) {
  return guarded([&] {
    auto p = mmkeras::make_contrastive_problem(dims(a), dims(b), *sigmoid != 0,
                                               *has_bias != 0);
    mmkeras::contrastive_backward(
        p, a.typed_data(), b.typed_data(), scale.typed_data(),
        bias.typed_data(), lse.typed_data(), dloss.typed_data(),
        da->typed_data(), db->typed_data(), dscale->typed_data(),
        dbias->typed_data());
  });
}

}  // namespace

// C symbols (extern "C"), which mmkeras registers by name.
XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasGatedFusionForward, GatedForward);
XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasGatedFusionBackward, GatedBackward);
XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasLowRankFusionForward, LowRankForward);
XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasLowRankFusionBackward, LowRankBackward);
XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasContrastiveForward, ContrastiveForward);
XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasContrastiveBackward, ContrastiveBackward);

}  // namespace mmkeras::xla_ffi
