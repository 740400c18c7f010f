// The stream-ordered caching allocator of one GPU.
//
// Contract (on top of core/allocator.h's): cudaMalloc and cudaFree synchronise the device, so
// freed blocks are kept and handed out again. A block belongs to the stream that was current when
// it was allocated: kernels on that stream use it in order, so once its owner frees it (on the
// host, possibly while kernels that use it are still queued) it may be handed out again at once
// for that same stream, whose later work runs after the earlier uses. It is never handed to
// another stream; using a tensor on a second stream (communication) needs that stream to be
// ordered before the owner frees it (an event, or a later record_stream(block, stream), which is
// not written yet: for now, comm code must keep such tensors alive until its stream is done).
//
// Sizes are rounded up to 512 bytes. Requests up to 1 MiB come from the small pool, carved out of
// 2 MiB segments; larger ones from the large pool, best fit (smallest block that is large enough,
// lowest address among equals), splitting a block when the rest is still worth keeping (more than
// 1 MiB for large blocks, at least 512 bytes for small ones) and merging freed blocks with free
// neighbours of the same segment. When cudaMalloc fails (or a set limit would be passed), every
// cached segment that is wholly unused is returned with cudaFree and the request is tried once
// more; if that fails too, OutOfMemoryError says how much was asked, the card's capacity, what
// zerotrain has allocated by category, what it holds unused, and what the card has free.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>

#include "core/allocator.h"

namespace zt::cuda {

class CachingAllocator final : public Allocator {
 public:
  static constexpr size_t kRound = 512;               // every block size is a multiple of this
  static constexpr size_t kSmallLimit = 1 << 20;      // requests up to this use the small pool
  static constexpr size_t kSmallSegment = 2 << 20;    // segment size of the small pool
  static constexpr size_t kLargeSegment = 20 << 20;   // segment for large requests under kMidLimit
  static constexpr size_t kMidLimit = 10 << 20;
  static constexpr size_t kLargeRound = 2 << 20;      // larger requests get a segment rounded to this

  // current_stream: the stream an allocate() call belongs to (the device's current stream).
  CachingAllocator(int device, std::function<cudaStream_t()> current_stream);
  ~CachingAllocator() override;  // returns cached segments; live blocks are left to the process exit

  void* allocate(size_t bytes, MemoryCategory category) override;
  void* allocate_on(size_t bytes, MemoryCategory category, cudaStream_t stream);
  void deallocate(void* ptr, size_t bytes, MemoryCategory category) noexcept override;
  Device device() const override { return Device::cuda(device_); }
  MemoryStats stats() const override;
  void reset_peak_stats() override;
  void empty_cache() override;

  // A cap on the bytes this allocator reserves from the card (0: none), so that tests and users
  // can run out of memory deterministically below the card's capacity.
  void set_memory_limit(size_t bytes);
  void set_memory_fraction(double fraction);  // of the card's total memory, in (0, 1]
  size_t memory_limit() const;

  // Introspection for tests and reports.
  size_t cached_unused_bytes() const;  // reserved minus the sizes of live blocks
  int64_t segment_count() const;
  size_t block_size(void* ptr) const;  // rounded size of a live block (0 when ptr is not one)

 private:
  struct Block;
  struct BlockOrder {
    bool operator()(const Block* a, const Block* b) const;
  };
  using Pool = std::set<Block*, BlockOrder>;

  static size_t round_size(size_t bytes);
  static size_t segment_size_for(size_t rounded);
  Block* find_free_block(Pool& pool, cudaStream_t stream, size_t size);
  Block* split_block(Block* block, size_t size, Pool& pool);
  void free_block(Block* block);
  void* try_cuda_malloc(size_t bytes);
  void release_cached_segments();
  std::string out_of_memory_message(size_t requested) const;

  const int device_;
  const std::function<cudaStream_t()> current_stream_;
  mutable std::mutex mutex_;
  Pool small_pool_, large_pool_;
  std::unordered_map<void*, Block*> live_;
  MemoryStats stats_;
  size_t live_block_bytes_ = 0;  // sum of the rounded sizes of live blocks
  int64_t segments_ = 0;
  size_t limit_ = 0;
  size_t total_memory_ = 0;  // the card's capacity
};

// The caching allocator of cuda:device (the one cuda::allocator(device) returns).
CachingAllocator& caching_allocator(int device);

}  // namespace zt::cuda
