// CUDA backend: softmax and log_softmax (kernels in softmax.cuh).
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/softmax.cuh"

namespace zt {

namespace {

struct Rows {
  int64_t rows, c;
};

Rows rows_of(const Tensor& x) {
  const int64_t c = x.dim() == 0 ? 1 : x.size(-1);
  return {c == 0 ? 0 : x.numel() / c, c};
}

template <bool kLog>
Tensor softmax_forward(const char* api, const Tensor& x) {
  const int device = cuda::cuda_device_of(api, x);
  cuda::check_contiguous(api, x, "x");
  Tensor y = empty(x.shape(), x.dtype(), x.device());
  const Rows r = rows_of(x);
  cuda::DeviceGuard guard(device);
  cuda::dispatch_gpu_float(x.dtype(), api, [&]<typename T>() {
    cuda::launch_softmax_forward<T, kLog>(static_cast<const T*>(x.raw_data()), static_cast<T*>(y.raw_data()), r.rows,
                                          r.c, cuda::current_stream(device));
  });
  return y;
}

template <bool kLog>
Tensor softmax_backward(const char* api, const Tensor& grad_y, const Tensor& y) {
  const int device = cuda::cuda_device_of(api, y);
  cuda::check_same_device(api, grad_y, y);
  cuda::check_contiguous(api, grad_y, "grad_y");
  cuda::check_contiguous(api, y, "y");
  ZT_CHECK(grad_y.shape() == y.shape() && grad_y.dtype() == y.dtype(), api, "grad_y ", grad_y.describe(),
           " does not match y ", y.describe());
  Tensor dx = empty(y.shape(), y.dtype(), y.device());
  const Rows r = rows_of(y);
  cuda::DeviceGuard guard(device);
  cuda::dispatch_gpu_float(y.dtype(), api, [&]<typename T>() {
    cuda::launch_softmax_backward<T, kLog>(static_cast<const T*>(grad_y.raw_data()), static_cast<const T*>(y.raw_data()),
                                           static_cast<T*>(dx.raw_data()), r.rows, r.c, cuda::current_stream(device));
  });
  return dx;
}

}  // namespace

Tensor CudaBackend::softmax(const Tensor& x) const { return softmax_forward<false>("softmax", x); }

Tensor CudaBackend::softmax_backward(const Tensor& grad_y, const Tensor& y) const {
  return zt::softmax_backward<false>("softmax_backward", grad_y, y);
}

Tensor CudaBackend::log_softmax(const Tensor& x) const { return softmax_forward<true>("log_softmax", x); }

Tensor CudaBackend::log_softmax_backward(const Tensor& grad_y, const Tensor& y) const {
  return zt::softmax_backward<true>("log_softmax_backward", grad_y, y);
}

}  // namespace zt
