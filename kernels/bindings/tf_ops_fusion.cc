// TensorFlow adapter: the CPU fusion and contrastive kernels as custom ops
// (contracts in fusion.h and contrastive.h), compiled at run time with
// tf.sysconfig.get_compile_flags()/get_link_flags() into their own library
// and loaded with tf.load_op_library. Gradients are attached in Python
// (mmkeras/backend/tensorflow_fusion.py).
//
// Optional operands (mask, bias) are always inputs, with a `has_*` attribute
// saying whether they are real; the glue passes a dummy when they are not.
#include <exception>
#include <functional>
#include <stdexcept>
#include <vector>

#include "contrastive.h"
#include "fusion.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tf = tensorflow;
using tf::shape_inference::InferenceContext;
using tf::shape_inference::ShapeHandle;

REGISTER_OP("MmkerasGatedFusionForward")
    .Input("projections: float")
    .Input("gate_logits: float")
    .Input("mask: bool")
    .Output("out: float")
    .Attr("has_mask: bool")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle h;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &h));
      c->set_output(0, c->MakeShape({c->Dim(h, 1), c->Dim(h, 2)}));
      return tf::OkStatus();
    });

REGISTER_OP("MmkerasGatedFusionBackward")
    .Input("projections: float")
    .Input("gate_logits: float")
    .Input("mask: bool")
    .Input("dout: float")
    .Output("d_projections: float")
    .Output("d_gate_logits: float")
    .Attr("has_mask: bool")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      return tf::OkStatus();
    });

REGISTER_OP("MmkerasLowRankFusionForward")
    .Input("factors: float")
    .Input("mask: bool")
    .Output("out: float")
    .Attr("has_mask: bool")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle f;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &f));
      c->set_output(0, c->MakeShape({c->Dim(f, 2), c->Dim(f, 3)}));
      return tf::OkStatus();
    });

REGISTER_OP("MmkerasLowRankFusionBackward")
    .Input("factors: float")
    .Input("mask: bool")
    .Input("dout: float")
    .Output("d_factors: float")
    .Attr("has_mask: bool")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return tf::OkStatus();
    });

REGISTER_OP("MmkerasContrastiveForward")
    .Input("a: float")
    .Input("b: float")
    .Input("logit_scale: float")
    .Input("logit_bias: float")
    .Output("loss: float")
    .Output("lse: float")
    .Attr("has_bias: bool")
    .Attr("sigmoid: bool")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle a;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &a));
      c->set_output(0, c->Scalar());
      c->set_output(1, c->MakeShape({2, c->Dim(a, 0)}));
      return tf::OkStatus();
    });

REGISTER_OP("MmkerasContrastiveBackward")
    .Input("a: float")
    .Input("b: float")
    .Input("logit_scale: float")
    .Input("logit_bias: float")
    .Input("lse: float")
    .Input("dloss: float")
    .Output("da: float")
    .Output("db: float")
    .Output("dlogit_scale: float")
    .Output("dlogit_bias: float")
    .Attr("has_bias: bool")
    .Attr("sigmoid: bool")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      c->set_output(2, c->Scalar());
      c->set_output(3, c->Scalar());
      return tf::OkStatus();
    });

namespace {

std::vector<int64_t> dims(const tf::Tensor& t) {
  std::vector<int64_t> d;
  for (int i = 0; i < t.dims(); ++i) d.push_back(t.dim_size(i));
  return d;
}

const float* in(tf::OpKernelContext* ctx, int i) {
  return ctx->input(i).flat<float>().data();
}

// Allocates output i with `shape`; returns its data or null (error set).
float* out(tf::OpKernelContext* ctx, int i, const tf::TensorShape& shape) {
  tf::Tensor* t = nullptr;
  auto status = ctx->allocate_output(i, shape, &t);
  if (!status.ok()) {
    ctx->CtxFailure(status);
    return nullptr;
  }
  return t->flat<float>().data();
}

// Runs fn, turning a C++ exception into an InvalidArgument error on ctx.
void guarded(tf::OpKernelContext* ctx, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    ctx->CtxFailure(tf::errors::InvalidArgument(e.what()));
  }
}

// Base of the fusion ops: input `mask_index` is the (B, M) modality mask.
class MaskedOp : public tf::OpKernel {
 public:
  explicit MaskedOp(tf::OpKernelConstruction* ctx) : tf::OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_mask", &has_mask_));
  }

 protected:
  const uint8_t* mask(tf::OpKernelContext* ctx, int i) const {
    return has_mask_ ? reinterpret_cast<const uint8_t*>(
                           ctx->input(i).flat<bool>().data())
                     : nullptr;
  }
  std::vector<int64_t> mask_dims(tf::OpKernelContext* ctx, int i) const {
    return has_mask_ ? dims(ctx->input(i)) : std::vector<int64_t>{};
  }
  bool has_mask_ = false;
};

class GatedForwardOp : public MaskedOp {
 public:
  using MaskedOp::MaskedOp;
  void Compute(tf::OpKernelContext* ctx) override {
    guarded(ctx, [&] {
      auto p = mmkeras::make_gated_fusion_problem(
          dims(ctx->input(0)), dims(ctx->input(1)), mask_dims(ctx, 2));
      float* o = out(ctx, 0, tf::TensorShape({p.B, p.D}));
      if (!o) return;
      mmkeras::gated_fusion_forward(p, in(ctx, 0), in(ctx, 1), mask(ctx, 2), o);
    });
  }
};

