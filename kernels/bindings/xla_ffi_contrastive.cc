// XLA FFI adapter: the CPU contrastive-loss kernels as JAX custom-call
// targets (contract in contrastive.h). Compiled at run time against the
// installed jaxlib's headers (jax.ffi.include_dir()) into its own library;
// mmkeras loads it with ctypes and registers the handlers with
// jax.ffi.register_ffi_target(..., platform="cpu").
//
// The optional bias is always an operand, with a `has_bias` attribute saying
// whether it is real; the glue passes a dummy when it is not.
#include <cstdint>

#include "contrastive.h"
#include "xla_ffi_common.h"

namespace mmkeras::xla_ffi {
namespace {

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
XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasContrastiveForward, ContrastiveForward);
XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasContrastiveBackward, ContrastiveBackward);

}  // namespace mmkeras::xla_ffi
