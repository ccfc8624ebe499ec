// TensorFlow adapter: the CPU attention kernel as custom ops, compiled at run
// time with tf.sysconfig.get_compile_flags()/get_link_flags() and loaded with
// tf.load_op_library. The gradient is registered in Python
// (mmkeras/backend/tensorflow_attention.py).
#include <cstdint>
#include <stdexcept>

#include "flash_attention.h"
#include "tf_ops_common.h"

namespace mmkeras::tf_ops {
namespace {

// The backward op takes the forward op's inputs and attrs, then out, lse
// and dout.
const Specs kInputs = {"q: float", "k: float", "v: float", "mask: bool"};
const Specs kAttrs = {"has_mask: bool", "causal: bool", "scale: float",
                      "bf16_products: bool = false"};

// out has the shape of q (B, T, N, H); lse is (B, N, T).
absl::Status ForwardShapes(InferenceContext* c) {
  ShapeHandle q;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &q));
  c->set_output(0, q);
  c->set_output(1, c->MakeShape({c->Dim(q, 0), c->Dim(q, 2), c->Dim(q, 1)}));
  return absl::OkStatus();
}

[[maybe_unused]] const bool kRegistered[] = {
    RegisterOp("MmkerasAttentionForward", {kInputs},
               {"out: float", "lse: float"}, kAttrs, ForwardShapes),
    RegisterOp("MmkerasAttentionBackward",
               {kInputs, {"out: float", "lse: float", "dout: float"}},
               {"dq: float", "dk: float", "dv: float"}, kAttrs,
               GradientShapes<3>),
};

struct Attrs {
  explicit Attrs(tf::OpKernelConstruction* ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_mask", &has_mask));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("causal", &causal));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scale", &scale));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bf16_products", &bf16_products));
  }
  bool has_mask = false;
  bool causal = false;
  float scale = 1.0f;
  bool bf16_products = false;
};

// Throws std::invalid_argument when the inputs do not fit.
mmkeras::AttentionProblem problem(tf::OpKernelContext* ctx, const Attrs& a) {
  const tf::Tensor& mask = ctx->input(3);
  return mmkeras::make_problem(dims(ctx->input(0)), dims(ctx->input(1)),
                               dims(ctx->input(2)), mask_data(mask, a.has_mask),
                               mask_dims(mask, a.has_mask), a.causal, a.scale);
}

void Forward(tf::OpKernelContext* ctx, const Attrs& a) {
  auto p = problem(ctx, a);
  p.bf16_products = a.bf16_products;
  float* o = out(ctx, 0, ctx->input(0).shape());
  float* lse = o ? out(ctx, 1, tf::TensorShape({p.B, p.N, p.T})) : nullptr;
  if (!lse) return;
  mmkeras::attention_forward(p, in(ctx, 0), in(ctx, 1), in(ctx, 2), o, lse);
}

void Backward(tf::OpKernelContext* ctx, const Attrs& a) {
  auto p = problem(ctx, a);
  p.bf16_products = a.bf16_products;
  if (ctx->input(4).shape() != ctx->input(0).shape() ||
      ctx->input(6).shape() != ctx->input(0).shape() ||
      ctx->input(5).NumElements() != p.B * p.N * p.T)
    throw std::invalid_argument("out, dout or lse shape mismatch");
  float* dq = out(ctx, 0, ctx->input(0).shape());
  float* dk = dq ? out(ctx, 1, ctx->input(1).shape()) : nullptr;
  float* dv = dk ? out(ctx, 2, ctx->input(2).shape()) : nullptr;
  if (!dv) return;
  mmkeras::attention_backward(p, in(ctx, 0), in(ctx, 1), in(ctx, 2),
                              in(ctx, 4), in(ctx, 5), in(ctx, 6), dq, dk, dv);
}

using ForwardOp = Kernel<Attrs, Forward>;
using BackwardOp = Kernel<Attrs, Backward>;

MMKERAS_CPU_KERNEL("MmkerasAttentionForward", ForwardOp);
MMKERAS_CPU_KERNEL("MmkerasAttentionBackward", BackwardOp);

}  // namespace
}  // namespace mmkeras::tf_ops
