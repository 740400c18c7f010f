// The caching allocator: reuse, splitting and merging, streams, statistics per category, the
// out-of-memory report (with a memory limit, so it runs out deterministically) and empty_cache.
// Each test allocates on its own stream, so blocks cached by other work never interfere.
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "kernels/cuda/caching_allocator.h"
#include "kernels/cuda/runtime.h"

namespace zt {
namespace {

using namespace zt::test;
using cuda::CachingAllocator;

constexpr size_t kMiB = size_t{1} << 20;

class CudaAllocator : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
    alloc_ = &cuda::caching_allocator(0);
    stream_ = std::make_unique<cuda::Stream>(0);
    alloc_->set_memory_limit(0);
    alloc_->empty_cache();
    base_ = alloc_->stats();
  }
  void TearDown() override {
    if (alloc_ == nullptr) return;
    alloc_->set_memory_limit(0);
    alloc_->empty_cache();
  }
  void* get(size_t bytes, MemoryCategory c = MemoryCategory::other) { return alloc_->allocate_on(bytes, c, stream_->get()); }
  void put(void* p, size_t bytes, MemoryCategory c = MemoryCategory::other) { alloc_->deallocate(p, bytes, c); }
  int64_t reserved_since_setup() const { return alloc_->stats().reserved - base_.reserved; }

  CachingAllocator* alloc_ = nullptr;
  std::unique_ptr<cuda::Stream> stream_;
  MemoryStats base_;
};

TEST_F(CudaAllocator, FreedBlockIsReusedOnItsStream) {
  void* p = get(1000);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(alloc_->block_size(p), 1024u);  // rounded to 512 bytes
  put(p, 1000);
  void* q = get(700);  // same rounded size class, same stream: the same memory
  EXPECT_EQ(q, p);
  put(q, 700);
  void* big = get(3 * kMiB);
  put(big, 3 * kMiB);
  void* again = get(3 * kMiB);
  EXPECT_EQ(again, big);
  put(again, 3 * kMiB);
}

TEST_F(CudaAllocator, BlocksAreNotSharedAcrossStreams) {
  cuda::Stream other(0);
  void* p = get(4096);
  put(p, 4096);
  void* q = alloc_->allocate_on(4096, MemoryCategory::other, other.get());
  EXPECT_NE(q, p) << "a block freed on one stream must not go to another";
  alloc_->deallocate(q, 4096, MemoryCategory::other);
}

TEST_F(CudaAllocator, LargeBlocksSplitAndMerge) {
  const int64_t segments = alloc_->segment_count();
  // 2 MiB + 1 byte rounds to 2 MiB + 512 and takes a 20 MiB segment, which is split.
  void* a = get(2 * kMiB + 1);
  EXPECT_EQ(alloc_->block_size(a), 2 * kMiB + 512);
  EXPECT_EQ(reserved_since_setup(), static_cast<int64_t>(CachingAllocator::kLargeSegment));
  EXPECT_EQ(alloc_->segment_count(), segments + 1);
  void* b = get(4 * kMiB);  // best fit: the rest of the same segment, right after a
  EXPECT_EQ(static_cast<char*>(b), static_cast<char*>(a) + 2 * kMiB + 512);
  EXPECT_EQ(alloc_->segment_count(), segments + 1);
  EXPECT_EQ(alloc_->cached_unused_bytes(), CachingAllocator::kLargeSegment - (6 * kMiB + 512));
  put(a, 2 * kMiB + 1);
  put(b, 4 * kMiB);
  // All three pieces merged back: the whole segment is one free block again.
  EXPECT_EQ(alloc_->cached_unused_bytes(), CachingAllocator::kLargeSegment);
  void* whole = get(CachingAllocator::kLargeSegment);
  EXPECT_EQ(whole, a);
  EXPECT_EQ(alloc_->segment_count(), segments + 1);
  put(whole, CachingAllocator::kLargeSegment);
  // A small remainder (under 1 MiB) stays with the block instead of being split off.
  void* c = get(CachingAllocator::kLargeSegment - 512 * 1024);
  EXPECT_EQ(alloc_->block_size(c), CachingAllocator::kLargeSegment);
  put(c, CachingAllocator::kLargeSegment - 512 * 1024);
}

