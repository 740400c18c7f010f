// The stream-ordered caching allocator: see the contract in caching_allocator.h.
#include "kernels/cuda/caching_allocator.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "core/error.h"
#include "kernels/cuda/runtime.h"

namespace zt::cuda {

// A contiguous piece of one segment (one cudaMalloc). Free blocks sit in their pool; live ones in live_.
struct CachingAllocator::Block {
  char* ptr = nullptr;         // start address
  size_t size = 0;             // bytes, a multiple of kRound
  cudaStream_t stream{};       // the stream whose order protects this memory (the allocating stream)
  bool small = false;          // which pool it returns to; small and large blocks never merge
  bool live = false;           // handed out and not yet freed
  size_t requested = 0;        // bytes asked for while live (the statistics count these)
  MemoryCategory category = MemoryCategory::other;  // while live
  Block* prev = nullptr;       // neighbour just below in the same segment, null at the segment start
  Block* next = nullptr;       // neighbour just above, null at the segment end
  bool whole_segment() const { return prev == nullptr && next == nullptr; }
};

// Pools are ordered by (stream, size, address): lower_bound on (stream, size) finds the best fit.
bool CachingAllocator::BlockOrder::operator()(const Block* a, const Block* b) const {
  if (a->stream != b->stream) return reinterpret_cast<uintptr_t>(a->stream) < reinterpret_cast<uintptr_t>(b->stream);
  if (a->size != b->size) return a->size < b->size;
  return reinterpret_cast<uintptr_t>(a->ptr) < reinterpret_cast<uintptr_t>(b->ptr);
}

CachingAllocator::CachingAllocator(int device, std::function<cudaStream_t()> current_stream)
    : device_(device), current_stream_(std::move(current_stream)) {
  DeviceGuard guard(device);
  size_t free_bytes = 0;
  ZT_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_memory_));
}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (Pool* pool : {&small_pool_, &large_pool_}) {
    for (Block* b : *pool) {
      if (b->whole_segment()) (void)cudaFree(b->ptr);
      delete b;
    }
    pool->clear();
  }
  for (auto& [ptr, b] : live_) delete b;  // their memory goes with the process
  live_.clear();
}

size_t CachingAllocator::round_size(size_t bytes) { return (std::max<size_t>(bytes, 1) + kRound - 1) / kRound * kRound; }

size_t CachingAllocator::segment_size_for(size_t rounded) {
  if (rounded <= kSmallLimit) return kSmallSegment;
  if (rounded < kMidLimit) return kLargeSegment;
  return (rounded + kLargeRound - 1) / kLargeRound * kLargeRound;
}

void* CachingAllocator::allocate(size_t bytes, MemoryCategory category) {
  return allocate_on(bytes, category, current_stream_());
}

CachingAllocator::Block* CachingAllocator::find_free_block(Pool& pool, cudaStream_t stream, size_t size) {
  Block key;
  key.stream = stream;
  key.size = size;
  key.ptr = nullptr;
  auto it = pool.lower_bound(&key);
  if (it == pool.end() || (*it)->stream != stream) return nullptr;
  Block* b = *it;
  pool.erase(it);
  return b;
}

// Cuts `size` bytes off the front of a free block (not in any pool) when the rest is worth keeping;
// the rest goes back to the pool. Returns the block to hand out.
CachingAllocator::Block* CachingAllocator::split_block(Block* block, size_t size, Pool& pool) {
  const size_t rest = block->size - size;
  const bool worth = block->small ? rest >= kRound : rest > kSmallLimit;
  if (!worth) return block;
  auto* tail = new Block;
  tail->ptr = block->ptr + size;
  tail->size = rest;
  tail->stream = block->stream;
  tail->small = block->small;
  tail->prev = block;
  tail->next = block->next;
  if (block->next != nullptr) block->next->prev = tail;
  block->next = tail;
  block->size = size;
  pool.insert(tail);
  return block;
}

void* CachingAllocator::try_cuda_malloc(size_t bytes) {
  if (limit_ != 0 && static_cast<size_t>(stats_.reserved) + bytes > limit_) return nullptr;
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // an allocation failure is not sticky: clear it for later checks
    if (err != cudaErrorMemoryAllocation) throw_cuda_error(err, "cudaMalloc", __FILE__, __LINE__);
    return nullptr;
  }
  return p;
}

// Returns every wholly unused segment to the card. cudaFree waits for the device, so work still
// queued on a segment's stream completes first.
void CachingAllocator::release_cached_segments() {
  for (Pool* pool : {&small_pool_, &large_pool_}) {
    for (auto it = pool->begin(); it != pool->end();) {
      Block* b = *it;
      if (!b->whole_segment()) {
        ++it;
        continue;
      }
      it = pool->erase(it);
      (void)cudaFree(b->ptr);
      stats_.reserved -= static_cast<int64_t>(b->size);
      --segments_;
      delete b;
    }
  }
}

void* CachingAllocator::allocate_on(size_t bytes, MemoryCategory category, cudaStream_t stream) {
  if (bytes == 0) return nullptr;  // Storage never frees a null pointer
  const size_t size = round_size(bytes);
  const bool small = size <= kSmallLimit;
  DeviceGuard guard(device_);
  std::lock_guard<std::mutex> lock(mutex_);
  Pool& pool = small ? small_pool_ : large_pool_;
  Block* block = find_free_block(pool, stream, size);
  if (block == nullptr) {
    const size_t segment = segment_size_for(size);
    void* p = try_cuda_malloc(segment);
    if (p == nullptr) {
      release_cached_segments();
      p = try_cuda_malloc(segment);
    }
    if (p == nullptr) throw OutOfMemoryError(out_of_memory_message(bytes));
    block = new Block;
    block->ptr = static_cast<char*>(p);
    block->size = segment;
    block->stream = stream;
    block->small = small;
    stats_.reserved += static_cast<int64_t>(segment);
    stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.reserved);
    ++segments_;
  }
  block = split_block(block, size, pool);
  block->live = true;
  block->requested = bytes;
  block->category = category;
  live_.emplace(block->ptr, block);
  live_block_bytes_ += block->size;
  stats_.on_allocate(category, static_cast<int64_t>(bytes));
  return block->ptr;
}

