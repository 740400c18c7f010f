// Elementwise kernels: broadcast binary ops, the unary family and its derivatives, axpy/scale and
// counter-based dropout.
//
// Why this shape: these are memory-bound, so each is one pass over its operands in their own
// dtype with f32 arithmetic for the 16-bit types (f64 for f64). Binary ops see operands already
// expanded to the output's shape (stride 0 where broadcast), so one strided kernel covers every
// broadcast; a flat kernel handles the common all-contiguous case without index math. Dropout
// redraws its mask from (seed, offset + i) (core/rng.h) instead of storing it, so forward and
// backward are the same kernel and the CPU draws the same mask.
#pragma once

#include "core/backend.h"
#include "core/rng.h"
#include "kernels/cuda/common.cuh"

namespace zt::cuda {

template <typename A>
__device__ __forceinline__ A apply_binary(BinaryOp op, A a, A b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;
  }
  return a;
}

template <typename T>
__global__ void binary_contiguous_kernel(BinaryOp op, const T* __restrict__ a, const T* __restrict__ b,
                                         T* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = from_acc<T>(apply_binary<acc_t<T>>(op, to_acc(a[i]), to_acc(b[i])));
}

// Operand 0 is a, 1 is b, 2 is out.
template <typename T, typename Index>
__global__ void binary_strided_kernel(BinaryOp op, const T* __restrict__ a, const T* __restrict__ b,
                                      T* __restrict__ out, StridedIndexer<3, Index> ix, Index n) {
  for (Index i = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<Index>(gridDim.x) * blockDim.x) {
    Index off[3];
    ix.offsets(i, off);
    out[off[2]] = from_acc<T>(apply_binary<acc_t<T>>(op, to_acc(a[off[0]]), to_acc(b[off[1]])));
  }
}

// GPT-2's GeLU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
template <typename A>
__device__ __forceinline__ A gelu_tanh(A x) {
  const A k = A(0.7978845608028654), c = A(0.044715);
  return A(0.5) * x * (A(1) + tanh(k * (x + c * x * x * x)));
}

template <typename A>
__device__ __forceinline__ A gelu_tanh_derivative(A x) {
  const A k = A(0.7978845608028654), c = A(0.044715);
  const A t = tanh(k * (x + c * x * x * x));
  return A(0.5) * (A(1) + t) + A(0.5) * x * (A(1) - t * t) * k * (A(1) + A(3) * c * x * x);
}

template <typename A>
__device__ __forceinline__ A apply_unary(UnaryOp op, A x, A s) {
  switch (op) {
    case UnaryOp::neg: return -x;
    case UnaryOp::exp: return exp(x);
    case UnaryOp::log: return log(x);
    case UnaryOp::sqrt: return sqrt(x);
    case UnaryOp::tanh: return tanh(x);
    case UnaryOp::relu: return x > A(0) ? x : A(0);
    case UnaryOp::gelu: return gelu_tanh(x);
    case UnaryOp::add_scalar: return x + s;
    case UnaryOp::mul_scalar: return x * s;
    case UnaryOp::pow_scalar: return pow(x, s);
  }
  return x;
}

// d f(x) / dx given x and y = f(x) (y is recomputed from x when the caller passed none).
template <typename A>
__device__ __forceinline__ A unary_derivative(UnaryOp op, A x, A y, A s) {
  switch (op) {
    case UnaryOp::neg: return A(-1);
    case UnaryOp::exp: return y;
    case UnaryOp::log: return A(1) / x;
    case UnaryOp::sqrt: return A(0.5) / y;
    case UnaryOp::tanh: return A(1) - y * y;
    case UnaryOp::relu: return x > A(0) ? A(1) : A(0);
    case UnaryOp::gelu: return gelu_tanh_derivative(x);
    case UnaryOp::add_scalar: return A(1);
    case UnaryOp::mul_scalar: return s;
    case UnaryOp::pow_scalar: return s == A(0) ? A(0) : s * pow(x, s - A(1));
  }
  return A(0);
}

template <typename T>
__global__ void unary_kernel(UnaryOp op, const T* __restrict__ x, T* __restrict__ y, acc_t<T> s, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = from_acc<T>(apply_unary<acc_t<T>>(op, to_acc(x[i]), s));
}

