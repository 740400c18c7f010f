// CUDA backend: the fused AdamW step (kernel in adamw.cuh).
#include <cmath>

#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/cuda_backend.h"

namespace zt {

namespace {
void check_adamw_operands(const char* api, const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                          const Tensor& exp_avg_sq, const AdamWArgs& args) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&grad, &exp_avg, &exp_avg_sq}) {
    cuda::check_same_device(api, param, *t);
    ZT_CHECK(t->numel() == param.numel(), api, "param ", param.describe(), " and ", t->describe(),
             " differ in size");
    cuda::check_contiguous(api, *t, "grad and moments");
  }
  cuda::check_contiguous(api, param, "param");
  ZT_CHECK(param.dtype() == DType::f32 && exp_avg.dtype() == DType::f32 && exp_avg_sq.dtype() == DType::f32, api,
           "param and moments must be f32 (master weights), got ", param.describe(), ", ", exp_avg.describe(), ", ",
           exp_avg_sq.describe());
  ZT_CHECK(args.step >= 1, api, "step counts from 1, got ", args.step);
}
}  // namespace

void CudaBackend::adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                             const AdamWArgs& args) const {
  const char* api = "adamw_step";
  const int device = cuda::cuda_device_of(api, param);
  check_adamw_operands(api, param, grad, exp_avg, exp_avg_sq, args);
  const cuda::AdamWConstants c = cuda::make_adamw_constants(args);
  cuda::DeviceGuard guard(device);
  cuda::dispatch_gpu_float(grad.dtype(), api, [&]<typename G>() {
    cuda::launch_adamw<G>(static_cast<float*>(param.raw_data()), static_cast<const G*>(grad.raw_data()),
                          static_cast<float*>(exp_avg.raw_data()), static_cast<float*>(exp_avg_sq.raw_data()),
                          param.numel(), c, cuda::current_stream(device));
  });
}

void CudaBackend::adamw_step_runs(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                                  const std::vector<AdamWRun>& runs, const AdamWArgs& args,
                                  Tensor* param_copy) const {
  const char* api = "adamw_step_runs";
  // The GPU's copy is a separate cast pass (the default's): no GPU caller asks for one yet.
  if (param_copy != nullptr) return Backend::adamw_step_runs(param, grad, exp_avg, exp_avg_sq, runs, args, param_copy);
  const int device = cuda::cuda_device_of(api, param);
  check_adamw_operands(api, param, grad, exp_avg, exp_avg_sq, args);
  ZT_CHECK(param.dim() == 1, api, "needs flat [n] tensors, got ", param.describe());
  for (const AdamWRun& r : runs)
    ZT_CHECK(r.begin >= 0 && r.n >= 0 && r.begin + r.n <= param.numel(), api, "run [", r.begin, ", ", r.begin + r.n,
             ") is outside the ", param.numel(), " elements");
  const cuda::AdamWConstants c = cuda::make_adamw_constants(args);
  cuda::DeviceGuard guard(device);
  cuda::dispatch_gpu_float(grad.dtype(), api, [&]<typename G>() {
    cuda::AdamWRuns batch;
    auto flush = [&] {
      cuda::launch_adamw_runs<G>(static_cast<float*>(param.raw_data()), static_cast<const G*>(grad.raw_data()),
                                 static_cast<float*>(exp_avg.raw_data()), static_cast<float*>(exp_avg_sq.raw_data()),
                                 batch, c, cuda::current_stream(device));
      batch.count = 0;
    };
    for (const AdamWRun& r : runs) {
      if (r.n == 0) continue;
      batch.begin[batch.count] = r.begin;
      batch.n[batch.count] = r.n;
      batch.weight_decay[batch.count] = static_cast<float>(r.weight_decay);
      if (++batch.count == cuda::AdamWRuns::kMax) flush();
    }
    flush();
  });
}

}  // namespace zt
