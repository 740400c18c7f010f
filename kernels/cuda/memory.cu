// CUDA backend: copies, casts, fills and random fills (kernels in memory.cuh).
#include <cstring>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/memory.cuh"

namespace zt {

void CudaBackend::copy_strided(const Tensor& src, Tensor& dst) const {
  const char* api = "copy";
  ZT_CHECK(src.shape() == dst.shape(), api, "shapes differ: src ", src.describe(), ", dst ", dst.describe());
  const int device = cuda::cuda_device_of(api, src);
  ZT_CHECK(dst.device() == src.device(), api, "copy_strided works within one device, got ", src.describe(), " -> ",
           dst.describe(), " (use copy_bytes across devices)");
  const int64_t n = src.numel();
  if (n == 0) return;
  cuda::DeviceGuard guard(device);
  cudaStream_t stream = cuda::current_stream(device);
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    if (src.raw_data() != dst.raw_data())
      ZT_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), src.nbytes(), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  const bool to_bool = dst.dtype() == DType::boolean;
  const bool flat = src.is_contiguous() && dst.is_contiguous();
  const auto layout = cuda::coalesce<2>(src.shape(), {&src.strides(), &dst.strides()});
  dispatch_all(src.dtype(), api, [&]<typename S>() {
    dispatch_all(dst.dtype(), api, [&]<typename D>() {
      const S* s = static_cast<const S*>(src.raw_data());
      D* d = static_cast<D*>(dst.raw_data());
      if (flat) {
        cuda::launch_cast_contiguous<S, D>(s, d, n, to_bool, stream);
      } else {
        cuda::launch_copy_strided<S, D>(s, d, layout, n, to_bool, stream);
      }
    });
  });
}

// Note [Current stream] in runtime.h: the copy is ordered after the kernels already queued.
void CudaBackend::copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t n) const {
  ZT_CHECK(dst_device.is_cuda() || src_device.is_cuda() || (dst_device.is_cpu() && src_device.is_cpu()), "copy_bytes",
           "unsupported devices ", src_device.str(), " -> ", dst_device.str());
  cuda::copy_bytes(dst, dst_device.is_cuda() ? dst_device.index : -1, src,
                        src_device.is_cuda() ? src_device.index : -1, n);
}

void CudaBackend::fill(Tensor& dst, double value) const {
  const char* api = "fill";
  const int device = cuda::cuda_device_of(api, dst);
  cuda::check_contiguous(api, dst, "dst");
  const int64_t n = dst.numel();
  if (n == 0) return;
  cuda::DeviceGuard guard(device);
  cudaStream_t stream = cuda::current_stream(device);
  dispatch_all(dst.dtype(), api, [&]<typename T>() {
    // The element is made on the host exactly as the CPU backend makes it.
    const T v = from_compute<T>(static_cast<typename ComputeType<T>::type>(value));
    unsigned char bytes[sizeof(T)];
    std::memcpy(bytes, &v, sizeof(T));
    bool all_zero = true;
    for (unsigned char c : bytes) all_zero = all_zero && c == 0;
    if (all_zero) {
      ZT_CUDA_CHECK(cudaMemsetAsync(dst.raw_data(), 0, dst.nbytes(), stream));
    } else {
      cuda::launch_fill<T>(static_cast<T*>(dst.raw_data()), v, n, stream);
    }
  });
}

void CudaBackend::random_fill(Tensor& dst, RandomKind kind, uint64_t seed, uint64_t offset) const {
  const char* api = "random_fill";
  const int device = cuda::cuda_device_of(api, dst);
  cuda::check_contiguous(api, dst, "dst");
  cuda::DeviceGuard guard(device);
  cudaStream_t stream = cuda::current_stream(device);
  dispatch_float(dst.dtype(), api, [&]<typename T>() {
    T* p = static_cast<T*>(dst.raw_data());
    if (kind == RandomKind::normal) {
      cuda::launch_normal_fill<T>(p, dst.numel(), seed, offset, stream);
    } else {
      cuda::launch_uniform_fill<T>(p, dst.numel(), seed, offset, stream);
    }
  });
}

}  // namespace zt
