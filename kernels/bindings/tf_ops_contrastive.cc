// TensorFlow adapter: the CPU contrastive-loss kernels as custom ops
// (contract in contrastive.h), compiled at run time with
// tf.sysconfig.get_compile_flags()/get_link_flags() into their own library
// and loaded with tf.load_op_library. Gradients are attached in Python
// (mmkeras/backend/tensorflow_contrastive.py).
//
// The optional bias is always an input, with a `has_bias` attribute saying
// whether it is real; the glue passes a dummy when it is not.
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "contrastive.h"
#include "tf_ops_common.h"

namespace mmkeras::tf_ops {
namespace {

// The backward op takes the forward op's inputs and attrs, then lse and the
// incoming gradient.
const Specs kContrastiveInputs = {"a: float", "b: float", "logit_scale: float",
                                  "logit_bias: float"};
const Specs kContrastiveAttrs = {"has_bias: bool", "sigmoid: bool"};

// The loss is a scalar; lse is (2, B).
absl::Status ContrastiveShapes(InferenceContext* c) {
  ShapeHandle a;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &a));
  c->set_output(0, c->Scalar());
  c->set_output(1, c->MakeShape({2, c->Dim(a, 0)}));
  return absl::OkStatus();
}

[[maybe_unused]] const bool kRegistered[] = {
    RegisterOp("MmkerasContrastiveForward", {kContrastiveInputs},
               {"loss: float", "lse: float"}, kContrastiveAttrs,
               ContrastiveShapes),
    RegisterOp("MmkerasContrastiveBackward",
               {kContrastiveInputs, {"lse: float", "dloss: float"}},
               {"da: float", "db: float", "dlogit_scale: float",
                "dlogit_bias: float"},
               kContrastiveAttrs, GradientShapes<2>),
};

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

using ContrastiveForwardOp = Kernel<ContrastiveAttrs, ContrastiveForward>;
using ContrastiveBackwardOp = Kernel<ContrastiveAttrs, ContrastiveBackward>;

MMKERAS_CPU_KERNEL("MmkerasContrastiveForward", ContrastiveForwardOp);
MMKERAS_CPU_KERNEL("MmkerasContrastiveBackward", ContrastiveBackwardOp);

}  // namespace
}  // namespace mmkeras::tf_ops