void CachingAllocator::deallocate(void* ptr, size_t /*bytes*/, MemoryCategory /*category*/) noexcept {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(ptr);
  if (it == live_.end()) {
    // A bug in the caller (double free, foreign pointer); a destructor path, so report and go on.
    std::fprintf(stderr, "[cuda.allocator] cuda:%d: free of %p, which this allocator did not hand out\n", device_,
                 ptr);
    return;
  }
  Block* block = it->second;
  live_.erase(it);
  // The block's own record is the truth for the statistics (the caller's copy could disagree).
  stats_.on_free(block->category, static_cast<int64_t>(block->requested));
  live_block_bytes_ -= block->size;
  free_block(block);
}

// Marks a block free, merges it with free neighbours of its segment, and returns it to its pool.
void CachingAllocator::free_block(Block* block) {
  Pool& pool = block->small ? small_pool_ : large_pool_;
  block->live = false;
  block->requested = 0;
  if (Block* prev = block->prev; prev != nullptr && !prev->live) {
    pool.erase(prev);  // before its size changes: the pool is ordered by size
    prev->size += block->size;
    prev->next = block->next;
    if (block->next != nullptr) block->next->prev = prev;
    delete block;
    block = prev;
  }
  if (Block* next = block->next; next != nullptr && !next->live) {
    pool.erase(next);
    block->size += next->size;
    block->next = next->next;
    if (next->next != nullptr) next->next->prev = block;
    delete next;
  }
  pool.insert(block);
}

MemoryStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingAllocator::reset_peak_stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.reset_peaks();
}

void CachingAllocator::empty_cache() {
  DeviceGuard guard(device_);
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached_segments();
}

void CachingAllocator::set_memory_limit(size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  limit_ = bytes;
}

void CachingAllocator::set_memory_fraction(double fraction) {
  ZT_CHECK(fraction > 0.0 && fraction <= 1.0, "cuda.allocator", "memory fraction must be in (0, 1], got ", fraction);
  set_memory_limit(static_cast<size_t>(fraction * static_cast<double>(total_memory_)));
}

size_t CachingAllocator::memory_limit() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return limit_;
}

size_t CachingAllocator::cached_unused_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<size_t>(stats_.reserved) - live_block_bytes_;
}

int64_t CachingAllocator::segment_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return segments_;
}

size_t CachingAllocator::block_size(void* ptr) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(ptr);
  return it == live_.end() ? 0 : it->second->size;
}

namespace {

// GiB above 1 GiB, MiB below, so small test limits still read well; category figures use the
// unit of the allocated total they add up to.
struct Unit {
  double scale;
  const char* name;
};
Unit unit_for(double bytes) {
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  return bytes >= kGiB ? Unit{kGiB, "GiB"} : Unit{1024.0 * 1024.0, "MiB"};
}
std::string with_unit(double bytes, int digits) {
  Unit u = unit_for(bytes);
  return fmt::format("{:.{}f} {}", bytes / u.scale, digits, u.name);
}

}  // namespace

// "CUDA out of memory: tried to allocate 2.10 GiB on cuda:0 (79.1 GiB total; 71.3 GiB allocated by
// zerotrain: parameters 12.0, activations 55.2, other 4.1; 1.2 GiB reserved but unused; 0.4 GiB
// free)", categories with nothing allocated left out; a set limit is named after the total.
std::string CachingAllocator::out_of_memory_message(size_t requested) const {
  size_t free_bytes = 0, total_bytes = total_memory_;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) (void)cudaGetLastError();
  const double allocated = static_cast<double>(stats_.total.current);
  const Unit alloc_unit = unit_for(allocated);
  std::string categories;
  for (int i = 0; i < kNumMemoryCategories; ++i) {
    const int64_t c = stats_.by_category[static_cast<size_t>(i)].current;
    if (c == 0) continue;
    categories += fmt::format("{}{} {:.1f}", categories.empty() ? "" : ", ",
                              memory_category_name(static_cast<MemoryCategory>(i)), c / alloc_unit.scale);
  }
  std::string total = with_unit(static_cast<double>(total_bytes), 1) + " total";
  if (limit_ != 0) total += fmt::format(", limited to {} for zerotrain", with_unit(static_cast<double>(limit_), 1));
  const double unused = static_cast<double>(stats_.reserved) - static_cast<double>(live_block_bytes_);
  return fmt::format("CUDA out of memory: tried to allocate {} on cuda:{} ({}; {:.1f} {} allocated by zerotrain{}{}; "
                     "{} reserved but unused; {} free)",
                     with_unit(static_cast<double>(requested), 2), device_, total, allocated / alloc_unit.scale,
                     alloc_unit.name, categories.empty() ? "" : ": ", categories, with_unit(unused, 1),
                     with_unit(static_cast<double>(free_bytes), 1));
}

CachingAllocator& caching_allocator(int device) { return DeviceContext::get(device).allocator(); }

}  // namespace zt::cuda
