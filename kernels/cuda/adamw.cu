// CUDA kernels: adamw.
#include "kernels/cuda/cuda_backend.h"

namespace zt {

void CudaBackend::adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamWArgs& args) const { not_implemented("adamw_step"); }

}  // namespace zt
