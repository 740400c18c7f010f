// Page-locked host memory for host <-> device staging (core/cuda_support.h).
//
// Why: a copy from pageable memory goes through the driver's own pinned bounce buffer in pieces,
// at a fraction of the link's bandwidth; from page-locked memory the copy engine reads the bytes
// directly. Pinning is expensive (it locks pages in the kernel), so only long-lived staging
// buffers come from here, never per-step tensors. Statistics are kept like the CPU allocator's.
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <string>

#include "core/cuda_support.h"
#include "core/error.h"

namespace zt::cuda {

namespace {

class PinnedHostAllocator final : public UncachedAllocator {
 public:
  Device device() const override { return Device::cpu(); }

 protected:
  void* system_allocate(size_t bytes) override {
    void* p = nullptr;
    if (cudaHostAlloc(&p, bytes, cudaHostAllocDefault) != cudaSuccess) {
      (void)cudaGetLastError();
      return nullptr;
    }
    return p;
  }
  void system_free(void* ptr) noexcept override { (void)cudaFreeHost(ptr); }
  std::string out_of_memory_message(size_t bytes) const override {
    return fmt::format("[cuda] cannot allocate {:.2f} GiB of page-locked host memory",
                       static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  }
};

}  // namespace

Allocator& pinned_host_allocator() {
  if (device_count() == 0) return allocator_for(Device::cpu());
  static PinnedHostAllocator instance;  // like allocator_for's: lives until the process exits
  return instance;
}

}  // namespace zt::cuda
