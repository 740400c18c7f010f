// CUDA backend: the fused AdamW step (kernel in adamw.cuh).
#include <cmath>

#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/cuda_backend.h"

namespace zt {

void CudaBackend::adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                             const AdamWArgs& args) const {
  const char* api = "adamw_step";
  const int device = cuda::cuda_device_of(api, param);
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
  const cuda::AdamWConstants c = cuda::make_adamw_constants(args);
  cuda::DeviceGuard guard(device);
  cuda::dispatch_gpu_float(grad.dtype(), api, [&]<typename G>() {
    cuda::launch_adamw<G>(static_cast<float*>(param.raw_data()), static_cast<const G*>(grad.raw_data()),
                          static_cast<float*>(exp_avg.raw_data()), static_cast<float*>(exp_avg_sq.raw_data()),
                          param.numel(), c, cuda::current_stream(device));
  });
}

}  // namespace zt
