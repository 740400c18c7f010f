// CUDA backend: cross entropy (kernels in cross_entropy.cuh).
#include "kernels/cuda/cross_entropy.cuh"
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/cuda_backend.h"

namespace zt {

namespace {

struct LossShape {
  int64_t n, v, valid;
};

LossShape check_loss_inputs(const char* api, const Tensor& logits, const Tensor& targets, int64_t valid_vocab) {
  cuda::cuda_device_of(api, logits);
  cuda::check_same_device(api, logits, targets);
  ZT_CHECK(logits.dim() == 2, api, "logits must be [N, V], got ", logits.describe());
  cuda::check_contiguous(api, logits, "logits");
  cuda::check_contiguous(api, targets, "targets");
  const int64_t n = logits.size(0), v = logits.size(1);
  ZT_CHECK(targets.numel() == n, api, "targets ", targets.describe(), " need one entry per row of logits ",
           logits.describe());
  ZT_CHECK(valid_vocab >= 1 && valid_vocab <= v, api, "valid_vocab ", valid_vocab, " must be in [1, V] for logits ",
           logits.describe());
  return {n, v, valid_vocab};
}

template <typename F>
decltype(auto) dispatch_targets(const char* api, const Tensor& targets, F&& f) {
  if (targets.dtype() == DType::i32) return f.template operator()<int32_t>();
  if (targets.dtype() == DType::i64) return f.template operator()<int64_t>();
  throw_dtype_error(api, targets.dtype(), "i32 or i64 targets");
}

}  // namespace

CrossEntropyResult CudaBackend::cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                              int64_t valid_vocab) const {
  const char* api = "cross_entropy";
  const LossShape s = check_loss_inputs(api, logits, targets, valid_vocab);
  const int device = logits.device().index;
  CrossEntropyResult r;
  r.losses = empty({s.n}, DType::f32, logits.device());
  r.lse = empty({s.n}, DType::f32, logits.device());
  r.inv_count = empty({}, DType::f32, logits.device());
  cuda::DeviceGuard guard(device);
  cuda::DeviceContext& ctx = cuda::DeviceContext::get(device);
  cuda::dispatch_gpu_float(logits.dtype(), api, [&]<typename T>() {
    dispatch_targets(api, targets, [&]<typename I>() {
      cuda::launch_cross_entropy_forward<T, I>(static_cast<const T*>(logits.raw_data()),
                                               static_cast<const I*>(targets.raw_data()),
                                               static_cast<float*>(r.losses.raw_data()),
                                               static_cast<float*>(r.lse.raw_data()), s.n, s.v, s.valid, ignore_index,
                                               ctx.error_sink(), ctx.current_stream());
      cuda::launch_inverse_target_count<I>(static_cast<const I*>(targets.raw_data()), s.n, ignore_index, s.valid,
                                           static_cast<float*>(r.inv_count.raw_data()), ctx.current_stream());
    });
  });
  return r;
}

Tensor CudaBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                           int64_t ignore_index, int64_t valid_vocab, double grad_scale,
                                           const Tensor& scale_by, bool in_place) const {
  const char* api = "cross_entropy_backward";
  const LossShape s = check_loss_inputs(api, logits, targets, valid_vocab);
  cuda::check_same_device(api, logits, lse);
  ZT_CHECK(lse.dtype() == DType::f32 && lse.numel() == s.n && lse.is_contiguous(), api,
           "lse must be f32 with one value per row (", s.n, "), got ", lse.describe());
  const int device = logits.device().index;
  if (scale_by.defined()) {
    cuda::check_same_device(api, logits, scale_by);
    ZT_CHECK(scale_by.dtype() == DType::f32 && scale_by.numel() == 1, api, "scale_by must be one f32 value, got ",
             scale_by.describe());
  }
  Tensor dlogits = in_place ? logits : empty(logits.shape(), logits.dtype(), logits.device());
  cuda::DeviceGuard guard(device);
  cuda::DeviceContext& ctx = cuda::DeviceContext::get(device);
  cuda::dispatch_gpu_float(logits.dtype(), api, [&]<typename T>() {
    dispatch_targets(api, targets, [&]<typename I>() {
      cuda::launch_cross_entropy_backward<T, I>(
          static_cast<const T*>(logits.raw_data()), static_cast<const I*>(targets.raw_data()),
          static_cast<const float*>(lse.raw_data()), static_cast<T*>(dlogits.raw_data()), s.n, s.v, s.valid,
          ignore_index, static_cast<float>(grad_scale),
          scale_by.defined() ? static_cast<const float*>(scale_by.raw_data()) : nullptr, ctx.error_sink(),
          ctx.current_stream());
    });
  });
  return dlogits;
}

