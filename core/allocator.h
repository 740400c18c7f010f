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

// An allocator that holds nothing beyond its live blocks (reserved == current): the statistics for
// the CPU allocator and the CUDA backend's page-locked host allocator; subclasses make the calls.
class UncachedAllocator : public Allocator {
 public:
  void* allocate(size_t bytes, MemoryCategory category) final;
  void deallocate(void* ptr, size_t bytes, MemoryCategory category) noexcept final;
  MemoryStats stats() const final;
  void reset_peak_stats() final;

 protected:
  // The system's allocation of at least one byte, or null when it has none to give.
  virtual void* system_allocate(size_t bytes) = 0;
  virtual void system_free(void* ptr) noexcept = 0;
  // What allocate() throws when system_allocate gave null (a report follows it).
  virtual std::string out_of_memory_message(size_t bytes) const = 0;

 private:
  mutable std::mutex mutex_;
  MemoryStats stats_;
};

// Host memory, 64-byte aligned (vector loads, and no false sharing between OpenMP threads).
class CpuAllocator final : public UncachedAllocator {
 public:
  Device device() const override { return Device::cpu(); }

 protected:
  void* system_allocate(size_t bytes) override;
  void system_free(void* ptr) noexcept override;
  std::string out_of_memory_message(size_t bytes) const override;
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
