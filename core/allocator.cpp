#include "core/allocator.h"

#include <algorithm>
#include <cstdlib>
#include <fmt/format.h>

#include "core/cuda_support.h"
#include "core/error.h"

namespace zt {

const char* memory_category_name(MemoryCategory c) {
  switch (c) {
    case MemoryCategory::parameters: return "parameters";
    case MemoryCategory::gradients: return "gradients";
    case MemoryCategory::optimizer: return "optimizer";
    case MemoryCategory::activations: return "activations";
    case MemoryCategory::communication: return "communication";
    case MemoryCategory::other: return "other";
  }
  return "?";
}

void MemoryStats::on_allocate(MemoryCategory c, int64_t bytes) {
  for (CategoryStats* s : {&by_category[static_cast<int>(c)], &total}) {
    s->current += bytes;
    s->count += 1;
    s->peak = std::max(s->peak, s->current);
  }
}

void MemoryStats::on_free(MemoryCategory c, int64_t bytes) {
  for (CategoryStats* s : {&by_category[static_cast<int>(c)], &total}) {
    s->current -= bytes;
    s->count -= 1;
  }
}

void MemoryStats::reset_peaks() {
  for (auto& s : by_category) s.peak = s.current;
  total.peak = total.current;
  peak_reserved = reserved;
}

std::string Allocator::memory_summary() const {
  MemoryStats s = stats();
  constexpr double kMiB = 1024.0 * 1024.0;
  std::string out = fmt::format("memory on {}: {:>14} {:>12} {:>12} {:>8}\n", device().str(), "category",
                                "current MiB", "peak MiB", "blocks");
  for (int i = 0; i < kNumMemoryCategories; ++i) {
    const CategoryStats& c = s.by_category[i];
    out += fmt::format("{:>29} {:>12.1f} {:>12.1f} {:>8}\n", memory_category_name(static_cast<MemoryCategory>(i)),
                       c.current / kMiB, c.peak / kMiB, c.count);
  }
  out += fmt::format("{:>29} {:>12.1f} {:>12.1f} {:>8}\n", "total", s.total.current / kMiB, s.total.peak / kMiB,
                     s.total.count);
  out += fmt::format("{:>29} {:>12.1f} {:>12.1f}\n", "reserved", s.reserved / kMiB, s.peak_reserved / kMiB);
  return out;
}

void* UncachedAllocator::allocate(size_t bytes, MemoryCategory category) {
  void* p = system_allocate(std::max<size_t>(bytes, 1));
  if (p == nullptr) throw OutOfMemoryError(out_of_memory_message(bytes) + "\n" + memory_summary());
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.on_allocate(category, static_cast<int64_t>(bytes));
  stats_.reserved = stats_.total.current;
  stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.reserved);
  return p;
}

void UncachedAllocator::deallocate(void* ptr, size_t bytes, MemoryCategory category) noexcept {
  if (ptr == nullptr) return;
  system_free(ptr);
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.on_free(category, static_cast<int64_t>(bytes));
  stats_.reserved = stats_.total.current;
}

MemoryStats UncachedAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void UncachedAllocator::reset_peak_stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.reset_peaks();
}

void* CpuAllocator::system_allocate(size_t bytes) { return std::aligned_alloc(64, (bytes + 63) / 64 * 64); }

void CpuAllocator::system_free(void* ptr) noexcept { std::free(ptr); }

std::string CpuAllocator::out_of_memory_message(size_t bytes) const {
  return fmt::format("[cpu] out of memory: tried to allocate {:.2f} GiB of host memory",
                     static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
}

Allocator& allocator_for(Device device) {
  if (device.is_cpu()) {
    static CpuAllocator cpu;  // process lifetime: storages point at it until exit
    return cpu;
  }
  return cuda::allocator(device.index);
}

namespace {
thread_local MemoryCategory current_category = MemoryCategory::other;
}

MemoryCategoryScope::MemoryCategoryScope(MemoryCategory category) : previous_(current_category) {
  current_category = category;
}
MemoryCategoryScope::~MemoryCategoryScope() { current_category = previous_; }
MemoryCategory MemoryCategoryScope::current() { return current_category; }

}  // namespace zt
