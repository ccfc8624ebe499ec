// TensorFlow adapter: the CPU fusion kernels as custom ops (contract in
// fusion.h), compiled at run time with
// tf.sysconfig.get_compile_flags()/get_link_flags() into their own library
// and loaded with tf.load_op_library. Gradients are attached in Python
// (mmkeras/backend/tensorflow_fusion.py).
//
// The optional mask is always an input, with a `has_mask` attribute saying
// whether it is real; the glue passes a dummy when it is not.
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "fusion.h"
#include "tf_ops_common.h"

namespace mmkeras::tf_ops {
namespace {

// Each backward op takes its forward op's inputs and attrs, then the
// incoming gradient (and the forward outputs it needs).
const Specs kGatedInputs = {"projections: float", "gate_logits: float",
                            "mask: bool"};
const Specs kLowRankInputs = {"factors: float", "mask: bool"};
const Specs kMaskAttrs = {"has_mask: bool"};

// A fusion op's output is its first input, (M, B, D) or (M, R, B, O), less
// the leading dims: (B, D) or (B, O).
template <int rank>
absl::Status FusedShape(InferenceContext* c) {
  ShapeHandle x;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), rank, &x));
  c->set_output(0, c->MakeShape({c->Dim(x, rank - 2), c->Dim(x, rank - 1)}));
  return absl::OkStatus();
}

[[maybe_unused]] const bool kRegistered[] = {
    RegisterOp("MmkerasGatedFusionForward", {kGatedInputs}, {"out: float"},
               kMaskAttrs, FusedShape<3>),
    RegisterOp("MmkerasGatedFusionBackward", {kGatedInputs, {"dout: float"}},
               {"d_projections: float", "d_gate_logits: float"}, kMaskAttrs,
               GradientShapes<2>),
    RegisterOp("MmkerasLowRankFusionForward", {kLowRankInputs},
               {"out: float"}, kMaskAttrs, FusedShape<4>),
    RegisterOp("MmkerasLowRankFusionBackward",
               {kLowRankInputs, {"dout: float"}}, {"d_factors: float"},
               kMaskAttrs, GradientShapes<1>),
};

// Attrs of the fusion ops: whether their mask input, the (B, M) modality
// mask, is real.
struct MaskAttrs {
  explicit MaskAttrs(tf::OpKernelConstruction* ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_mask", &has_mask));
  }
  bool has_mask = false;
};

void GatedForward(tf::OpKernelContext* ctx, const MaskAttrs& a) {
  const tf::Tensor& mask = ctx->input(2);
  auto p = mmkeras::make_gated_fusion_problem(
      dims(ctx->input(0)), dims(ctx->input(1)), mask_dims(mask, a.has_mask));
  float* o = out(ctx, 0, tf::TensorShape({p.B, p.D}));
  if (!o) return;
  mmkeras::gated_fusion_forward(p, in(ctx, 0), in(ctx, 1),
                                mask_data(mask, a.has_mask), o);
}

void GatedBackward(tf::OpKernelContext* ctx, const MaskAttrs& a) {
  const tf::Tensor& mask = ctx->input(2);
  auto p = mmkeras::make_gated_fusion_problem(
      dims(ctx->input(0)), dims(ctx->input(1)), mask_dims(mask, a.has_mask));
  if (dims(ctx->input(3)) != std::vector<int64_t>{p.B, p.D})
    throw std::invalid_argument("dout must have shape (B, D)");
  float* dh = out(ctx, 0, ctx->input(0).shape());
  float* dg = dh ? out(ctx, 1, ctx->input(1).shape()) : nullptr;
  if (!dg) return;
  mmkeras::gated_fusion_backward(p, in(ctx, 0), in(ctx, 1),
                                 mask_data(mask, a.has_mask), in(ctx, 3), dh,
                                 dg);
}

void LowRankForward(tf::OpKernelContext* ctx, const MaskAttrs& a) {
  const tf::Tensor& mask = ctx->input(1);
  auto p = mmkeras::make_low_rank_fusion_problem(dims(ctx->input(0)),
                                                 mask_dims(mask, a.has_mask));
  float* o = out(ctx, 0, tf::TensorShape({p.B, p.O}));
  if (!o) return;
  mmkeras::low_rank_fusion_forward(p, in(ctx, 0), mask_data(mask, a.has_mask),
                                   o);
}

void LowRankBackward(tf::OpKernelContext* ctx, const MaskAttrs& a) {
  const tf::Tensor& mask = ctx->input(1);
  auto p = mmkeras::make_low_rank_fusion_problem(dims(ctx->input(0)),
                                                 mask_dims(mask, a.has_mask));
  if (dims(ctx->input(2)) != std::vector<int64_t>{p.B, p.O})
    throw std::invalid_argument("dout must have shape (B, O)");
  float* df = out(ctx, 0, ctx->input(0).shape());
  if (!df) return;
  mmkeras::low_rank_fusion_backward(p, in(ctx, 0), mask_data(mask, a.has_mask),
                                    in(ctx, 2), df);
}

using GatedForwardOp = Kernel<MaskAttrs, GatedForward>;
using GatedBackwardOp = Kernel<MaskAttrs, GatedBackward>;
using LowRankForwardOp = Kernel<MaskAttrs, LowRankForward>;
using LowRankBackwardOp = Kernel<MaskAttrs, LowRankBackward>;

MMKERAS_CPU_KERNEL("MmkerasGatedFusionForward", GatedForwardOp);
MMKERAS_CPU_KERNEL("MmkerasGatedFusionBackward", GatedBackwardOp);
MMKERAS_CPU_KERNEL("MmkerasLowRankFusionForward", LowRankForwardOp);
MMKERAS_CPU_KERNEL("MmkerasLowRankFusionBackward", LowRankBackwardOp);

}  // namespace
}  // namespace mmkeras::tf_ops
