// TensorFlow adapter: the CPU attention kernel as custom ops, compiled at run
// time with tf.sysconfig.get_compile_flags()/get_link_flags() and loaded with
// tf.load_op_library. The gradient is registered in Python
// (mmkeras/backend/tensorflow_attention.py).
#include <exception>
#include <vector>

#include "flash_attention.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tf = tensorflow;
using tf::shape_inference::InferenceContext;

REGISTER_OP("MmkerasAttentionForward")
    .Input("q: float")
    .Input("k: float")
    .Input("v: float")
    .Input("mask: bool")
    .Output("out: float")
    .Output("lse: float")
    .Attr("has_mask: bool")
    .Attr("causal: bool")
    .Attr("scale: float")
    .SetShapeFn([](InferenceContext* c) {
      tf::shape_inference::ShapeHandle q;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &q));
      c->set_output(0, q);
      c->set_output(1, c->MakeShape({c->Dim(q, 0), c->Dim(q, 2), c->Dim(q, 1)}));
      return tf::OkStatus();
    });

REGISTER_OP("MmkerasAttentionBackward")
    .Input("q: float")
    .Input("k: float")
    .Input("v: float")
    .Input("mask: bool")
    .Input("out: float")
    .Input("lse: float")
    .Input("dout: float")
    .Output("dq: float")
    .Output("dk: float")
    .Output("dv: float")
    .Attr("has_mask: bool")
    .Attr("causal: bool")
    .Attr("scale: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      c->set_output(2, c->input(2));
      return tf::OkStatus();
    });

namespace {

std::vector<int64_t> dims(const tf::Tensor& t) {
  std::vector<int64_t> d;
  for (int i = 0; i < t.dims(); ++i) d.push_back(t.dim_size(i));
  return d;
}

class AttentionOp : public tf::OpKernel {
 public:
  explicit AttentionOp(tf::OpKernelConstruction* ctx) : tf::OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_mask", &has_mask_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("causal", &causal_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scale", &scale_));
  }

 protected:
  // Returns false (with the error set on ctx) when the inputs do not fit.
  bool problem(tf::OpKernelContext* ctx, mmkeras::AttentionProblem* p) {
    const tf::Tensor& q = ctx->input(0);
    const tf::Tensor& k = ctx->input(1);
    const tf::Tensor& v = ctx->input(2);
    const tf::Tensor& mask = ctx->input(3);
    try {
      const uint8_t* mptr =
          has_mask_ ? reinterpret_cast<const uint8_t*>(mask.flat<bool>().data())
                    : nullptr;
      *p = mmkeras::make_problem(dims(q), dims(k), dims(v), mptr,
                                 has_mask_ ? dims(mask) : std::vector<int64_t>{},
                                 causal_, scale_);
    } catch (const std::exception& e) {
      ctx->CtxFailure(tf::errors::InvalidArgument(e.what()));
      return false;
    }
    return true;
  }

  bool has_mask_ = false;
  bool causal_ = false;
  float scale_ = 1.0f;
};

class ForwardOp : public AttentionOp {
 public:
  using AttentionOp::AttentionOp;
  void Compute(tf::OpKernelContext* ctx) override {
    mmkeras::AttentionProblem p;
    if (!problem(ctx, &p)) return;
    tf::Tensor* out = nullptr;
    tf::Tensor* lse = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, tf::TensorShape({p.B, p.N, p.T}),
                                             &lse));
    mmkeras::attention_forward(p, ctx->input(0).flat<float>().data(),
                               ctx->input(1).flat<float>().data(),
                               ctx->input(2).flat<float>().data(),
                               out->flat<float>().data(),
                               lse->flat<float>().data());
  }
};

class BackwardOp : public AttentionOp {
 public:
  using AttentionOp::AttentionOp;
  void Compute(tf::OpKernelContext* ctx) override {
    mmkeras::AttentionProblem p;
    if (!problem(ctx, &p)) return;
    OP_REQUIRES(ctx,
                ctx->input(4).shape() == ctx->input(0).shape() &&
                    ctx->input(6).shape() == ctx->input(0).shape() &&
                    ctx->input(5).NumElements() == p.B * p.N * p.T,
                tf::errors::InvalidArgument("out, dout or lse shape mismatch"));
    tf::Tensor *dq = nullptr, *dk = nullptr, *dv = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &dq));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1).shape(), &dk));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(2).shape(), &dv));
    mmkeras::attention_backward(
        p, ctx->input(0).flat<float>().data(), ctx->input(1).flat<float>().data(),
        ctx->input(2).flat<float>().data(), ctx->input(4).flat<float>().data(),
        ctx->input(5).flat<float>().data(), ctx->input(6).flat<float>().data(),
        dq->flat<float>().data(), dk->flat<float>().data(),
        dv->flat<float>().data());
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("MmkerasAttentionForward").Device(tf::DEVICE_CPU),
                        ForwardOp);
REGISTER_KERNEL_BUILDER(Name("MmkerasAttentionBackward").Device(tf::DEVICE_CPU),
                        BackwardOp);
