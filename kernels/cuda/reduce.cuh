// Reductions: sum and max over any set of dims, max over the last dim with its index, and the
// f64 sum of squares and finiteness check that gradient clipping and loss scaling use.
//
// Why this shape: a reduction is either over contiguous runs (the reduced dims are innermost:
// one block reads a run with coalesced loads) or across rows (the kept dims are innermost, as in
// a bias gradient [N, C] -> [C]: one thread per output, neighbouring threads reading neighbouring
// addresses). Long reductions are split into a fixed number of chunks whose partial results a
// second kernel adds in chunk order. The chunking depends only on the shape, never on the GPU or
// on timing, so results are bitwise reproducible run to run and across GPUs.
#pragma once

#include <limits>

#include "core/backend.h"
#include "kernels/cuda/common.cuh"

namespace zt::cuda {

inline constexpr int64_t kReduceTargetBlocks = 512;  // enough blocks to fill an H100 about four times

template <typename A>
__device__ __forceinline__ A reduce_identity(ReduceOp op) {
  if (op == ReduceOp::sum) return A(0);
  if constexpr (std::numeric_limits<A>::has_infinity) {
    return -std::numeric_limits<A>::infinity();
  } else {
    return std::numeric_limits<A>::lowest();
  }
}

// max propagates NaN, as IEEE maximum and the CPU backend (v != v only for NaN; never for integers).
template <typename A>
__device__ __forceinline__ A reduce_combine(ReduceOp op, A a, A b) {
  if (op == ReduceOp::sum) return a + b;
  if (a != a) return a;
  return (b > a || b != b) ? b : a;
}

// Whether (v, i) beats (best, best_i) for max_last_dim: NaN is the maximum, then the larger value,
// then the smaller index (the first maximum). An index below 0 means no element yet.
template <typename A>
__device__ __forceinline__ bool max_candidate_wins(A v, int64_t i, A best, int64_t best_i) {
  if (i < 0) return false;
  if (best_i < 0) return true;
  const bool v_nan = v != v, best_nan = best != best;
  if (v_nan != best_nan) return v_nan;
  if (!v_nan && v != best) return v > best;
  return i < best_i;
}

template <typename A>
__device__ __forceinline__ A warp_reduce(ReduceOp op, A v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = reduce_combine(op, v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Offsets of the reduced elements: the common single-stride case without any division.
struct ReducedIndex {
  StridedIndexer<1, int64_t> ix;
  __device__ __forceinline__ int64_t offset(int64_t r) const {
    if (ix.ndim == 1) return r * ix.strides[0][0];
    int64_t off[1];
    ix.offsets(r, off);
    return off[0];
  }
};

// Reduced elements contiguous: block (o, s) reduces elements [s * chunk, (s + 1) * chunk) of output
// o's run and writes a partial (chunks > 1) or the result.
template <typename T>
__global__ void reduce_rows_kernel(ReduceOp op, const T* __restrict__ x, StridedIndexer<1, int64_t> kept, int64_t r,
                                   int64_t chunk, acc_t<T>* __restrict__ partial, T* __restrict__ out,
                                   int64_t outputs) {
  using A = acc_t<T>;
  __shared__ A scratch[32];
  const int64_t o = blockIdx.x, s = blockIdx.y;
  int64_t base[1];
  kept.offsets(o, base);
  const int64_t begin = s * chunk, end = begin + chunk < r ? begin + chunk : r;
  A acc = reduce_identity<A>(op);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) acc = reduce_combine(op, acc, A(to_acc(x[base[0] + i])));
  // Block reduction in a fixed order.
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  acc = warp_reduce(op, acc);
  if (lane == 0) scratch[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = lane < warps ? scratch[lane] : reduce_identity<A>(op);
    acc = warp_reduce(op, acc);
    if (lane == 0) {
      if (partial != nullptr) {
        partial[s * outputs + o] = acc;
      } else {
        out[o] = from_acc<T>(acc);
      }
    }
  }
}

// Any other layout: thread per output o (grid.x), chunk s of the reduced elements (grid.y).
template <typename T>
__global__ void reduce_columns_kernel(ReduceOp op, const T* __restrict__ x, StridedIndexer<1, int64_t> kept,
                                      ReducedIndex reduced, int64_t r, int64_t chunk, acc_t<T>* __restrict__ partial,
                                      T* __restrict__ out, int64_t outputs) {
  using A = acc_t<T>;
  const int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x, s = blockIdx.y;
  if (o >= outputs) return;
  int64_t base[1];
  kept.offsets(o, base);
  const int64_t begin = s * chunk, end = begin + chunk < r ? begin + chunk : r;
  A acc = reduce_identity<A>(op);
  for (int64_t i = begin; i < end; ++i) acc = reduce_combine(op, acc, A(to_acc(x[base[0] + reduced.offset(i)])));
  if (partial != nullptr) {
    partial[s * outputs + o] = acc;
  } else {
    out[o] = from_acc<T>(acc);
  }
}

template <typename T>
__global__ void reduce_finalize_kernel(ReduceOp op, const acc_t<T>* __restrict__ partial, int64_t chunks,
                                       T* __restrict__ out, int64_t outputs) {
  using A = acc_t<T>;
  const int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (o >= outputs) return;
  A acc = reduce_identity<A>(op);
  for (int64_t s = 0; s < chunks; ++s) acc = reduce_combine(op, acc, partial[s * outputs + o]);
  out[o] = from_acc<T>(acc);
}

// One warp per row of [rows, c]: the maximum and the index of its first occurrence.
template <typename T>
__global__ void max_last_dim_kernel(const T* __restrict__ x, int64_t rows, int64_t c, T* __restrict__ values,
                                    int64_t* __restrict__ indices) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const T* xr = x + row * c;
  A best = reduce_identity<A>(ReduceOp::max);
  int64_t best_index = -1;
  for (int64_t i = lane; i < c; i += 32) {
    const A v = to_acc(xr[i]);
    if (max_candidate_wins(v, i, best, best_index)) {
      best = v;
      best_index = i;
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const A ov = __shfl_xor_sync(0xffffffffu, best, offset);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, best_index, offset);
    if (max_candidate_wins(ov, oi, best, best_index)) {
      best = ov;
      best_index = oi;
    }
  }
  if (lane == 0) {
    values[row] = from_acc<T>(best);
    indices[row] = best_index;
  }
}

inline constexpr int kSumSquaresBlocks = 1024;  // fixed: the summation order depends on the size only

// Per block: the f64 sum of squares of a grid-stride slice; finite[0] is cleared on any non-finite element.
template <typename T>
__global__ void sum_squares_kernel(const T* __restrict__ x, int64_t n, double* __restrict__ partial) {
  __shared__ double scratch[32];
  double acc = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double v = static_cast<double>(to_acc(x[i]));
    acc += v * v;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void sum_partials_kernel(const double* __restrict__ partial, int count, double* __restrict__ out);

template <typename T>
__global__ void all_finite_kernel(const T* __restrict__ x, int64_t n, int* __restrict__ finite) {
  bool ok = true;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    ok = ok && isfinite(static_cast<double>(to_acc(x[i])));
  if (!ok) *finite = 0;  // every writer writes the same value: no atomic needed
}

// ---- launchers ----

// partial: chunks * outputs accumulators when chunks > 1 (else unused).
template <typename T>
void launch_reduce_rows(ReduceOp op, const T* x, const StridedIndexer<1, int64_t>& kept, int64_t outputs, int64_t r,
                        int64_t chunks, acc_t<T>* partial, T* out, cudaStream_t stream) {
  const int64_t chunk = (r + chunks - 1) / chunks;
  const int threads = static_cast<int>(std::clamp<int64_t>(round_up(static_cast<int>(std::min<int64_t>(chunk, 1024)), 32), 32, 256));
  reduce_rows_kernel<T><<<dim3(static_cast<unsigned>(outputs), static_cast<unsigned>(chunks)), threads, 0, stream>>>(
      op, x, kept, r, chunk, chunks > 1 ? partial : nullptr, out, outputs);
  ZT_CUDA_CHECK_LAUNCH();
  if (chunks > 1) {
    reduce_finalize_kernel<T><<<grid_for(outputs), kThreads, 0, stream>>>(op, partial, chunks, out, outputs);
    ZT_CUDA_CHECK_LAUNCH();
  }
}

template <typename T>
void launch_reduce_columns(ReduceOp op, const T* x, const StridedIndexer<1, int64_t>& kept, const ReducedIndex& reduced,
                           int64_t outputs, int64_t r, int64_t chunks, acc_t<T>* partial, T* out, cudaStream_t stream) {
  const int64_t chunk = (r + chunks - 1) / chunks;
  const unsigned blocks_x = static_cast<unsigned>((outputs + kThreads - 1) / kThreads);
  reduce_columns_kernel<T><<<dim3(blocks_x, static_cast<unsigned>(chunks)), kThreads, 0, stream>>>(
      op, x, kept, reduced, r, chunk, chunks > 1 ? partial : nullptr, out, outputs);
  ZT_CUDA_CHECK_LAUNCH();
  if (chunks > 1) {
    reduce_finalize_kernel<T><<<grid_for(outputs), kThreads, 0, stream>>>(op, partial, chunks, out, outputs);
    ZT_CUDA_CHECK_LAUNCH();
  }
}

template <typename T>
void launch_max_last_dim(const T* x, int64_t rows, int64_t c, T* values, int64_t* indices, cudaStream_t stream) {
  if (rows == 0) return;
  constexpr int kWarps = 8;
  max_last_dim_kernel<T><<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kWarps * 32, 0, stream>>>(
      x, rows, c, values, indices);
  ZT_CUDA_CHECK_LAUNCH();
}

// result: one double on the device.
template <typename T>
void launch_sum_squares(const T* x, int64_t n, double* partial, double* result, cudaStream_t stream) {
  sum_squares_kernel<T><<<kSumSquaresBlocks, kThreads, 0, stream>>>(x, n, partial);
  ZT_CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, kThreads, 0, stream>>>(partial, kSumSquaresBlocks, result);
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_all_finite(const T* x, int64_t n, int* finite, cudaStream_t stream) {
  if (n == 0) return;
  all_finite_kernel<T><<<grid_for(n, kThreads, 4096), kThreads, 0, stream>>>(x, n, finite);
  ZT_CUDA_CHECK_LAUNCH();
}

}  // namespace zt::cuda