TEST_F(CudaAllocator, SmallBlocksComeFromTwoMiBSegments) {
  std::vector<void*> ptrs;
  for (int i = 0; i < 4; ++i) ptrs.push_back(get(100 * 1024));
  EXPECT_EQ(reserved_since_setup(), static_cast<int64_t>(CachingAllocator::kSmallSegment));
  for (int i = 1; i < 4; ++i) EXPECT_EQ(static_cast<char*>(ptrs[static_cast<size_t>(i)]), static_cast<char*>(ptrs[0]) + i * 100 * 1024);
  for (void* p : ptrs) put(p, 100 * 1024);
  EXPECT_EQ(alloc_->cached_unused_bytes(), CachingAllocator::kSmallSegment);
}

TEST_F(CudaAllocator, StatisticsPerCategory) {
  void* params = get(3 * kMiB, MemoryCategory::parameters);
  void* acts = get(5 * kMiB, MemoryCategory::activations);
  void* acts2 = get(1000, MemoryCategory::activations);
  MemoryStats s = alloc_->stats();
  EXPECT_EQ(s[MemoryCategory::parameters].current - base_[MemoryCategory::parameters].current, int64_t(3 * kMiB));
  EXPECT_EQ(s[MemoryCategory::activations].current - base_[MemoryCategory::activations].current, int64_t(5 * kMiB + 1000));
  EXPECT_EQ(s[MemoryCategory::activations].count - base_[MemoryCategory::activations].count, 2);
  EXPECT_EQ(s.total.current - base_.total.current, int64_t(8 * kMiB + 1000));
  put(acts, 5 * kMiB, MemoryCategory::activations);
  s = alloc_->stats();
  EXPECT_EQ(s[MemoryCategory::activations].current - base_[MemoryCategory::activations].current, 1000);
  EXPECT_GE(s[MemoryCategory::activations].peak, int64_t(5 * kMiB + 1000));
  alloc_->reset_peak_stats();
  EXPECT_EQ(alloc_->stats()[MemoryCategory::activations].peak, alloc_->stats()[MemoryCategory::activations].current);
  const std::string summary = alloc_->memory_summary();
  for (const char* part : {"cuda:0", "parameters", "activations", "reserved"})
    EXPECT_NE(summary.find(part), std::string::npos) << summary;
  put(params, 3 * kMiB, MemoryCategory::parameters);
  put(acts2, 1000, MemoryCategory::activations);
  EXPECT_EQ(alloc_->stats().total.current, base_.total.current);
  // Tensors are counted under the category they were made with.
  {
    Tensor g = empty({1024}, DType::f32, gpu_device(), MemoryCategory::gradients);
    EXPECT_EQ(alloc_->stats()[MemoryCategory::gradients].current - base_[MemoryCategory::gradients].current, 4096);
  }
  EXPECT_EQ(alloc_->stats()[MemoryCategory::gradients].current, base_[MemoryCategory::gradients].current);
  EXPECT_EQ(get(0), nullptr);  // nothing to allocate, nothing counted
}

