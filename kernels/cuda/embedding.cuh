// Embedding lookup and its deterministic backward.
//
// Why this backward: summing gradient rows into the weight gradient with atomics would make the
// result depend on thread timing (float addition is not associative), and DESIGN asks for
// bitwise reproducible training. So the backward groups the N token positions by id with a
// stable radix sort of (id, position) pairs (CUB; stable, so positions stay in ascending order
// within an id), records where each id's run starts and ends, and then one thread block per
// vocabulary row adds that id's gradient rows in position order, in f32, and writes the row once
// (zeros for ids that never occur). Cost: a sort of N 32-bit keys (microseconds for N = 16k) plus
// one read of grad_out and one write of the weight gradient. Alternatives considered: one block
// per vocabulary row scanning all N ids (O(V N) reads, too slow at V = 50k) and a hand-written
// bucket pass (a counting sort that must still be stable: the radix sort is that, already tuned).
//
// Ids out of range produce zero rows (forward) or are skipped (backward) and are reported at the
// next synchronisation (Note [Asynchronous kernel errors] in runtime.h).
#pragma once

#include "kernels/cuda/common.cuh"

namespace zt::cuda {

template <typename T, typename I, bool kVec>
__global__ void embedding_forward_kernel(const T* __restrict__ weight, const I* __restrict__ ids, T* __restrict__ out,
                                         int64_t vocab, int64_t c, DeviceErrorSink errors) {
  const int64_t row = blockIdx.x;
  const int64_t id = static_cast<int64_t>(ids[row]);
  const bool valid = id >= 0 && id < vocab;
  if (!valid && threadIdx.x == 0) report_kernel_error(errors, DeviceErrorCode::embedding_id, id, vocab);
  const T* src = weight + (valid ? id : 0) * c;
  T* dst = out + row * c;
  if constexpr (kVec) {
    constexpr int N = Pack16<T>::kSize;
    for (int64_t p = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < c / N;
         p += static_cast<int64_t>(gridDim.y) * blockDim.x) {
      Pack16<T> v;
      if (valid) {
        v = load_pack(src + p * N);
      } else {
#pragma unroll
        for (int k = 0; k < N; ++k) v.v[k] = from_acc<T>(0.0f);
      }
      store_pack(dst + p * N, v);
    }
  } else {
    for (int64_t j = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < c;
         j += static_cast<int64_t>(gridDim.y) * blockDim.x)
      dst[j] = valid ? src[j] : from_acc<T>(0.0f);
  }
}

// Sort keys (the id, or `vocab` for an id out of range, which sorts last and is skipped) and
// values (the position).
template <typename I>
__global__ void embedding_sort_keys_kernel(const I* __restrict__ ids, int64_t n, int64_t vocab,
                                           uint32_t* __restrict__ keys, uint32_t* __restrict__ positions,
                                           DeviceErrorSink errors) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t id = static_cast<int64_t>(ids[i]);
    const bool valid = id >= 0 && id < vocab;
    if (!valid) report_kernel_error(errors, DeviceErrorCode::embedding_backward_id, id, vocab);
    keys[i] = static_cast<uint32_t>(valid ? id : vocab);
    positions[i] = static_cast<uint32_t>(i);
  }
}

// run_begin[id] / run_end[id]: the range of sorted positions holding id (both 0 when absent).
__global__ void embedding_run_bounds_kernel(const uint32_t* __restrict__ sorted_keys, int64_t n, int64_t vocab,
                                            uint32_t* __restrict__ run_begin, uint32_t* __restrict__ run_end);

// Block (row, y) sums grad_out rows of positions run_begin[row]..run_end[row] (in sorted, hence
// ascending position, order) for its columns and writes dweight[row].
template <typename T, bool kVec>
__global__ void embedding_backward_rows_kernel(const T* __restrict__ grad_out, const uint32_t* __restrict__ positions,
                                               const uint32_t* __restrict__ run_begin,
                                               const uint32_t* __restrict__ run_end, T* __restrict__ dweight,
                                               int64_t c) {
  const int64_t row = blockIdx.x;
  const uint32_t begin = run_begin[row], end = run_end[row];
  T* dst = dweight + row * c;
  constexpr int N = kVec ? Pack16<T>::kSize : 1;
  for (int64_t p = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < c / N;
       p += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    float acc[N];
#pragma unroll
    for (int k = 0; k < N; ++k) acc[k] = 0.0f;
    for (uint32_t s = begin; s < end; ++s) {
      const T* src = grad_out + static_cast<int64_t>(positions[s]) * c + p * N;
      if constexpr (kVec) {
        const Pack16<T> g = load_pack(src);
#pragma unroll
        for (int k = 0; k < N; ++k) acc[k] += static_cast<float>(to_acc(g.v[k]));
      } else {
        acc[0] += static_cast<float>(to_acc(src[0]));
      }
    }
    if constexpr (kVec) {
      Pack16<T> out;
#pragma unroll
      for (int k = 0; k < N; ++k) out.v[k] = from_acc<T>(acc[k]);
      store_pack(dst + p * N, out);
    } else {
      dst[p] = from_acc<T>(acc[0]);
    }
  }
}

// ---- launchers ----

// Threads per block over the `units` (packs or elements) of a row, and blocks per row (grid.y).
struct RowLaunch {
  int threads;
  unsigned blocks_per_row;
};
inline RowLaunch row_launch(int64_t units) {
  const int threads = static_cast<int>(std::clamp<int64_t>(round_up(static_cast<int>(std::min<int64_t>(units, 256)), 32), 32, 256));
  const int64_t per_row = std::clamp<int64_t>((units + threads - 1) / threads, 1, 65535);
  return {threads, static_cast<unsigned>(per_row)};
}

template <typename T, typename I>
void launch_embedding_forward(const T* weight, const I* ids, T* out, int64_t n, int64_t vocab, int64_t c,
                              DeviceErrorSink errors, cudaStream_t stream) {
  if (n == 0 || c == 0) return;
  if (pack_aligned(c, sizeof(T), {weight, out})) {
    const RowLaunch l = row_launch(c / Pack16<T>::kSize);
    embedding_forward_kernel<T, I, true><<<dim3(static_cast<unsigned>(n), l.blocks_per_row), l.threads, 0, stream>>>(
        weight, ids, out, vocab, c, errors);
  } else {
    const RowLaunch l = row_launch(c);
    embedding_forward_kernel<T, I, false><<<dim3(static_cast<unsigned>(n), l.blocks_per_row), l.threads, 0, stream>>>(
        weight, ids, out, vocab, c, errors);
  }
  ZT_CUDA_CHECK_LAUNCH();
}

// Bytes of device scratch the backward needs for n positions and `vocab` rows.
size_t embedding_backward_scratch_bytes(int64_t n, int64_t vocab);

// scratch: embedding_backward_scratch_bytes(n, vocab) bytes, 16-byte aligned.
template <typename T, typename I>
void launch_embedding_backward(const T* grad_out, const I* ids, T* dweight, int64_t n, int64_t vocab, int64_t c,
                               void* scratch, DeviceErrorSink errors, cudaStream_t stream);

}  // namespace zt::cuda
