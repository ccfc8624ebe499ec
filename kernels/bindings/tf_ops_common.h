// Helpers shared by the TensorFlow adapters (tf_ops.cc, tf_ops_fusion.cc):
// registering an op from lists of specs, one OpKernel class template for
// every op, and handing an OpKernelContext's tensors to a kernel that takes
// pointers and sizes.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/platform/threadpool.h"

#include "common.h"

namespace mmkeras::tf_ops {

namespace tf = ::tensorflow;
using tf::shape_inference::InferenceContext;
using tf::shape_inference::ShapeHandle;

// Input, output or attr specs of an op, e.g. {"q: float", "mask: bool"}.
using Specs = std::vector<std::string>;

// Registers an op as REGISTER_OP does when the library loads: `inputs` are
// concatenated, so a backward op names the inputs it shares with its forward
// op once ({kInputs, {"dout: float"}}) where REGISTER_OP's chain of single
// .Input() calls would repeat them. Returns true, to initialize a static.
inline bool RegisterOp(const char* name, std::initializer_list<Specs> inputs,
                       const Specs& outputs, const Specs& attrs,
                       tf::OpShapeInferenceFn shape_fn) {
  tf::register_op::OpDefBuilderWrapper op(name);
  for (const Specs& specs : inputs) {
    for (const std::string& spec : specs) op.Input(spec);
  }
  for (const std::string& spec : outputs) op.Output(spec);
  for (const std::string& spec : attrs) op.Attr(spec);
  op.SetShapeFn(std::move(shape_fn));
  op();  // hands the op to the registry, as REGISTER_OP's initializer does
  return true;
}

// Shape function of a backward op: output i is the gradient of input i (same
// shape) for i < n; the outputs after those are scalars.
template <int n>
absl::Status GradientShapes(InferenceContext* c) {
  for (int i = 0; i < c->num_outputs(); ++i) {
    c->set_output(i, i < n ? c->input(i) : c->Scalar());
  }
  return absl::OkStatus();
}

inline std::vector<int64_t> dims(const tf::Tensor& t) {
  std::vector<int64_t> d;
  for (int i = 0; i < t.dims(); ++i) d.push_back(t.dim_size(i));
  return d;
}

// The ops always take their mask input; without `has_mask` it is a
// placeholder, which the kernels get as no mask (null, no dims).
inline const uint8_t* mask_data(const tf::Tensor& mask, bool has_mask) {
  return has_mask ? reinterpret_cast<const uint8_t*>(mask.flat<bool>().data())
                  : nullptr;
}

inline std::vector<int64_t> mask_dims(const tf::Tensor& mask, bool has_mask) {
  return has_mask ? dims(mask) : std::vector<int64_t>{};
}

inline const float* in(tf::OpKernelContext* ctx, int i) {
  return ctx->input(i).flat<float>().data();
}

// Allocates output i with `shape`; returns its data or null (error set).
inline float* out(tf::OpKernelContext* ctx, int i,
                  const tf::TensorShape& shape) {
  tf::Tensor* t = nullptr;
  auto status = ctx->allocate_output(i, shape, &t);
  if (!status.ok()) {
    ctx->CtxFailure(status);
    return nullptr;
  }
  return t->flat<float>().data();
}

// Runs fn, turning a C++ exception into an InvalidArgument error on ctx.
inline void guarded(tf::OpKernelContext* ctx, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    ctx->CtxFailure(tf::errors::InvalidArgument(e.what()));
  }
}

// An op's CPU kernel: reads the op's attrs once (Attrs's constructor, which
// sets an error on the construction context when one is missing), then runs
// compute(ctx, attrs) on each call, guarded. Each op is then a function
// where a tf::OpKernel subclass per op would repeat the same scaffolding.
// TensorFlow's intra-op thread pool, lent to the kernels (common.h): its
// threads spin while they wait for work, so threads of the kernels' own
// would share the cores with them (measured: 2x slower at T = S = 512).
class TfTaskPool : public mmkeras::TaskPool {
 public:
  explicit TfTaskPool(tf::OpKernelContext* ctx)
      : pool_(ctx->device()->tensorflow_cpu_worker_threads()->workers) {}
  int num_threads() const override { return pool_->NumThreads(); }
  void run(int64_t n, const std::function<void(int64_t)>& work) override {
    // One unit per worker: a cost this high makes TensorFlow give each unit
    // a thread of its own.
    pool_->ParallelFor(n, int64_t{1} << 30, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) work(i);
    });
  }

 private:
  tf::thread::ThreadPool* pool_;
};

template <typename Attrs, void (*compute)(tf::OpKernelContext*, const Attrs&)>
class Kernel : public tf::OpKernel {
 public:
  explicit Kernel(tf::OpKernelConstruction* ctx)
      : tf::OpKernel(ctx), attrs_(ctx) {}

  void Compute(tf::OpKernelContext* ctx) override {
    TfTaskPool pool(ctx);
    mmkeras::ScopedTaskPool lend(&pool);
    guarded(ctx, [&] { compute(ctx, attrs_); });
  }

 private:
  const Attrs attrs_;
};

}  // namespace mmkeras::tf_ops

#define MMKERAS_CPU_KERNEL(name, cls) \
  REGISTER_KERNEL_BUILDER(Name(name).Device(::tensorflow::DEVICE_CPU), cls)
