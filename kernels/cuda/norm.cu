// CUDA backend: layernorm and rmsnorm (kernels in norm.cuh).
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/norm.cuh"

namespace zt {

namespace {

struct NormShape {
  int64_t rows;
  int c;
};

NormShape check_norm_inputs(const char* api, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  cuda::cuda_device_of(api, x);
  ZT_CHECK(x.dim() >= 1 && x.size(-1) > 0, api, "needs x [..., C] with C > 0, got ", x.describe());
  const int64_t c = x.size(-1);
  ZT_CHECK(c <= (int64_t{1} << 30), api, "C = ", c, " is too large for the row kernels");
  cuda::check_contiguous(api, x, "x");
  for (const Tensor* p : {&weight, &bias}) {
    if (!p->defined()) continue;
    cuda::check_same_device(api, x, *p);
    cuda::check_contiguous(api, *p, "weight and bias");
    ZT_CHECK(p->dim() == 1 && p->size(0) == c && p->dtype() == x.dtype(), api, "weight and bias must be [", c, "] ",
             dtype_name(x.dtype()), " to match x ", x.describe(), ", got ", p->describe());
  }
  ZT_CHECK(weight.defined(), api, "needs a weight [", c, "]");
  return {x.numel() / c, static_cast<int>(c)};
}

void check_stats(const char* api, const Tensor& t, int64_t rows, const char* what) {
  ZT_CHECK(t.defined() && t.dtype() == DType::f32 && t.numel() == rows && t.is_contiguous(), api, what,
           " must be f32 with one value per row (", rows, "), got ", t.describe());
}

template <bool kRms>
LayerNormResult norm_forward(const char* api, const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  const NormShape s = check_norm_inputs(api, x, weight, bias);
  const int device = x.device().index;
  LayerNormResult r;
  r.y = empty(x.shape(), x.dtype(), x.device());
  if (!kRms) r.mean = empty({s.rows}, DType::f32, x.device());
  r.rstd = empty({s.rows}, DType::f32, x.device());
  cuda::DeviceGuard guard(device);
  cuda::dispatch_gpu_float(x.dtype(), api, [&]<typename T>() {
    cuda::launch_norm_forward<T, kRms>(static_cast<const T*>(x.raw_data()), static_cast<const T*>(weight.raw_data()),
                                       bias.defined() ? static_cast<const T*>(bias.raw_data()) : nullptr,
                                       static_cast<T*>(r.y.raw_data()),
                                       kRms ? nullptr : static_cast<float*>(r.mean.raw_data()),
                                       static_cast<float*>(r.rstd.raw_data()), s.rows, s.c, static_cast<float>(eps),
                                       cuda::current_stream(device));
  });
  return r;
}

template <bool kRms>
NormGrads norm_backward(const char* api, const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                        const Tensor& rstd, bool has_bias) {
  const NormShape s = check_norm_inputs(api, x, weight, Tensor());
  cuda::check_same_device(api, x, dy);
  cuda::check_contiguous(api, dy, "dy");
  ZT_CHECK(dy.shape() == x.shape() && dy.dtype() == x.dtype(), api, "dy ", dy.describe(), " does not match x ",
           x.describe());
  if (!kRms) check_stats(api, mean, s.rows, "mean");
  check_stats(api, rstd, s.rows, "rstd");
  const int device = x.device().index;
  NormGrads g;
  g.dx = empty(x.shape(), x.dtype(), x.device());
  g.dweight = empty(weight.shape(), weight.dtype(), weight.device());
  if (has_bias) g.dbias = empty(weight.shape(), weight.dtype(), weight.device());
  if (s.rows == 0) {
    cuda_backend().fill(g.dweight, 0.0);
    if (has_bias) cuda_backend().fill(g.dbias, 0.0);
    return g;
  }
  const int64_t chunks = cuda::norm_row_chunks(s.rows, s.c);
  Tensor partial = empty({2 * chunks * s.c}, DType::f32, x.device(), MemoryCategory::other);
  cuda::DeviceGuard guard(device);
  cuda::dispatch_gpu_float(x.dtype(), api, [&]<typename T>() {
    cuda::launch_norm_backward<T, kRms>(
        static_cast<const T*>(dy.raw_data()), static_cast<const T*>(x.raw_data()),
        static_cast<const T*>(weight.raw_data()), kRms ? nullptr : static_cast<const float*>(mean.raw_data()),
        static_cast<const float*>(rstd.raw_data()), static_cast<T*>(g.dx.raw_data()), static_cast<T*>(g.dweight.raw_data()),
        has_bias ? static_cast<T*>(g.dbias.raw_data()) : nullptr, static_cast<float*>(partial.raw_data()), s.rows, s.c,
        cuda::current_stream(device));
  });
  return g;
}

}  // namespace

LayerNormResult CudaBackend::layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) const {
  return norm_forward<false>("layernorm", x, weight, bias, eps);
}

NormGrads CudaBackend::layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                          const Tensor& rstd, bool has_bias) const {
  return norm_backward<false>("layernorm_backward", dy, x, weight, mean, rstd, has_bias);
}

LayerNormResult CudaBackend::rmsnorm(const Tensor& x, const Tensor& weight, double eps) const {
  return norm_forward<true>("rmsnorm", x, weight, Tensor(), eps);
}

NormGrads CudaBackend::rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                        const Tensor& rstd) const {
  return norm_backward<true>("rmsnorm_backward", dy, x, weight, Tensor(), rstd, false);
}

}  // namespace zt
