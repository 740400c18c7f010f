// softmax and log_softmax over the last dim of [rows, C], forward and backward.
//
// Why this shape: one block per row, so any C (10 classes or a 50k vocabulary) is one launch
// with full rows per block; rows of at most 4 packs per lane (C <= 1024 in bf16) instead get one
// warp each and stay in registers (read once, no block barrier). The forward reads the row once for an online max-and-sum (merged
// across threads with warp shuffles, then across warps through shared memory) and once more to
// write; the backward reads its two inputs once for the row's dot product and once to write.
// Rows whose bytes are 16-byte aligned are walked in 16-byte packs; others element by element.
#pragma once

#include "kernels/cuda/common.cuh"

namespace zt::cuda {

// Calls f(a[i], b[i]) (as f32) for this thread's elements of a row of c elements; b may be null
// (then f sees 0). kVec walks 16-byte packs.
template <bool kVec, typename T, typename F>
__device__ __forceinline__ void for_each_in_row(const T* a, const T* b, int64_t c, F&& f) {
  if constexpr (kVec) {
    constexpr int N = Pack16<T>::kSize;
    for (int64_t p = threadIdx.x; p < c / N; p += blockDim.x) {
      const Pack16<T> pa = load_pack(a + p * N);
      Pack16<T> pb;
      if (b != nullptr) pb = load_pack(b + p * N);
#pragma unroll
      for (int k = 0; k < N; ++k)
        f(static_cast<float>(to_acc(pa.v[k])), b != nullptr ? static_cast<float>(to_acc(pb.v[k])) : 0.0f);
    }
  } else {
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x)
      f(static_cast<float>(to_acc(a[i])), b != nullptr ? static_cast<float>(to_acc(b[i])) : 0.0f);
  }
}

// out[i] = f(a[i], b[i]) for this thread's elements (the ones for_each_in_row visits); b may be null.
template <bool kVec, typename T, typename F>
__device__ __forceinline__ void map_row(const T* a, const T* b, T* out, int64_t c, F&& f) {
  if constexpr (kVec) {
    constexpr int N = Pack16<T>::kSize;
    for (int64_t p = threadIdx.x; p < c / N; p += blockDim.x) {
      const Pack16<T> pa = load_pack(a + p * N);
      Pack16<T> pb;
      if (b != nullptr) pb = load_pack(b + p * N);
      Pack16<T> po;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const float vb = b != nullptr ? static_cast<float>(to_acc(pb.v[k])) : 0.0f;
        po.v[k] = from_acc<T>(f(static_cast<float>(to_acc(pa.v[k])), vb));
      }
      store_pack(out + p * N, po);
    }
  } else {
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
      const float vb = b != nullptr ? static_cast<float>(to_acc(b[i])) : 0.0f;
      out[i] = from_acc<T>(f(static_cast<float>(to_acc(a[i])), vb));
    }
  }
}

template <typename T, bool kLog, bool kVec>
__global__ void softmax_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t c) {
  __shared__ SoftmaxState scratch[32];
  const T* xr = x + blockIdx.x * c;
  T* yr = y + blockIdx.x * c;
  SoftmaxState s{-INFINITY, 0.0f};
  if constexpr (kVec) {
    // A pack at a time: its own max and sum (independent exps, no branch per element), then one merge.
    constexpr int N = Pack16<T>::kSize;
    for (int64_t p = threadIdx.x; p < c / N; p += blockDim.x) {
      const Pack16<T> pack = load_pack(xr + p * N);
      float v[N];
      float m = -INFINITY;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        v[k] = static_cast<float>(to_acc(pack.v[k]));
        m = fmaxf(m, v[k]);
      }
      if (m == -INFINITY) continue;  // all -inf: adds nothing
      float sum = 0.0f;
#pragma unroll
      for (int k = 0; k < N; ++k) sum += expf(v[k] - m);
      s = softmax_merge(s, {m, sum});
    }
  } else {
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) s = softmax_add(s, static_cast<float>(to_acc(xr[i])));
  }
  s = block_softmax_merge(s, scratch);
  // An all -inf row: max 0 avoids inf - inf (the CPU backend does the same).
  const float m = s.max == -INFINITY ? 0.0f : s.max;
  if constexpr (kLog) {
    // (x - max) - log(sum), not x - (max + log(sum)): keeps the small log term's precision.
    const float log_sum = logf(s.sum);
    map_row<kVec>(xr, static_cast<const T*>(nullptr), yr, c, [&](float v, float) { return (v - m) - log_sum; });
  } else {
    const float inv = 1.0f / s.sum;
    map_row<kVec>(xr, static_cast<const T*>(nullptr), yr, c, [&](float v, float) { return expf(v - m) * inv; });
  }
}

