// The classifier's loss: cross entropy over the rows of logits [N, V], forward and backward, and
// a fused pass that does both.
//
// Why this shape: the logits are the largest activation of a GPT (N x 50304), so they are read
// in their own dtype (bf16) and never copied to f32. One block per row computes the row's
// log-sum-exp in one pass with an online max-and-sum (common.cuh's SoftmaxState), over the valid
// vocabulary only (columns at or past valid_vocab are padding). The backward writes
// grad_scale * (softmax - onehot) in the logits' dtype from the saved lse, one more pass. The
// fused launcher (for the model's classifier) does both with two reads of the row and may write
// the gradient over the logits in place, so the loss never needs memory beyond the logits.
#pragma once

#include "kernels/cuda/common.cuh"

namespace zt::cuda {

// This thread's online softmax state over columns [0, valid) of a row (packs where kVec; the tail
// past the last whole pack below `valid` element by element).
template <bool kVec, typename T>
__device__ __forceinline__ SoftmaxState row_softmax_state(const T* row, int64_t valid) {
  SoftmaxState s{-INFINITY, 0.0f};
  int64_t done = 0;
  if constexpr (kVec) {
    constexpr int N = Pack16<T>::kSize;
    const int64_t packs = valid / N;
    for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
      // A pack's own max and sum (independent exps, no branch per element), then one merge.
      const Pack16<T> pack = load_pack(row + p * N);
      float v[N];
      float m = -INFINITY;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        v[k] = static_cast<float>(to_acc(pack.v[k]));
        m = fmaxf(m, v[k]);
      }
      if (m == -INFINITY) continue;
      float sum = 0.0f;
#pragma unroll
      for (int k = 0; k < N; ++k) sum += expf(v[k] - m);
      s = softmax_merge(s, {m, sum});
    }
    done = packs * N;
  }
  for (int64_t i = done + threadIdx.x; i < valid; i += blockDim.x) s = softmax_add(s, static_cast<float>(to_acc(row[i])));
  return s;
}

// Writes d[i] = scale * (exp(x[i] - lse) - [i == target]) for i < valid, 0 for padding columns,
// and 0 everywhere when the row is ignored (scale 0 does that). d may alias x (same thread reads
// then writes each element).
template <bool kVec, typename T>
__device__ __forceinline__ void write_row_gradient(const T* x, T* d, int64_t v, int64_t valid, int64_t target,
                                                   float lse, float scale) {
  auto grad = [&](int64_t i, float xv) {
    if (i >= valid || scale == 0.0f) return 0.0f;
    const float p = expf(xv - lse);
    return scale * (p - (i == target ? 1.0f : 0.0f));
  };
  int64_t done = 0;
  if constexpr (kVec) {
    constexpr int N = Pack16<T>::kSize;
    const int64_t packs = v / N;
    for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
      const Pack16<T> in = load_pack(x + p * N);
      Pack16<T> out;
#pragma unroll
      for (int k = 0; k < N; ++k) out.v[k] = from_acc<T>(grad(p * N + k, static_cast<float>(to_acc(in.v[k]))));
      store_pack(d + p * N, out);
    }
    done = packs * N;
  }
  for (int64_t i = done + threadIdx.x; i < v; i += blockDim.x) d[i] = from_acc<T>(grad(i, static_cast<float>(to_acc(x[i]))));
}

// Whether a target counts, is ignored, or is out of range (reported, then treated as ignored).
template <typename I>
__device__ __forceinline__ bool target_counts(I target, int64_t ignore_index, int64_t valid, DeviceErrorSink errors,
                                              bool report) {
  const int64_t t = static_cast<int64_t>(target);
  if (t == ignore_index) return false;
  if (t < 0 || t >= valid) {
    if (report) report_kernel_error(errors, DeviceErrorCode::cross_entropy_target, t, valid);
    return false;
  }
  return true;
}

// losses[row] = lse - x[target] and lse[row] over the valid columns (both 0 when the row is ignored).
template <typename T, typename I, bool kVec>
__global__ void cross_entropy_forward_kernel(const T* __restrict__ logits, const I* __restrict__ targets,
                                             float* __restrict__ losses, float* __restrict__ lse_out, int64_t v,
                                             int64_t valid, int64_t ignore_index, DeviceErrorSink errors) {
  __shared__ SoftmaxState scratch[32];
  const int64_t row = blockIdx.x;
  const T* x = logits + row * v;
  const SoftmaxState s = block_softmax_merge(row_softmax_state<kVec>(x, valid), scratch);
  if (threadIdx.x == 0) {
    const float lse = s.max + logf(s.sum);
    const bool counts = target_counts(targets[row], ignore_index, valid, errors, true);
    losses[row] = counts ? lse - static_cast<float>(to_acc(x[static_cast<int64_t>(targets[row])])) : 0.0f;
    lse_out[row] = counts ? lse : 0.0f;  // as the CPU backend: ignored rows have loss 0 and lse 0
  }
}

template <typename T, typename I, bool kVec>
__global__ void cross_entropy_backward_kernel(const T* logits, const I* __restrict__ targets,
                                              const float* __restrict__ lse_in, T* dlogits, int64_t v,
                                              int64_t valid, int64_t ignore_index, float grad_scale,
                                              const float* __restrict__ scale_by, DeviceErrorSink errors) {
  const int64_t row = blockIdx.x;
  const bool counts = target_counts(targets[row], ignore_index, valid, errors, threadIdx.x == 0);
  const float scale = scale_by != nullptr ? grad_scale * *scale_by : grad_scale;
  write_row_gradient<kVec>(logits + row * v, dlogits + row * v, v, valid, static_cast<int64_t>(targets[row]),
                           lse_in[row], counts ? scale : 0.0f);
}

