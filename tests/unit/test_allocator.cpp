// Memory statistics per category: current, peak and count move with allocations and frees,
// MemoryCategoryScope tags allocations on this thread, explicit categories win over the scope,
// views allocate nothing, and external storage is not counted.
#include <gtest/gtest.h>

#include <cstdint>
#include <thread>

#include "core/allocator.h"
#include "core/ops.h"
#include "gradcheck.h"

namespace zt::testing {
namespace {

CategoryStats stats_of(MemoryCategory c) { return allocator_for(Device::cpu()).stats()[c]; }

TEST(Allocator, OwnInstanceCountsPerCategory) {
  CpuAllocator alloc;
  void* a = alloc.allocate(1000, MemoryCategory::parameters);
  void* b = alloc.allocate(24, MemoryCategory::gradients);
  void* c = alloc.allocate(500, MemoryCategory::parameters);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % 64, 0u);
  MemoryStats s = alloc.stats();
  EXPECT_EQ(s[MemoryCategory::parameters].current, 1500);
  EXPECT_EQ(s[MemoryCategory::parameters].count, 2);
  EXPECT_EQ(s[MemoryCategory::gradients].current, 24);
  EXPECT_EQ(s[MemoryCategory::optimizer].current, 0);
  EXPECT_EQ(s.total.current, 1524);
  EXPECT_EQ(s.total.count, 3);
  alloc.deallocate(a, 1000, MemoryCategory::parameters);
  s = alloc.stats();
  EXPECT_EQ(s[MemoryCategory::parameters].current, 500);
  EXPECT_EQ(s[MemoryCategory::parameters].peak, 1500);
  EXPECT_EQ(s[MemoryCategory::parameters].count, 1);
  EXPECT_EQ(s.total.peak, 1524);
  alloc.reset_peak_stats();
  s = alloc.stats();
  EXPECT_EQ(s[MemoryCategory::parameters].peak, 500);
  EXPECT_EQ(s.total.peak, 524);
  alloc.deallocate(b, 24, MemoryCategory::gradients);
  alloc.deallocate(c, 500, MemoryCategory::parameters);
  s = alloc.stats();
  EXPECT_EQ(s.total.current, 0);
  EXPECT_EQ(s.total.count, 0);
  EXPECT_EQ(s[MemoryCategory::gradients].peak, 24);
  std::string summary = alloc.memory_summary();
  for (const char* name : {"parameters", "gradients", "optimizer", "activations", "communication", "other", "total"})
    EXPECT_NE(summary.find(name), std::string::npos) << name;
}

TEST(Allocator, TensorsFollowScopesAndExplicitCategories) {
  const CategoryStats act0 = stats_of(MemoryCategory::activations);
  const CategoryStats opt0 = stats_of(MemoryCategory::optimizer);
  const CategoryStats other0 = stats_of(MemoryCategory::other);
  EXPECT_EQ(MemoryCategoryScope::current(), MemoryCategory::other);
  {
    MemoryCategoryScope scope(MemoryCategory::activations);
    Tensor a = empty({10, 10});  // 400 bytes
    EXPECT_EQ(a.storage()->category(), MemoryCategory::activations);
    EXPECT_EQ(stats_of(MemoryCategory::activations).current - act0.current, 400);
    EXPECT_EQ(stats_of(MemoryCategory::activations).count - act0.count, 1);
    {
      MemoryCategoryScope inner(MemoryCategory::optimizer);
      Tensor m = zeros({5}, DType::f64);  // 40 bytes
      EXPECT_EQ(stats_of(MemoryCategory::optimizer).current - opt0.current, 40);
      // Explicit categories win over the scope.
      Tensor explicit_act = empty({2}, DType::f32, Device::cpu(), MemoryCategory::activations);
      EXPECT_EQ(stats_of(MemoryCategory::activations).current - act0.current, 408);
      EXPECT_EQ(stats_of(MemoryCategory::optimizer).current - opt0.current, 40);
    }
    EXPECT_EQ(MemoryCategoryScope::current(), MemoryCategory::activations);
    EXPECT_EQ(stats_of(MemoryCategory::optimizer).current, opt0.current);  // freed on scope exit
    EXPECT_EQ(stats_of(MemoryCategory::optimizer).count, opt0.count);
    // Views allocate nothing.
    Tensor v = transpose(narrow(a, 0, 2, 5), 0, 1);
    EXPECT_EQ(stats_of(MemoryCategory::activations).count - act0.count, 1);
    // Another thread has its own scope (the default).
    MemoryCategory seen = MemoryCategory::parameters;
    std::thread([&] { seen = MemoryCategoryScope::current(); }).join();
    EXPECT_EQ(seen, MemoryCategory::other);
  }
  EXPECT_EQ(MemoryCategoryScope::current(), MemoryCategory::other);
  const CategoryStats act1 = stats_of(MemoryCategory::activations);
  EXPECT_EQ(act1.current, act0.current);
  EXPECT_EQ(act1.count, act0.count);
  EXPECT_GE(act1.peak - act0.current, 408);
  EXPECT_EQ(stats_of(MemoryCategory::other).current, other0.current);
}

TEST(Allocator, PeakResetAndGradientCategory) {
  Allocator& cpu = allocator_for(Device::cpu());
  cpu.reset_peak_stats();
  const int64_t base = cpu.stats().total.current;
  {
    Tensor big = empty({1000});  // 4000 bytes
    EXPECT_GE(cpu.stats().total.peak, base + 4000);
  }
  EXPECT_EQ(cpu.stats().total.current, base);
  EXPECT_GE(cpu.stats().total.peak, base + 4000);
  cpu.reset_peak_stats();
  EXPECT_EQ(cpu.stats().total.peak, base);
  // A gradient summed by the engine (second backward) is allocated in the gradients category.
  Tensor w = randn({16}, 1).set_requires_grad(true);
  backward(sum(mul(w, w)));
  backward(sum(mul(w, w)));
  EXPECT_EQ(w.grad().storage()->category(), MemoryCategory::gradients);
}

TEST(Allocator, ExternalStorageIsNotCounted) {
  const int64_t before = allocator_for(Device::cpu()).stats().total.count;
  std::vector<float> buffer(8, 1.5f);
  auto storage = std::make_shared<Storage>(buffer.data(), buffer.size() * sizeof(float), Device::cpu());
  EXPECT_EQ(allocator_for(Device::cpu()).stats().total.count, before);
  storage.reset();
  EXPECT_EQ(allocator_for(Device::cpu()).stats().total.count, before);
  EXPECT_EQ(buffer[3], 1.5f);
}

}  // namespace
}  // namespace zt::testing