CrossEntropyResult CudaBackend::cross_entropy_with_grad(Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                                        int64_t valid_vocab, double grad_scale) const {
  Tensor dlogits = logits;  // the fused kernel reads each element before writing its gradient there
  return cuda::cross_entropy_forward_backward(logits, targets, ignore_index, valid_vocab, grad_scale, dlogits);
}

Tensor CudaBackend::inverse_target_count(const Tensor& targets, int64_t ignore_index, int64_t valid_vocab,
                                         DType dtype) const {
  const char* api = "inverse_target_count";
  const int device = cuda::cuda_device_of(api, targets);
  cuda::check_contiguous(api, targets, "targets");
  ZT_CHECK(dtype == DType::f32 || dtype == DType::f64, api, "dtype must be f32 or f64, got ", dtype_name(dtype));
  Tensor out = empty({}, DType::f32, targets.device());
  cuda::DeviceGuard guard(device);
  cuda::DeviceContext& ctx = cuda::DeviceContext::get(device);
  dispatch_targets(api, targets, [&]<typename I>() {
    cuda::launch_inverse_target_count<I>(static_cast<const I*>(targets.raw_data()), targets.numel(), ignore_index,
                                         valid_vocab, static_cast<float*>(out.raw_data()), ctx.current_stream());
  });
  if (dtype == DType::f32) return out;
  Tensor wide = empty({}, dtype, targets.device());  // f32's 1 / count, widened
  copy_strided(out, wide);
  return wide;
}

namespace cuda {

CrossEntropyResult cross_entropy_forward_backward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                                  int64_t valid_vocab, double grad_scale, Tensor& dlogits) {
  const char* api = "cross_entropy_forward_backward";
  const LossShape s = check_loss_inputs(api, logits, targets, valid_vocab);
  if (!dlogits.defined()) dlogits = empty(logits.shape(), logits.dtype(), logits.device());
  check_same_device(api, logits, dlogits);
  check_contiguous(api, dlogits, "dlogits");
  ZT_CHECK(dlogits.shape() == logits.shape() && dlogits.dtype() == logits.dtype(), api, "dlogits ",
           dlogits.describe(), " must match logits ", logits.describe());
  const int device = logits.device().index;
  CrossEntropyResult r;
  r.losses = empty({s.n}, DType::f32, logits.device());
  r.lse = empty({s.n}, DType::f32, logits.device());
  r.inv_count = empty({}, DType::f32, logits.device());
  DeviceGuard guard(device);
  DeviceContext& ctx = DeviceContext::get(device);
  dispatch_gpu_float(logits.dtype(), api, [&]<typename T>() {
    dispatch_targets(api, targets, [&]<typename I>() {
      launch_cross_entropy_fused<T, I>(static_cast<const T*>(logits.raw_data()), static_cast<const I*>(targets.raw_data()),
                                       static_cast<float*>(r.losses.raw_data()), static_cast<float*>(r.lse.raw_data()),
                                       static_cast<T*>(dlogits.raw_data()), s.n, s.v, s.valid, ignore_index,
                                       static_cast<float>(grad_scale), ctx.error_sink(), ctx.current_stream());
      launch_inverse_target_count<I>(static_cast<const I*>(targets.raw_data()), s.n, ignore_index, s.valid,
                                     static_cast<float*>(r.inv_count.raw_data()), ctx.current_stream());
    });
  });
  return r;
}

}  // namespace cuda

}  // namespace zt
