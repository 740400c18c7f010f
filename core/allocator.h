// Allocators and memory statistics.
//
// Contract: an Allocator hands out device (or host) memory for Storage. Every allocation is tagged
// with a MemoryCategory so that users see where their memory goes (parameters, gradients, optimizer
// states, activations, communication buffers, other). Statistics are exact byte counts of live
// allocations (current), their high-water mark (peak), and for caching allocators the bytes held
// from the system (reserved). allocate() throws OutOfMemoryError with a report; deallocate() never
// throws. Allocators are thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

#include "core/device.h"

namespace zt {

enum class MemoryCategory : uint8_t { parameters, gradients, optimizer, activations, communication, other };
inline constexpr int kNumMemoryCategories = 6;
const char* memory_category_name(MemoryCategory c);

struct CategoryStats {
  int64_t current = 0;   // bytes in live allocations
  int64_t peak = 0;      // high-water mark of current
  int64_t count = 0;     // live allocations
};

struct MemoryStats {
  std::array<CategoryStats, kNumMemoryCategories> by_category{};
  CategoryStats total{};
  int64_t reserved = 0;       // bytes held from the system (== total.current for non-caching allocators)
  int64_t peak_reserved = 0;

  const CategoryStats& operator[](MemoryCategory c) const { return by_category[static_cast<int>(c)]; }
  void on_allocate(MemoryCategory c, int64_t bytes);
  void on_free(MemoryCategory c, int64_t bytes);
  void reset_peaks();
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes, MemoryCategory category) = 0;
  virtual void deallocate(void* ptr, size_t bytes, MemoryCategory category) noexcept = 0;
  virtual Device device() const = 0;
  virtual MemoryStats stats() const = 0;
  virtual void reset_peak_stats() = 0;
  // Release cached but unused memory back to the system (no-op for non-caching allocators).
  virtual void empty_cache() {}
  // A table of current/peak bytes per category, for logs and out-of-memory reports.
  std::string memory_summary() const;
};

// Host memory, 64-byte aligned (vector loads, and no false sharing between OpenMP threads).
class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes, MemoryCategory category) override;
  void deallocate(void* ptr, size_t bytes, MemoryCategory category) noexcept override;
  Device device() const override { return Device::cpu(); }
  MemoryStats stats() const override;
  void reset_peak_stats() override;

 private:
  mutable std::mutex mutex_;
  MemoryStats stats_;
};

// The process's allocator for a device. The CPU one is created on first use; the CUDA ones belong
// to the CUDA backend (one caching allocator per GPU). Tensors keep a pointer to the allocator
// that made their storage, so these live until the process exits.
Allocator& allocator_for(Device device);

// Categorise allocations made on this thread while the scope is alive, for example
//   MemoryCategoryScope scope(MemoryCategory::activations);
// The default is `other`. Explicit categories passed to factory functions win over the scope.
class MemoryCategoryScope {
 public:
  explicit MemoryCategoryScope(MemoryCategory category);
  ~MemoryCategoryScope();
  MemoryCategoryScope(const MemoryCategoryScope&) = delete;
  MemoryCategoryScope& operator=(const MemoryCategoryScope&) = delete;
  static MemoryCategory current();

 private:
  MemoryCategory previous_;
};

}  // namespace zt