TEST_F(CudaAllocator, OutOfMemoryReportsWhatIsWhere) {
  alloc_->set_memory_limit(static_cast<size_t>(base_.reserved) + 64 * kMiB);
  void* params = get(40 * kMiB, MemoryCategory::parameters);
  try {
    get(40 * kMiB, MemoryCategory::activations);
    FAIL() << "expected an out-of-memory error";
  } catch (const OutOfMemoryError& e) {
    const std::string msg = e.what();
    for (const char* part : {"CUDA out of memory: tried to allocate 40.00 MiB on cuda:0 (", "GiB total",
                             "limited to", "allocated by zerotrain: parameters 40.0", "reserved but unused",
                             "free)"})
      EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
    EXPECT_EQ(msg.find("activations"), std::string::npos) << "empty categories are left out: " << msg;
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  put(params, 40 * kMiB, MemoryCategory::parameters);
}

TEST_F(CudaAllocator, CachedSegmentsAreReleasedBeforeGivingUp) {
  alloc_->set_memory_limit(static_cast<size_t>(base_.reserved) + 64 * kMiB);
  void* a = get(40 * kMiB);
  put(a, 40 * kMiB);  // cached, 40 MiB reserved
  void* b = get(50 * kMiB);  // a new 50 MiB segment fits only once the cached one is freed
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(reserved_since_setup(), static_cast<int64_t>(50 * kMiB));
  put(b, 50 * kMiB);
}

TEST_F(CudaAllocator, EmptyCacheReturnsUnusedSegments) {
  void* a = get(30 * kMiB);
  void* b = get(100);
  void* c = get(200);
  put(a, 30 * kMiB);
  put(b, 100);
  EXPECT_GT(reserved_since_setup(), int64_t(30 * kMiB));
  alloc_->empty_cache();
  // c keeps its small segment; the large one went back.
  EXPECT_EQ(reserved_since_setup(), static_cast<int64_t>(CachingAllocator::kSmallSegment));
  put(c, 200);
  alloc_->empty_cache();
  EXPECT_EQ(reserved_since_setup(), 0);
  EXPECT_EQ(alloc_->cached_unused_bytes(), 0u);
}

TEST_F(CudaAllocator, BadLimits) {
  expect_error([&] { alloc_->set_memory_fraction(0.0); }, {"[cuda.allocator]", "(0, 1]"});
  expect_error([&] { alloc_->set_memory_fraction(1.5); }, {"memory fraction"});
  alloc_->set_memory_fraction(0.5);
  EXPECT_GT(alloc_->memory_limit(), 0u);
}

}  // namespace
}  // namespace zt

namespace zt::test {
namespace {

// The page-locked host allocator (offload's staging buffers): host memory the GPU copies from and
// to, counted by category like any allocator, and a byte-exact round trip through the device.
TEST(PinnedHostAllocator, CountsItsBytesAndRoundTripsThroughTheDevice) {
  ZT_REQUIRE_GPU();
  Allocator& pinned = cuda::pinned_host_allocator();
  ASSERT_EQ(pinned.device(), Device::cpu());
  ASSERT_NE(&pinned, &allocator_for(Device::cpu())) << "a GPU is usable: the allocator must pin";
  const int64_t before = pinned.stats()[MemoryCategory::communication].current;
  {
    const int64_t n = 1 << 20;
    auto storage = std::make_shared<Storage>(static_cast<size_t>(n) * 4, pinned, MemoryCategory::communication);
    EXPECT_EQ(pinned.stats()[MemoryCategory::communication].current, before + n * 4);
    cudaPointerAttributes attributes{};
    ASSERT_EQ(cudaPointerGetAttributes(&attributes, storage->data()), cudaSuccess);
    EXPECT_EQ(attributes.type, cudaMemoryTypeHost) << "page-locked host memory";
    auto* host = static_cast<float*>(storage->data());
    for (int64_t i = 0; i < n; ++i) host[i] = static_cast<float>(rng::normal(7, static_cast<uint64_t>(i)));
    Tensor device = empty({n}, DType::f32, gpu_device());
    gpu().copy_bytes(device.raw_data(), gpu_device(), host, Device::cpu(), static_cast<size_t>(n) * 4);
    std::vector<float> back(static_cast<size_t>(n));
    gpu().copy_bytes(back.data(), Device::cpu(), device.raw_data(), gpu_device(), static_cast<size_t>(n) * 4);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(back[static_cast<size_t>(i)], host[i]) << "element " << i;
  }
  EXPECT_EQ(pinned.stats()[MemoryCategory::communication].current, before);
}

}  // namespace
}  // namespace zt::test
