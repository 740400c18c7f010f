// Fused AdamW: one pass over the parameter, its gradient and both moments.
//
// Why this shape: the optimizer step is memory-bound (16 bytes of state per parameter read and
// written), so everything happens in one read and one write of each array. The update itself is
// a device function on one element, adamw_update, so that a multi-tensor launcher (a list of
// (param, grad, moments, count) chunks per launch, as ZeRO's flat shards or many small tensors
// want) can call it unchanged; the single-tensor kernel below is the Backend's method.
#pragma once

#include "core/backend.h"
#include "kernels/cuda/common.cuh"

namespace zt::cuda {

// Per-step constants, computed once on the host (in f64, rounded once to f32).
struct AdamWConstants {
  float lr, beta1, beta2, eps, weight_decay, grad_scale;
  float bias_correction1;       // 1 - beta1^step
  float bias_correction2_sqrt;  // sqrt(1 - beta2^step)
};

inline AdamWConstants make_adamw_constants(const AdamWArgs& a) {
  const double bc1 = 1.0 - std::pow(a.beta1, static_cast<double>(a.step));
  const double bc2 = 1.0 - std::pow(a.beta2, static_cast<double>(a.step));
  return {static_cast<float>(a.lr),           static_cast<float>(a.beta1),
          static_cast<float>(a.beta2),        static_cast<float>(a.eps),
          static_cast<float>(a.weight_decay), static_cast<float>(a.grad_scale),
          static_cast<float>(bc1),            static_cast<float>(std::sqrt(bc2))};
}

// AdamW on one element (PyTorch's formulation, decoupled weight decay from the old parameter):
//   g = grad * grad_scale; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2
//   p = p - lr * wd * p - lr * (m / bc1) / (sqrt(v) / sqrt(bc2) + eps)
__device__ __forceinline__ void adamw_update(float& p, float grad, float& m, float& v, const AdamWConstants& c) {
  const float g = grad * c.grad_scale;
  m = c.beta1 * m + (1.0f - c.beta1) * g;
  v = c.beta2 * v + (1.0f - c.beta2) * g * g;
  const float denom = sqrtf(v) / c.bias_correction2_sqrt + c.eps;
  p = p - c.lr * c.weight_decay * p - (c.lr / c.bias_correction1) * (m / denom);
}

// V elements per thread per iteration with V-wide loads and stores (16 bytes of each f32 array
// when V = 4): the step is bandwidth-bound, and scalar 4-byte accesses left it at about 60% of the
// H200's bandwidth. The tail past the last whole pack goes element by element. `first` and
// `stride` are this thread's place in a grid-stride loop.
template <typename G, int V>
__device__ __forceinline__ void adamw_range(float* __restrict__ param, const G* __restrict__ grad,
                                            float* __restrict__ exp_avg, float* __restrict__ exp_avg_sq, int64_t n,
                                            const AdamWConstants& c, int64_t first, int64_t stride) {
  const int64_t packs = n / V;
  for (int64_t i = first; i < packs; i += stride) {
    Pack<float, V> p = reinterpret_cast<Pack<float, V>*>(param)[i];
    Pack<float, V> m = reinterpret_cast<Pack<float, V>*>(exp_avg)[i];
    Pack<float, V> v = reinterpret_cast<Pack<float, V>*>(exp_avg_sq)[i];
    const Pack<G, V> g = reinterpret_cast<const Pack<G, V>*>(grad)[i];
#pragma unroll
    for (int j = 0; j < V; ++j) adamw_update(p.v[j], static_cast<float>(to_acc(g.v[j])), m.v[j], v.v[j], c);
    reinterpret_cast<Pack<float, V>*>(param)[i] = p;
    reinterpret_cast<Pack<float, V>*>(exp_avg)[i] = m;
    reinterpret_cast<Pack<float, V>*>(exp_avg_sq)[i] = v;
  }
  for (int64_t i = packs * V + first; i < n; i += stride) {
    float p = param[i], m = exp_avg[i], v = exp_avg_sq[i];
    adamw_update(p, static_cast<float>(to_acc(grad[i])), m, v, c);
    param[i] = p;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
  }
}

template <typename G, int V>
__global__ void adamw_kernel(float* __restrict__ param, const G* __restrict__ grad, float* __restrict__ exp_avg,
                             float* __restrict__ exp_avg_sq, int64_t n, AdamWConstants c) {
  adamw_range<G, V>(param, grad, exp_avg, exp_avg_sq, n, c, blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x,
                    static_cast<int64_t>(gridDim.x) * blockDim.x);
}

// Runs of one flat shard that differ only in weight decay, one per blockIdx.y (adamw_step_runs).
struct AdamWRuns {
  static constexpr int kMax = 16;
  int64_t begin[kMax];
  int64_t n[kMax];
  float weight_decay[kMax];
  int count = 0;
};

template <typename G, int V>
__global__ void adamw_runs_kernel(float* __restrict__ param, const G* __restrict__ grad, float* __restrict__ exp_avg,
                                  float* __restrict__ exp_avg_sq, AdamWRuns runs, AdamWConstants c) {
  const int r = blockIdx.y;
  const int64_t begin = runs.begin[r];
  c.weight_decay = runs.weight_decay[r];
  adamw_range<G, V>(param + begin, grad + begin, exp_avg + begin, exp_avg_sq + begin, runs.n[r], c,
                    blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x,
                    static_cast<int64_t>(gridDim.x) * blockDim.x);
}

template <typename G>
int adamw_width(const float* param, const G* grad, const float* exp_avg, const float* exp_avg_sq) {
  return std::min(4, vector_width({{param, sizeof(float)}, {grad, sizeof(G)}, {exp_avg, sizeof(float)},
                                   {exp_avg_sq, sizeof(float)}}));
}

template <typename G>
void launch_adamw(float* param, const G* grad, float* exp_avg, float* exp_avg_sq, int64_t n, const AdamWConstants& c,
                  cudaStream_t stream) {
  if (n == 0) return;
  dispatch_vector_width(adamw_width(param, grad, exp_avg, exp_avg_sq), [&]<int V>() {
    if constexpr (V <= 4) {
      adamw_kernel<G, V><<<grid_for(std::max<int64_t>(n / V, 1)), kThreads, 0, stream>>>(param, grad, exp_avg,
                                                                                       exp_avg_sq, n, c);
    }
  });
  ZT_CUDA_CHECK_LAUNCH();
}

// One launch for up to AdamWRuns::kMax runs; the vector width is the narrowest any run allows.
// The grid's x extent covers the longest run a few times over with the grid-stride loop (enough
// blocks to fill an H100/H200), so short runs cost only their own blocks' early exit.
template <typename G>
void launch_adamw_runs(float* param, const G* grad, float* exp_avg, float* exp_avg_sq, const AdamWRuns& runs,
                       const AdamWConstants& c, cudaStream_t stream) {
  if (runs.count == 0) return;
  int width = 4;
  int64_t longest = 1;
  for (int r = 0; r < runs.count; ++r) {
    const int64_t b = runs.begin[r];
    width = std::min(width, adamw_width(param + b, grad + b, exp_avg + b, exp_avg_sq + b));
    longest = std::max(longest, runs.n[r]);
  }
  dispatch_vector_width(width, [&]<int V>() {
    if constexpr (V <= 4) {
      const dim3 grid(grid_for(std::max<int64_t>(longest / V, 1), kThreads, 1024), static_cast<unsigned>(runs.count));
      adamw_runs_kernel<G, V><<<grid, kThreads, 0, stream>>>(param, grad, exp_avg, exp_avg_sq, runs, c);
    }
  });
  ZT_CUDA_CHECK_LAUNCH();
}

}  // namespace zt::cuda
