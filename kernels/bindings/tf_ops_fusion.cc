// TensorFlow adapter: the CPU fusion and contrastive kernels as custom ops
// (contracts in fusion.h and contrastive.h), compiled at run time with
// tf.sysconfig.get_compile_flags()/get_link_flags() into their own library
// and loaded with tf.load_op_library. Gradients are attached in Python
// (mmkeras/backend/tensorflow_fusion.py).
//
// Optional operands (mask, bias) are always inputs, with a `has_*` attribute
// saying whether they are real; the glue passes a dummy when they are not.
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "contrastive.h"
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
const Specs kContrastiveInputs = {"a: float", "b: float", "logit_scale: float",
                                  "logit_bias: float"};
const Specs kContrastiveAttrs = {"has_bias: bool", "sigmoid: bool"};

// A fusion op's output is its first input, (M, B, D) or (M, R, B, O), less
// the leading dims: (B, D) or (B, O).
template <int rank>
absl::Status FusedShape(InferenceContext* c) {
  ShapeHandle x;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), rank, &x));
  c->set_output(0, c->MakeShape({c->Dim(x, rank - 2), c->Dim(x, rank - 1)}));
  return absl::OkStatus();
}

// The loss is a scalar; lse is (2, B).
absl::Status ContrastiveShapes(InferenceContext* c) {
  ShapeHandle a;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &a));
  c->set_output(0, c->Scalar());
  c->set_output(1, c->MakeShape({2, c->Dim(a, 0)}));
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
    RegisterOp("MmkerasContrastiveForward", {kContrastiveInputs},
               {"loss: float", "lse: float"}, kContrastiveAttrs,
               ContrastiveShapes),
    RegisterOp("MmkerasContrastiveBackward",
               {kContrastiveInputs, {"lse: float", "dloss: float"}},
               {"da: float", "db: float", "dlogit_scale: float",
                "dlogit_bias: float"},
               kContrastiveAttrs, GradientShapes<2>),
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

struct ContrastiveAttrs {
  explicit ContrastiveAttrs(tf::OpKernelConstruction* ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_bias", &has_bias));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sigmoid", &sigmoid));
  }
  bool has_bias = false;
  bool sigmoid = false;
};

mmkeras::ContrastiveProblem problem(tf::OpKernelContext* ctx,
                                    const ContrastiveAttrs& a) {
  if (ctx->input(2).NumElements() != 1 || ctx->input(3).NumElements() != 1)
    throw std::invalid_argument("logit_scale and logit_bias must be scalars");
  return mmkeras::make_contrastive_problem(
      dims(ctx->input(0)), dims(ctx->input(1)), a.sigmoid, a.has_bias);
}

void ContrastiveForward(tf::OpKernelContext* ctx, const ContrastiveAttrs& a) {
  auto p = problem(ctx, a);
  float* loss = out(ctx, 0, tf::TensorShape({}));
  float* lse = loss ? out(ctx, 1, tf::TensorShape({2, p.B})) : nullptr;
  if (!lse) return;
  mmkeras::contrastive_forward(p, in(ctx, 0), in(ctx, 1), in(ctx, 2),
                               in(ctx, 3), loss, lse);
}

void ContrastiveBackward(tf::OpKernelContext* ctx, const ContrastiveAttrs& a) {
  auto p = problem(ctx, a);
  if (dims(ctx->input(4)) != std::vector<int64_t>{2, p.B} ||
      ctx->input(5).NumElements() != 1)
    throw std::invalid_argument("lse must be (2, B) and dloss a scalar");
  float* da = out(ctx, 0, ctx->input(0).shape());
  float* db = da ? out(ctx, 1, ctx->input(1).shape()) : nullptr;
  float* ds = db ? out(ctx, 2, tf::TensorShape({})) : nullptr;
  float* dt = ds ? out(ctx, 3, tf::TensorShape({})) : nullptr;
  if (!dt) return;
  mmkeras::contrastive_backward(p, in(ctx, 0), in(ctx, 1), in(ctx, 2),
                                in(ctx, 3), in(ctx, 4), in(ctx, 5), da, db, ds,
                                dt);
}

using GatedForwardOp = Kernel<MaskAttrs, GatedForward>;
using GatedBackwardOp = Kernel<MaskAttrs, GatedBackward>;
using LowRankForwardOp = Kernel<MaskAttrs, LowRankForward>;
using LowRankBackwardOp = Kernel<MaskAttrs, LowRankBackward>;
using ContrastiveForwardOp = Kernel<ContrastiveAttrs, ContrastiveForward>;
using ContrastiveBackwardOp = Kernel<ContrastiveAttrs, ContrastiveBackward>;

MMKERAS_CPU_KERNEL("MmkerasGatedFusionForward", GatedForwardOp);
MMKERAS_CPU_KERNEL("MmkerasGatedFusionBackward", GatedBackwardOp);
MMKERAS_CPU_KERNEL("MmkerasLowRankFusionForward", LowRankForwardOp);
MMKERAS_CPU_KERNEL("MmkerasLowRankFusionBackward", LowRankBackwardOp);
MMKERAS_CPU_KERNEL("MmkerasContrastiveForward", ContrastiveForwardOp);
MMKERAS_CPU_KERNEL("MmkerasContrastiveBackward", ContrastiveBackwardOp);

}  // namespace
}  // namespace mmkeras::tf_ops