class GatedBackwardOp : public MaskedOp {
 public:
  using MaskedOp::MaskedOp;
  void Compute(tf::OpKernelContext* ctx) override {
    guarded(ctx, [&] {
      auto p = mmkeras::make_gated_fusion_problem(
          dims(ctx->input(0)), dims(ctx->input(1)), mask_dims(ctx, 2));
      if (dims(ctx->input(3)) != std::vector<int64_t>{p.B, p.D})
        throw std::invalid_argument("dout must have shape (B, D)");
      float* dh = out(ctx, 0, ctx->input(0).shape());
      float* dg = dh ? out(ctx, 1, ctx->input(1).shape()) : nullptr;
      if (!dg) return;
      mmkeras::gated_fusion_backward(p, in(ctx, 0), in(ctx, 1), mask(ctx, 2),
                                     in(ctx, 3), dh, dg);
    });
  }
};

class LowRankForwardOp : public MaskedOp {
 public:
  using MaskedOp::MaskedOp;
  void Compute(tf::OpKernelContext* ctx) override {
    guarded(ctx, [&] {
      auto p = mmkeras::make_low_rank_fusion_problem(dims(ctx->input(0)),
                                                     mask_dims(ctx, 1));
      float* o = out(ctx, 0, tf::TensorShape({p.B, p.O}));
      if (!o) return;
      mmkeras::low_rank_fusion_forward(p, in(ctx, 0), mask(ctx, 1), o);
    });
  }
};

class LowRankBackwardOp : public MaskedOp {
 public:
  using MaskedOp::MaskedOp;
  void Compute(tf::OpKernelContext* ctx) override {
    guarded(ctx, [&] {
      auto p = mmkeras::make_low_rank_fusion_problem(dims(ctx->input(0)),
                                                     mask_dims(ctx, 1));
      if (dims(ctx->input(2)) != std::vector<int64_t>{p.B, p.O})
        throw std::invalid_argument("dout must have shape (B, O)");
      float* df = out(ctx, 0, ctx->input(0).shape());
      if (!df) return;
      mmkeras::low_rank_fusion_backward(p, in(ctx, 0), mask(ctx, 1),
                                        in(ctx, 2), df);
    });
  }
};

class ContrastiveOp : public tf::OpKernel {
 public:
  explicit ContrastiveOp(tf::OpKernelConstruction* ctx) : tf::OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_bias", &has_bias_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sigmoid", &sigmoid_));
  }

 protected:
  mmkeras::ContrastiveProblem problem(tf::OpKernelContext* ctx) const {
    if (ctx->input(2).NumElements() != 1 || ctx->input(3).NumElements() != 1)
      throw std::invalid_argument("logit_scale and logit_bias must be scalars");
    return mmkeras::make_contrastive_problem(
        dims(ctx->input(0)), dims(ctx->input(1)), sigmoid_, has_bias_);
  }
  bool has_bias_ = false;
  bool sigmoid_ = false;
};

class ContrastiveForwardOp : public ContrastiveOp {
 public:
  using ContrastiveOp::ContrastiveOp;
  void Compute(tf::OpKernelContext* ctx) override {
    guarded(ctx, [&] {
      auto p = problem(ctx);
      float* loss = out(ctx, 0, tf::TensorShape({}));
      float* lse = loss ? out(ctx, 1, tf::TensorShape({2, p.B})) : nullptr;
      if (!lse) return;
      mmkeras::contrastive_forward(p, in(ctx, 0), in(ctx, 1), in(ctx, 2),
                                   in(ctx, 3), loss, lse);
    });
  }
};

class ContrastiveBackwardOp : public ContrastiveOp {
 public:
  using ContrastiveOp::ContrastiveOp;
  void Compute(tf::OpKernelContext* ctx) override {
    guarded(ctx, [&] {
      auto p = problem(ctx);
      if (dims(ctx->input(4)) != std::vector<int64_t>{2, p.B} ||
          ctx->input(5).NumElements() != 1)
        throw std::invalid_argument("lse must be (2, B) and dloss a scalar");
      float* da = out(ctx, 0, ctx->input(0).shape());
      float* db = da ? out(ctx, 1, ctx->input(1).shape()) : nullptr;
      float* ds = db ? out(ctx, 2, tf::TensorShape({})) : nullptr;
      float* dt = ds ? out(ctx, 3, tf::TensorShape({})) : nullptr;
      if (!dt) return;
      mmkeras::contrastive_backward(p, in(ctx, 0), in(ctx, 1), in(ctx, 2),
                                    in(ctx, 3), in(ctx, 4), in(ctx, 5), da,
                                    db, ds, dt);
    });
  }
};

}  // namespace

#define MMKERAS_CPU_KERNEL(name, cls) \
  REGISTER_KERNEL_BUILDER(Name(name).Device(tf::DEVICE_CPU), cls)

MMKERAS_CPU_KERNEL("MmkerasGatedFusionForward", GatedForwardOp);
MMKERAS_CPU_KERNEL("MmkerasGatedFusionBackward", GatedBackwardOp);
MMKERAS_CPU_KERNEL("MmkerasLowRankFusionForward", LowRankForwardOp);
MMKERAS_CPU_KERNEL("MmkerasLowRankFusionBackward", LowRankBackwardOp);
MMKERAS_CPU_KERNEL("MmkerasContrastiveForward", ContrastiveForwardOp);
MMKERAS_CPU_KERNEL("MmkerasContrastiveBackward", ContrastiveBackwardOp);
