// Copies, casts, fills and random fills.
//
// Why these shapes: a cast between contiguous buffers is the common case (bf16 <-> f32 for mixed
// precision), so it gets a flat kernel; any other layout goes through one strided kernel whose
// index math is 32-bit whenever the tensor allows (64-bit division is several times slower).
// Random fills draw from core/rng.h's Philox with the same (seed, offset + i) counters as the
// CPU, so both give identical numbers; a uniform fill lets one thread use all four words of a
// Philox block, as the CPU's draw of element i uses word i % 4 of block i / 4.
#pragma once

#include "core/rng.h"
#include "kernels/cuda/common.cuh"

namespace zt::cuda {

// The cast of one element, as the CPU's copy: through the arithmetic type, bool as "!= 0".
template <typename S, typename D>
__device__ __forceinline__ D cast_element(S v, bool to_bool) {
  const auto a = to_acc(v);
  if (to_bool) return static_cast<D>(a != decltype(a){} ? 1 : 0);
  return from_acc<D>(a);
}

template <typename S, typename D, int V>
__global__ void cast_contiguous_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n, bool to_bool) {
  map_packs<S, D, V>(src, dst, n, [=](S v) { return cast_element<S, D>(v, to_bool); });
}

// The layout is in units of V elements (see vectorize_inner): each index moves one Pack.
template <typename S, typename D, typename Index, int V>
__global__ void copy_strided_kernel(const S* __restrict__ src, D* __restrict__ dst, StridedIndexer<2, Index> ix,
                                    Index n, bool to_bool) {
  for (Index i = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<Index>(gridDim.x) * blockDim.x) {
    Index off[2];
    ix.offsets(i, off);
    const Pack<S, V> ps = reinterpret_cast<const Pack<S, V>*>(src)[off[0]];
    Pack<D, V> pd;
#pragma unroll
    for (int j = 0; j < V; ++j) pd.v[j] = cast_element<S, D>(ps.v[j], to_bool);
    reinterpret_cast<Pack<D, V>*>(dst)[off[1]] = pd;
  }
}

// A strided copy whose innermost dim is contiguous on both sides (a permute that keeps the last
// dim, a broadcast of a row) moves V elements per index: the layout is rewritten in units of V
// when the inner size, every other stride and both pointers allow it. Returns the V used (1: the
// layout is unchanged).
template <typename S, typename D>
int vectorize_inner(CoalescedLayout<2>& layout, const S* src, D* dst) {
  const int last = layout.ndim - 1;
  if (last < 0 || layout.strides[0][last] != 1 || layout.strides[1][last] != 1) return 1;
  int v = vector_width({{src, sizeof(S)}, {dst, sizeof(D)}});
  auto fits = [&](int w) {
    if (layout.sizes[last] % w != 0) return false;
    for (int d = 0; d < last; ++d)
      if (layout.strides[0][d] % w != 0 || layout.strides[1][d] % w != 0) return false;
    return true;
  };
  while (v > 1 && !fits(v)) v /= 2;
  if (v == 1) return 1;
  layout.sizes[last] /= v;
  for (int d = 0; d < last; ++d) {
    layout.strides[0][d] /= v;
    layout.strides[1][d] /= v;
  }
  return v;
}

template <typename T>
__global__ void fill_kernel(T* __restrict__ dst, T value, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = value;
}

// Element i gets rng::uniform(seed, offset + i). Thread t handles Philox block `first_block + t`,
// i.e. the (up to four) elements whose counters fall in it.
template <typename T>
__global__ void uniform_fill_kernel(T* __restrict__ dst, int64_t n, uint64_t seed, uint64_t offset) {
  const uint64_t first_block = offset >> 2;
  const uint64_t blocks = ((offset + static_cast<uint64_t>(n) + 3) >> 2) - first_block;
  for (uint64_t t = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; t < blocks;
       t += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const uint64_t block = first_block + t;
    const rng::Philox4x32 r = rng::philox(seed, block);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint64_t counter = block * 4 + w;
      if (counter < offset || counter >= offset + static_cast<uint64_t>(n)) continue;
      const float u = static_cast<float>(r.v[w] >> 8) * (1.0f / 16777216.0f);  // == rng::uniform
      dst[counter - offset] = from_acc<T>(u);
    }
  }
}

template <typename T>
__global__ void normal_fill_kernel(T* __restrict__ dst, int64_t n, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = from_acc<T>(rng::normal(seed, offset + static_cast<uint64_t>(i)));
}

// ---- launchers ----

template <typename S, typename D>
void launch_cast_contiguous(const S* src, D* dst, int64_t n, bool to_bool, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_vector_width(vector_width({{src, sizeof(S)}, {dst, sizeof(D)}}), [&]<int V>() {
    cast_contiguous_kernel<S, D, V><<<grid_for(std::max<int64_t>(n / V, 1)), kThreads, 0, stream>>>(src, dst, n, to_bool);
  });
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename S, typename D>
void launch_copy_strided(const S* src, D* dst, CoalescedLayout<2> layout, int64_t n, bool to_bool,
                         cudaStream_t stream) {
  if (n == 0) return;
  const int width = vectorize_inner(layout, src, dst);
  const int64_t packs = n / width;
  dispatch_vector_width(width, [&]<int V>() {
    if (layout.fits_32bit) {
      copy_strided_kernel<S, D, uint32_t, V><<<grid_for(packs), kThreads, 0, stream>>>(
          src, dst, make_indexer<2, uint32_t>(layout), static_cast<uint32_t>(packs), to_bool);
    } else {
      copy_strided_kernel<S, D, int64_t, V><<<grid_for(packs), kThreads, 0, stream>>>(
          src, dst, make_indexer<2, int64_t>(layout), packs, to_bool);
    }
  });
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_fill(T* dst, T value, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  fill_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(dst, value, n);
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_uniform_fill(T* dst, int64_t n, uint64_t seed, uint64_t offset, cudaStream_t stream) {
  if (n == 0) return;
  uniform_fill_kernel<T><<<grid_for((n + 3) / 4 + 1), kThreads, 0, stream>>>(dst, n, seed, offset);
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_normal_fill(T* dst, int64_t n, uint64_t seed, uint64_t offset, cudaStream_t stream) {
  if (n == 0) return;
  normal_fill_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(dst, n, seed, offset);
  ZT_CUDA_CHECK_LAUNCH();
}

}  // namespace zt::cuda