// softmax: dx = y (dy - sum(dy y)); log_softmax: dx = dy - exp(y) sum(dy).
template <typename T, bool kLog, bool kVec>
__global__ void softmax_backward_kernel(const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx,
                                        int64_t c) {
  __shared__ float scratch[32];
  const int64_t off = blockIdx.x * c;
  const T* dyr = dy + off;
  const T* yr = y + off;
  float acc = 0.0f;
  if constexpr (kLog) {
    for_each_in_row<kVec>(dyr, static_cast<const T*>(nullptr), c, [&](float g, float) { acc += g; });
  } else {
    for_each_in_row<kVec>(dyr, yr, c, [&](float g, float yv) { acc += g * yv; });
  }
  const float total = block_sum(acc, scratch);
  map_row<kVec>(dyr, yr, dx + off, c,
                [&](float g, float yv) { return kLog ? g - expf(yv) * total : yv * (g - total); });
}

// Short rows (up to 4 packs per lane, C <= 1024 for bf16): one warp per row, the row held in
// registers, so it is read once and no block barrier is needed (attention scores, small heads).
template <typename T, bool kLog, int kPacks>
__global__ void softmax_forward_warp_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t c) {
  constexpr int N = Pack16<T>::kSize;
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const T* xr = x + row * c;
  T* yr = y + row * c;
  const int64_t packs = c / N;
  float v[kPacks][N];
  float m = -INFINITY;
#pragma unroll
  for (int j = 0; j < kPacks; ++j) {
    const int64_t p = lane + 32 * j;
    if (p < packs) {
      const Pack16<T> pack = load_pack(xr + p * N);
#pragma unroll
      for (int k = 0; k < N; ++k) {
        v[j][k] = static_cast<float>(to_acc(pack.v[k]));
        m = fmaxf(m, v[j][k]);
      }
    }
  }
  m = warp_max(m);
  if (m == -INFINITY) m = 0.0f;  // an all -inf row, as the block kernel
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kPacks; ++j) {
    if (lane + 32 * j < packs) {
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const float e = expf(v[j][k] - m);
        sum += e;
        if constexpr (!kLog) v[j][k] = e;
      }
    }
  }
  sum = warp_sum(sum);
  const float log_sum = logf(sum), inv = 1.0f / sum;
#pragma unroll
  for (int j = 0; j < kPacks; ++j) {
    const int64_t p = lane + 32 * j;
    if (p < packs) {
      Pack16<T> out;
#pragma unroll
      for (int k = 0; k < N; ++k) out.v[k] = from_acc<T>(kLog ? (v[j][k] - m) - log_sum : v[j][k] * inv);
      store_pack(yr + p * N, out);
    }
  }
}

template <typename T, bool kLog, int kPacks>
__global__ void softmax_backward_warp_kernel(const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx,
                                             int64_t rows, int64_t c) {
  constexpr int N = Pack16<T>::kSize;
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t off = row * c, packs = c / N;
  float g[kPacks][N], yv[kPacks][N];
  float acc = 0.0f;
#pragma unroll
  for (int j = 0; j < kPacks; ++j) {
    const int64_t p = lane + 32 * j;
    if (p < packs) {
      const Pack16<T> gp = load_pack(dy + off + p * N), yp = load_pack(y + off + p * N);
#pragma unroll
      for (int k = 0; k < N; ++k) {
        g[j][k] = static_cast<float>(to_acc(gp.v[k]));
        yv[j][k] = static_cast<float>(to_acc(yp.v[k]));
        acc += kLog ? g[j][k] : g[j][k] * yv[j][k];
      }
    }
  }
  const float total = warp_sum(acc);
#pragma unroll
  for (int j = 0; j < kPacks; ++j) {
    const int64_t p = lane + 32 * j;
    if (p < packs) {
      Pack16<T> out;
#pragma unroll
      for (int k = 0; k < N; ++k)
        out.v[k] = from_acc<T>(kLog ? g[j][k] - expf(yv[j][k]) * total : yv[j][k] * (g[j][k] - total));
      store_pack(dx + off + p * N, out);
    }
  }
}