// x or y may be null when the op's derivative does not need it; a missing y is recomputed from x.
template <typename G, typename X>
__global__ void unary_backward_kernel(UnaryOp op, const G* __restrict__ grad, const X* __restrict__ x,
                                      const X* __restrict__ y, G* __restrict__ dx, acc_t<X> s, int64_t n) {
  using A = acc_t<X>;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const A xv = x != nullptr ? to_acc(x[i]) : A(0);
    const A yv = y != nullptr ? to_acc(y[i]) : apply_unary<A>(op, xv, s);
    const A d = unary_derivative<A>(op, xv, yv, s);
    dx[i] = from_acc<G>(static_cast<acc_t<G>>(static_cast<A>(to_acc(grad[i])) * d));
  }
}

// dst = dst_scale * dst + alpha * src (axpy: dst_scale 1; scale: src null).
template <typename D, typename S>
__global__ void axpby_kernel(D* __restrict__ dst, const S* __restrict__ src, double alpha, double dst_scale, int64_t n) {
  using A = std::conditional_t<std::is_same_v<D, double> || std::is_same_v<S, double>, double, float>;
  const A a = static_cast<A>(alpha), b = static_cast<A>(dst_scale);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    A v = static_cast<A>(to_acc(dst[i]));
    v = src != nullptr ? v * b + a * static_cast<A>(to_acc(src[i])) : v * b;
    dst[i] = from_acc<D>(v);
  }
}

// y[i] = x[i] / (1 - p) when rng::uniform(seed, offset + i) >= p, else 0. One thread per Philox
// block of four counters (memory.cuh's uniform fill explains the layout).
template <typename T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, double p, uint64_t seed,
                               uint64_t offset) {
  using A = acc_t<T>;
  const A scale = p < 1.0 ? static_cast<A>(1.0 / (1.0 - p)) : A(0);
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
      const uint64_t i = counter - offset;
      y[i] = static_cast<double>(u) >= p ? from_acc<T>(to_acc(x[i]) * scale) : from_acc<T>(A(0));
    }
  }
}

// ---- launchers ----

template <typename T>
void launch_binary_contiguous(BinaryOp op, const T* a, const T* b, T* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  binary_contiguous_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(op, a, b, out, n);
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_binary_strided(BinaryOp op, const T* a, const T* b, T* out, const CoalescedLayout<3>& layout, int64_t n,
                           cudaStream_t stream) {
  if (n == 0) return;
  if (layout.fits_32bit) {
    binary_strided_kernel<T, uint32_t><<<grid_for(n), kThreads, 0, stream>>>(
        op, a, b, out, make_indexer<3, uint32_t>(layout), static_cast<uint32_t>(n));
  } else {
    binary_strided_kernel<T, int64_t><<<grid_for(n), kThreads, 0, stream>>>(op, a, b, out,
                                                                             make_indexer<3, int64_t>(layout), n);
  }
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_unary(UnaryOp op, const T* x, T* y, double scalar, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  unary_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(op, x, y, static_cast<acc_t<T>>(scalar), n);
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename G, typename X>
void launch_unary_backward(UnaryOp op, const G* grad, const X* x, const X* y, G* dx, double scalar, int64_t n,
                           cudaStream_t stream) {
  if (n == 0) return;
  unary_backward_kernel<G, X><<<grid_for(n), kThreads, 0, stream>>>(op, grad, x, y, dx, static_cast<acc_t<X>>(scalar), n);
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename D, typename S>
void launch_axpby(D* dst, const S* src, double alpha, double dst_scale, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  axpby_kernel<D, S><<<grid_for(n), kThreads, 0, stream>>>(dst, src, alpha, dst_scale, n);
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_dropout(const T* x, T* y, int64_t n, double p, uint64_t seed, uint64_t offset, cudaStream_t stream) {
  if (n == 0) return;
  dropout_kernel<T><<<grid_for((n + 3) / 4 + 1), kThreads, 0, stream>>>(x, y, n, p, seed, offset);
  ZT_CUDA_CHECK_LAUNCH();
}

}  // namespace zt::cuda
