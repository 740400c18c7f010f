// CUDA backend: elementwise ops and dropout (kernels in elementwise.cuh).
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/elementwise.cuh"

namespace zt {

void CudaBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) const {
  const char* api = "binary";
  const int device = cuda::cuda_device_of(api, out);
  cuda::check_same_device(api, a, out);
  cuda::check_same_device(api, b, out);
  ZT_CHECK(a.shape() == out.shape() && b.shape() == out.shape(), api, "operands must be expanded to the output's shape ",
           shape_str(out.shape()), ", got a ", a.describe(), ", b ", b.describe());
  ZT_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), api, "needs one dtype, got a ", a.describe(), ", b ",
           b.describe(), ", out ", out.describe());
  cuda::check_contiguous(api, out, "out");
  const int64_t n = out.numel();
  if (n == 0) return;
  cuda::DeviceGuard guard(device);
  cudaStream_t stream = cuda::current_stream(device);
  cuda::dispatch_numeric(out.dtype(), api, [&]<typename T>() {
    const T* pa = static_cast<const T*>(a.raw_data());
    const T* pb = static_cast<const T*>(b.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    if (a.is_contiguous() && b.is_contiguous()) {
      cuda::launch_binary_contiguous<T>(op, pa, pb, po, n, stream);
    } else {
      const auto layout = cuda::coalesce<3>(out.shape(), {&a.strides(), &b.strides(), &out.strides()});
      cuda::launch_binary_strided<T>(op, pa, pb, po, layout, n, stream);
    }
  });
}

Tensor CudaBackend::unary(UnaryOp op, const Tensor& x, double scalar) const {
  const char* api = "unary";
  const int device = cuda::cuda_device_of(api, x);
  cuda::check_contiguous(api, x, "x");
  Tensor y = empty(x.shape(), x.dtype(), x.device());
  cuda::DeviceGuard guard(device);
  dispatch_float(x.dtype(), api, [&]<typename T>() {
    cuda::launch_unary<T>(op, static_cast<const T*>(x.raw_data()), static_cast<T*>(y.raw_data()), scalar, x.numel(),
                          cuda::current_stream(device));
  });
  return y;
}

Tensor CudaBackend::unary_backward(UnaryOp op, const Tensor& grad_out, const Tensor& x, const Tensor& y,
                                   double scalar) const {
  const char* api = "unary_backward";
  const int device = cuda::cuda_device_of(api, grad_out);
  cuda::check_contiguous(api, grad_out, "grad_out");
  const bool needs_x = op == UnaryOp::log || op == UnaryOp::relu || op == UnaryOp::gelu || op == UnaryOp::pow_scalar;
  const bool needs_y = op == UnaryOp::exp || op == UnaryOp::sqrt || op == UnaryOp::tanh;
  ZT_CHECK(!needs_x || x.defined(), api, "this op's derivative needs x");
  ZT_CHECK(!needs_y || y.defined() || x.defined(), api, "this op's derivative needs y (or x to recompute it)");
  for (const Tensor* t : {&x, &y}) {
    if (!t->defined()) continue;
    cuda::check_same_device(api, grad_out, *t);
    cuda::check_contiguous(api, *t, "x and y");
    ZT_CHECK(t->shape() == grad_out.shape() && t->dtype() == grad_out.dtype(), api, "grad_out ", grad_out.describe(),
             " does not match ", t->describe());
  }
  Tensor dx = empty(grad_out.shape(), grad_out.dtype(), grad_out.device());
  cuda::DeviceGuard guard(device);
  dispatch_float(grad_out.dtype(), api, [&]<typename T>() {
    const T* px = x.defined() ? static_cast<const T*>(x.raw_data()) : nullptr;
    const T* py = y.defined() ? static_cast<const T*>(y.raw_data()) : nullptr;
    cuda::launch_unary_backward<T, T>(op, static_cast<const T*>(grad_out.raw_data()), px, py,
                                      static_cast<T*>(dx.raw_data()), scalar, grad_out.numel(),
                                      cuda::current_stream(device));
  });
  return dx;
}

void CudaBackend::axpy(Tensor& dst, const Tensor& src, double alpha) const {
  const char* api = "axpy";
  const int device = cuda::cuda_device_of(api, dst);
  cuda::check_same_device(api, dst, src);
  ZT_CHECK(dst.shape() == src.shape(), api, "shapes differ: dst ", dst.describe(), ", src ", src.describe());
  cuda::check_contiguous(api, dst, "dst");
  cuda::check_contiguous(api, src, "src");
  cuda::DeviceGuard guard(device);
  dispatch_float(dst.dtype(), api, [&]<typename D>() {
    dispatch_float(src.dtype(), api, [&]<typename S>() {
      cuda::launch_axpby<D, S>(static_cast<D*>(dst.raw_data()), static_cast<const S*>(src.raw_data()), alpha, 1.0,
                               dst.numel(), cuda::current_stream(device));
    });
  });
}

void CudaBackend::scale(Tensor& dst, double s) const {
  const char* api = "scale";
  const int device = cuda::cuda_device_of(api, dst);
  cuda::check_contiguous(api, dst, "dst");
  cuda::DeviceGuard guard(device);
  dispatch_float(dst.dtype(), api, [&]<typename D>() {
    cuda::launch_axpby<D, D>(static_cast<D*>(dst.raw_data()), nullptr, 0.0, s, dst.numel(),
                             cuda::current_stream(device));
  });
}

Tensor CudaBackend::dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset) const {
  const char* api = "dropout";
  const int device = cuda::cuda_device_of(api, x);
  cuda::check_contiguous(api, x, "x");
  ZT_CHECK(p >= 0.0 && p <= 1.0, api, "p must be in [0, 1], got ", p);
  Tensor y = empty(x.shape(), x.dtype(), x.device());
  cuda::DeviceGuard guard(device);
  dispatch_float(x.dtype(), api, [&]<typename T>() {
    cuda::launch_dropout<T>(static_cast<const T*>(x.raw_data()), static_cast<T*>(y.raw_data()), x.numel(), p, seed,
                            offset, cuda::current_stream(device));
  });
  return y;
}

}  // namespace zt
