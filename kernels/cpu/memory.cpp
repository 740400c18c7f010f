// CPU kernels: copies, casts, fills and random fills; and the CPU backend instance.
#include <algorithm>
#include <cstring>

#include "core/cuda_support.h"
#include "core/rng.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/strided.h"

namespace zt {

namespace {

constexpr int64_t kParallelCopyElements = 1 << 16;

// memmove for large buffers in per-thread pieces: one core's memcpy reaches a fraction of the
// memory bandwidth (GiB-sized offload buffers are copied every step). Overlapping ranges fall back
// to one memmove, whose direction rule the pieces would break.
void copy_bytes_parallel(void* dst, const void* src, size_t bytes) {
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  constexpr size_t kPiece = size_t{4} << 20;
  if (bytes < 2 * kPiece || (d < s + bytes && s < d + bytes)) {
    std::memmove(d, s, bytes);
    return;
  }
  const int64_t pieces = static_cast<int64_t>((bytes + kPiece - 1) / kPiece);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < pieces; ++p) {
    const size_t begin = static_cast<size_t>(p) * kPiece;
    std::memcpy(d + begin, s + begin, std::min(kPiece, bytes - begin));
  }
}

}  // namespace

const Backend& cpu_backend() {
  static const CpuBackend backend;  // stateless
  return backend;
}

void CpuBackend::copy_strided(const Tensor& src, Tensor& dst) const {
  ZT_CHECK(src.shape() == dst.shape(), "copy", "shapes differ: src ", src.describe(), ", dst ", dst.describe());
  ZT_CHECK(src.device().is_cpu() && dst.device().is_cpu(), "copy", "cpu kernel got ", src.describe(), " -> ",
           dst.describe());
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    if (src.raw_data() != dst.raw_data()) copy_bytes_parallel(dst.raw_data(), src.raw_data(), src.nbytes());
    return;
  }
  // Contiguous casts (16-bit gradients widened into f32 host buffers under offload, masters rounded
  // back): one flat loop over all cores, not the strided walk below.
  if (src.is_contiguous() && dst.is_contiguous() && dst.dtype() != DType::boolean) {
    dispatch_all(src.dtype(), "copy", [&]<typename S>() {
      dispatch_all(dst.dtype(), "copy", [&]<typename D>() {
        const S* sp = static_cast<const S*>(src.raw_data());
        D* dp = static_cast<D*>(dst.raw_data());
        const int64_t n = src.numel();
#pragma omp parallel for schedule(static) if (n > kParallelCopyElements)
        for (int64_t i = 0; i < n; ++i) dp[i] = from_compute<D>(to_compute(sp[i]));
      });
    });
    return;
  }
  const char* s = static_cast<const char*>(src.storage()->data());
  char* d = static_cast<char*>(dst.storage()->data());
  dispatch_all(src.dtype(), "copy", [&]<typename S>() {
    dispatch_all(dst.dtype(), "copy", [&]<typename D>() {
      const S* sp = reinterpret_cast<const S*>(s) + src.offset();
      D* dp = reinterpret_cast<D*>(d) + dst.offset();
      const bool to_bool = dst.dtype() == DType::boolean;
      cpu::for_each_row<2>(src.shape(), {&src.strides(), &dst.strides()},
                           [&](int64_t n, const std::array<int64_t, 2>& base, const std::array<int64_t, 2>& inner) {
                             const S* a = sp + base[0];
                             D* b = dp + base[1];
                             for (int64_t i = 0; i < n; ++i) {
                               auto v = to_compute(a[i * inner[0]]);
                               if (to_bool) {
                                 b[i * inner[1]] = from_compute<D>(v != decltype(v){} ? 1 : 0);
                               } else {
                                 b[i * inner[1]] = from_compute<D>(v);
                               }
                             }
                           });
    });
  });
}

void CpuBackend::copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t n) const {
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    copy_bytes_parallel(dst, src, n);
    return;
  }
  cuda::backend().copy_bytes(dst, dst_device, src, src_device, n);
}

void CpuBackend::fill(Tensor& dst, double value) const {
  ZT_CHECK(dst.is_contiguous(), "fill", "needs a contiguous tensor, got ", dst.describe());
  dispatch_all(dst.dtype(), "fill", [&]<typename T>() {
    T v = from_compute<T>(static_cast<typename ComputeType<T>::type>(value));
    T* p = static_cast<T*>(dst.raw_data());
    const int64_t n = dst.numel();
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) p[i] = v;
  });
}

void CpuBackend::random_fill(Tensor& dst, RandomKind kind, uint64_t seed, uint64_t offset) const {
  ZT_CHECK(dst.is_contiguous(), "random_fill", "needs a contiguous tensor, got ", dst.describe());
  dispatch_float(dst.dtype(), "random_fill", [&]<typename T>() {
    T* p = static_cast<T*>(dst.raw_data());
    const int64_t n = dst.numel();
#pragma omp parallel for schedule(static) if (n > 16384)
    for (int64_t i = 0; i < n; ++i) {
      uint64_t index = offset + static_cast<uint64_t>(i);
      float v = kind == RandomKind::normal ? rng::normal(seed, index) : rng::uniform(seed, index);
      p[i] = from_compute<T>(v);
    }
  });
}

}  // namespace zt