// *inv_count = 1 / (targets that count), or 0 when none does; one block (N is a batch's tokens).
template <typename I>
__global__ void inverse_target_count_kernel(const I* __restrict__ targets, int64_t n, int64_t ignore_index,
                                            int64_t valid, float* __restrict__ inv_count) {
  __shared__ int64_t partial[32];
  int64_t count = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const int64_t t = static_cast<int64_t>(targets[i]);
    count += t != ignore_index && t >= 0 && t < valid;
  }
  for (int o = 16; o > 0; o /= 2) count += __shfl_xor_sync(0xffffffffu, count, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x / 32] = count;
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t total = 0;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) total += partial[w];
    *inv_count = total == 0 ? 0.0f : static_cast<float>(1.0 / static_cast<double>(total));
  }
}

// Forward and backward in one launch; dlogits may be the logits themselves (in place).
template <typename T, typename I, bool kVec>
__global__ void cross_entropy_fused_kernel(const T* logits, const I* __restrict__ targets, float* __restrict__ losses,
                                           float* __restrict__ lse_out, T* dlogits, int64_t v, int64_t valid,
                                           int64_t ignore_index, float grad_scale, DeviceErrorSink errors) {
  __shared__ SoftmaxState scratch[32];
  __shared__ float target_logit;
  const int64_t row = blockIdx.x;
  const T* x = logits + row * v;
  const SoftmaxState s = block_softmax_merge(row_softmax_state<kVec>(x, valid), scratch);
  const float lse = s.max + logf(s.sum);
  const bool counts = target_counts(targets[row], ignore_index, valid, errors, threadIdx.x == 0);
  const int64_t target = static_cast<int64_t>(targets[row]);
  if (threadIdx.x == 0) target_logit = counts ? static_cast<float>(to_acc(x[target])) : 0.0f;
  __syncthreads();  // the target's logit is read before any thread overwrites the row
  if (threadIdx.x == 0) {
    losses[row] = counts ? lse - target_logit : 0.0f;
    lse_out[row] = counts ? lse : 0.0f;
  }
  write_row_gradient<kVec>(x, dlogits + row * v, v, valid, target, lse, counts ? grad_scale : 0.0f);
}

// ---- launchers ----

inline int cross_entropy_threads(int64_t units) {
  return static_cast<int>(std::clamp<int64_t>(round_up(static_cast<int>(std::min<int64_t>(units, 1024)), 32), 32, 1024));
}

template <typename T, typename I>
void launch_cross_entropy_forward(const T* logits, const I* targets, float* losses, float* lse, int64_t n, int64_t v,
                                  int64_t valid, int64_t ignore_index, DeviceErrorSink errors, cudaStream_t stream) {
  if (n == 0) return;
  if (pack_aligned(v, sizeof(T), {logits})) {
    cross_entropy_forward_kernel<T, I, true><<<static_cast<unsigned>(n), cross_entropy_threads(valid / Pack16<T>::kSize), 0, stream>>>(
        logits, targets, losses, lse, v, valid, ignore_index, errors);
  } else {
    cross_entropy_forward_kernel<T, I, false><<<static_cast<unsigned>(n), cross_entropy_threads(valid / 4), 0, stream>>>(
        logits, targets, losses, lse, v, valid, ignore_index, errors);
  }
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename T, typename I>
void launch_cross_entropy_backward(const T* logits, const I* targets, const float* lse, T* dlogits, int64_t n,
                                   int64_t v, int64_t valid, int64_t ignore_index, float grad_scale,
                                   const float* scale_by, DeviceErrorSink errors, cudaStream_t stream) {
  if (n == 0) return;
  if (pack_aligned(v, sizeof(T), {logits, dlogits})) {
    cross_entropy_backward_kernel<T, I, true><<<static_cast<unsigned>(n), cross_entropy_threads(v / Pack16<T>::kSize), 0, stream>>>(
        logits, targets, lse, dlogits, v, valid, ignore_index, grad_scale, scale_by, errors);
  } else {
    cross_entropy_backward_kernel<T, I, false><<<static_cast<unsigned>(n), cross_entropy_threads(v / 4), 0, stream>>>(
        logits, targets, lse, dlogits, v, valid, ignore_index, grad_scale, scale_by, errors);
  }
  ZT_CUDA_CHECK_LAUNCH();
}

// losses and lse: f32 [n]; dlogits [n, v] may equal logits.
template <typename I>
void launch_inverse_target_count(const I* targets, int64_t n, int64_t ignore_index, int64_t valid, float* inv_count,
                                 cudaStream_t stream) {
  inverse_target_count_kernel<I><<<1, 1024, 0, stream>>>(targets, n, ignore_index, valid, inv_count);
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename T, typename I>
void launch_cross_entropy_fused(const T* logits, const I* targets, float* losses, float* lse, T* dlogits, int64_t n,
                                int64_t v, int64_t valid, int64_t ignore_index, float grad_scale,
                                DeviceErrorSink errors, cudaStream_t stream) {
  if (n == 0) return;
  if (pack_aligned(v, sizeof(T), {logits, dlogits})) {
    cross_entropy_fused_kernel<T, I, true><<<static_cast<unsigned>(n), cross_entropy_threads(v / Pack16<T>::kSize), 0, stream>>>(
        logits, targets, losses, lse, dlogits, v, valid, ignore_index, grad_scale, errors);
  } else {
    cross_entropy_fused_kernel<T, I, false><<<static_cast<unsigned>(n), cross_entropy_threads(v / 4), 0, stream>>>(
        logits, targets, losses, lse, dlogits, v, valid, ignore_index, grad_scale, errors);
  }
  ZT_CUDA_CHECK_LAUNCH();
}

}  // namespace zt::cuda