// ---- launchers ----

inline constexpr int kSoftmaxWarpsPerBlock = 8;

// Packs per lane for the warp-per-row kernels (1, 2 or 4), or 0 when the row is too long for them.
template <typename T>
int softmax_warp_packs(int64_t c) {
  const int64_t per_lane = (c / Pack16<T>::kSize + 31) / 32;
  return per_lane <= 1 ? 1 : per_lane <= 2 ? 2 : per_lane <= 4 ? 4 : 0;
}

template <typename T, bool kLog, typename Launch>
void with_warp_packs(int packs, Launch&& launch) {
  if (packs == 1) launch.template operator()<1>();
  else if (packs == 2) launch.template operator()<2>();
  else launch.template operator()<4>();
}

inline int softmax_threads(int64_t c) {
  return static_cast<int>(std::clamp<int64_t>(round_up(static_cast<int>(std::min<int64_t>((c + 7) / 8, 1024)), 32), 32, 1024));
}

template <typename T, bool kLog>
void launch_softmax_forward(const T* x, T* y, int64_t rows, int64_t c, cudaStream_t stream) {
  if (rows == 0 || c == 0) return;
  const bool vec = pack_aligned(c, sizeof(T), {x, y});
  const unsigned warp_blocks = static_cast<unsigned>((rows + kSoftmaxWarpsPerBlock - 1) / kSoftmaxWarpsPerBlock);
  if (vec && softmax_warp_packs<T>(c) > 0) {
    with_warp_packs<T, kLog>(softmax_warp_packs<T>(c), [&]<int P>() {
      softmax_forward_warp_kernel<T, kLog, P><<<warp_blocks, kSoftmaxWarpsPerBlock * 32, 0, stream>>>(x, y, rows, c);
    });
  } else if (vec) {
    softmax_forward_kernel<T, kLog, true><<<static_cast<unsigned>(rows), softmax_threads(c / Pack16<T>::kSize * 8), 0, stream>>>(x, y, c);
  } else {
    softmax_forward_kernel<T, kLog, false><<<static_cast<unsigned>(rows), softmax_threads(c), 0, stream>>>(x, y, c);
  }
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename T, bool kLog>
void launch_softmax_backward(const T* dy, const T* y, T* dx, int64_t rows, int64_t c, cudaStream_t stream) {
  if (rows == 0 || c == 0) return;
  const bool vec = pack_aligned(c, sizeof(T), {dy, y, dx});
  const unsigned warp_blocks = static_cast<unsigned>((rows + kSoftmaxWarpsPerBlock - 1) / kSoftmaxWarpsPerBlock);
  if (vec && softmax_warp_packs<T>(c) > 0) {
    with_warp_packs<T, kLog>(softmax_warp_packs<T>(c), [&]<int P>() {
      softmax_backward_warp_kernel<T, kLog, P><<<warp_blocks, kSoftmaxWarpsPerBlock * 32, 0, stream>>>(dy, y, dx, rows, c);
    });
  } else if (vec) {
    softmax_backward_kernel<T, kLog, true><<<static_cast<unsigned>(rows), softmax_threads(c / Pack16<T>::kSize * 8), 0, stream>>>(dy, y, dx, c);
  } else {
    softmax_backward_kernel<T, kLog, false><<<static_cast<unsigned>(rows), softmax_threads(c), 0, stream>>>(dy, y, dx, c);
  }
  ZT_CUDA_CHECK_LAUNCH();
}

}  // namespace zt::cuda
