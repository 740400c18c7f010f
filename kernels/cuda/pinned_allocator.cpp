// Page-locked host memory for host <-> device staging (core/cuda_support.h).
//
// Why: a copy from pageable memory goes through the driver's own pinned bounce buffer in pieces,
// at a fraction of the link's bandwidth; from page-locked memory the copy engine reads the bytes
// directly. Pinning is expensive (it locks pages in the kernel), so only long-lived staging
// buffers come from here, never per-step tensors. Statistics are kept like the CPU allocator's.
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <mutex>

#include "core/cuda_support.h"
#include "core/error.h"

namespace zt::cuda {

namespace {

class PinnedHostAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes, MemoryCategory category) override {
    void* p = nullptr;
    if (cudaHostAlloc(&p, std::max<size_t>(bytes, 1), cudaHostAllocDefault) != cudaSuccess) {
      (void)cudaGetLastError();
      throw OutOfMemoryError(fmt::format("[cuda] cannot allocate {:.2f} GiB of page-locked host memory\n{}",
                                         bytes / (1024.0 * 1024.0 * 1024.0), memory_summary()));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.on_allocate(category, static_cast<int64_t>(bytes));
    stats_.reserved = stats_.total.current;
    stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.reserved);
    return p;
  }
  void deallocate(void* ptr, size_t bytes, MemoryCategory category) noexcept override {
    if (ptr == nullptr) return;
    (void)cudaFreeHost(ptr);
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.on_free(category, static_cast<int64_t>(bytes));
    stats_.reserved = stats_.total.current;
  }
  Device device() const override { return Device::cpu(); }
  MemoryStats stats() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }
  void reset_peak_stats() override {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.reset_peaks();
    stats_.peak_reserved = stats_.reserved;
  }

 private:
  mutable std::mutex mutex_;
  MemoryStats stats_;
};

}  // namespace

Allocator& pinned_host_allocator() {
  if (device_count() == 0) return allocator_for(Device::cpu());
  static PinnedHostAllocator instance;  // like allocator_for's: lives until the process exits
  return instance;
}

}  // namespace zt::cuda
