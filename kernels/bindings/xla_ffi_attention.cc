// XLA FFI adapter: the CPU attention kernel as JAX custom-call targets.
// Compiled at run time against the installed jaxlib's headers
// (jax.ffi.include_dir()); mmkeras loads it with ctypes and registers the
// handlers with jax.ffi.register_ffi_target(..., platform="cpu").
//
// Leading dims beyond (T, N, H) are folded into the batch, which is how
// jax.vmap (vmap_method="broadcast_all") reaches the kernel.
#include <cstdint>

#include "flash_attention.h"
#include "xla_ffi_common.h"

namespace mmkeras::xla_ffi {
namespace {

mmkeras::AttentionProblem problem(F32& q, F32& k, F32& v, Pred& mask,
                                  HasMask has_mask, Causal causal,
                                  Scale scale) {
  return mmkeras::make_problem(dims(q), dims(k), dims(v),
                               mask_ptr(mask, *has_mask),
                               mask_dims(mask, *has_mask), *causal != 0,
                               *scale);
}

ffi::Error Forward(F32 q, F32 k, F32 v, Pred mask, Out out, Out lse,
                   HasMask has_mask, Causal causal, Scale scale,
                   Bf16Products bf16_products) {
  return guarded([&] {
    auto p = problem(q, k, v, mask, has_mask, causal, scale);
    p.bf16_products = *bf16_products != 0;
    mmkeras::attention_forward(p, q.typed_data(), k.typed_data(),
                               v.typed_data(), out->typed_data(),
                               lse->typed_data());
  });
}

ffi::Error Backward(F32 q, F32 k, F32 v, Pred mask, F32 out, F32 lse,
                    F32 dout, Out dq, Out dk, Out dv, HasMask has_mask,
                    Causal causal, Scale scale, Bf16Products bf16_products) {
  return guarded([&] {
    auto p = problem(q, k, v, mask, has_mask, causal, scale);
    p.bf16_products = *bf16_products != 0;
    mmkeras::attention_backward(p, q.typed_data(), k.typed_data(),
                                v.typed_data(), out.typed_data(),
                                lse.typed_data(), dout.typed_data(),
                                dq->typed_data(), dk->typed_data(),
                                dv->typed_data());
  });
}

}  // namespace

// C symbols (extern "C"), which mmkeras registers by name.
XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasAttentionForward, Forward);
XLA_FFI_DEFINE_HANDLER_SYMBOL(MmkerasAttentionBackward, Backward);

}  // namespace mmkeras::xla_ffi
