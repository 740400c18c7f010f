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

// Vectors of V elements (Pack), then the last n % V elements one by one.
template <typename T, int V>
__global__ void binary_contiguous_kernel(BinaryOp op, const T* __restrict__ a, const T* __restrict__ b,
                                         T* __restrict__ out, int64_t n) {
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = first; i < n / V; i += step) {
    const Pack<T, V> pa = reinterpret_cast<const Pack<T, V>*>(a)[i], pb = reinterpret_cast<const Pack<T, V>*>(b)[i];
    Pack<T, V> po;
#pragma unroll
    for (int j = 0; j < V; ++j) po.v[j] = from_acc<T>(apply_binary<acc_t<T>>(op, to_acc(pa.v[j]), to_acc(pb.v[j])));
    reinterpret_cast<Pack<T, V>*>(out)[i] = po;
  }
  for (int64_t i = n / V * V + first; i < n; i += step)
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

// The same derivative through the hardware's tanh.approx (relative error about 2^-11), for bf16
// operands and gradients, whose rounding (2^-9) dwarfs it: the precise tanhf made the GeLU backward of
// GPT-2 124M's fc layer compute-bound (145 us for a 300 MB pass, measured on an H200).
__device__ __forceinline__ float gelu_tanh_derivative_fast(float x) {
  const float k = 0.7978845608028654f, c = 0.044715f;
  float t;
  asm("tanh.approx.f32 %0, %1;" : "=f"(t) : "f"(k * (x + c * x * x * x)));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * c * x * x);
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

template <typename T, int V>
__global__ void unary_kernel(UnaryOp op, const T* __restrict__ x, T* __restrict__ y, acc_t<T> s, int64_t n) {
  map_packs<T, T, V>(x, y, n, [=](T v) { return from_acc<T>(apply_unary<acc_t<T>>(op, to_acc(v), s)); });
}

// xv and yv are x and y as arithmetic values; a missing y (has_y false) is recomputed from x.
template <typename G, typename X>
__device__ __forceinline__ G unary_backward_element(UnaryOp op, G grad, acc_t<X> xv, acc_t<X> yv, bool has_y,
                                                    acc_t<X> s) {
  using A = acc_t<X>;
  // Only exp, sqrt and tanh write their derivative through y; the GeLU's alone costs two tanh
  // per element if y is recomputed for nothing (measured: 200 us for GPT-2 124M's fc layer).
  const bool uses_y = op == UnaryOp::exp || op == UnaryOp::sqrt || op == UnaryOp::tanh;
  const A y = has_y || !uses_y ? yv : apply_unary<A>(op, xv, s);
  A d;
  if constexpr (std::is_same_v<X, bf16> && std::is_same_v<G, bf16>) {
    d = op == UnaryOp::gelu ? gelu_tanh_derivative_fast(xv) : unary_derivative<A>(op, xv, y, s);
  } else {
    d = unary_derivative<A>(op, xv, y, s);
  }
  return from_acc<G>(static_cast<acc_t<G>>(static_cast<A>(to_acc(grad)) * d));
}

// x or y may be null when the op's derivative does not need it; a missing y is recomputed from x.
// Values, not pointers into the Packs, reach the element function: a pointer into a register
// array would put it in local memory.
template <typename G, typename X, int V>
__global__ void unary_backward_kernel(UnaryOp op, const G* __restrict__ grad, const X* __restrict__ x,
                                      const X* __restrict__ y, G* __restrict__ dx, acc_t<X> s, int64_t n) {
  using A = acc_t<X>;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const bool has_x = x != nullptr, has_y = y != nullptr;
  for (int64_t i = first; i < n / V; i += step) {
    const Pack<G, V> pg = reinterpret_cast<const Pack<G, V>*>(grad)[i];
    Pack<X, V> px{}, py{};
    if (has_x) px = reinterpret_cast<const Pack<X, V>*>(x)[i];
    if (has_y) py = reinterpret_cast<const Pack<X, V>*>(y)[i];
    Pack<G, V> pd;
#pragma unroll
    for (int j = 0; j < V; ++j)
      pd.v[j] = unary_backward_element<G, X>(op, pg.v[j], has_x ? A(to_acc(px.v[j])) : A(0),
                                             has_y ? A(to_acc(py.v[j])) : A(0), has_y, s);
    reinterpret_cast<Pack<G, V>*>(dx)[i] = pd;
  }
  for (int64_t i = n / V * V + first; i < n; i += step)
    dx[i] = unary_backward_element<G, X>(op, grad[i], has_x ? A(to_acc(x[i])) : A(0), has_y ? A(to_acc(y[i])) : A(0),
                                         has_y, s);
}

// dst = dst_scale * dst + alpha * src (axpy: dst_scale 1; scale: src null).
template <typename D, typename S>
__device__ __forceinline__ D axpby_element(D dst, S src, bool has_src, double alpha, double dst_scale) {
  using A = std::conditional_t<std::is_same_v<D, double> || std::is_same_v<S, double>, double, float>;
  const A v = static_cast<A>(to_acc(dst));
  return from_acc<D>(has_src ? v * static_cast<A>(dst_scale) + static_cast<A>(alpha) * static_cast<A>(to_acc(src))
                             : v * static_cast<A>(dst_scale));
}

template <typename D, typename S, int V>
__global__ void axpby_kernel(D* __restrict__ dst, const S* __restrict__ src, double alpha, double dst_scale, int64_t n) {
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = first; i < n / V; i += step) {
    Pack<D, V> pd = reinterpret_cast<const Pack<D, V>*>(dst)[i];
    Pack<S, V> ps{};
    if (src != nullptr) ps = reinterpret_cast<const Pack<S, V>*>(src)[i];
#pragma unroll
    for (int j = 0; j < V; ++j) pd.v[j] = axpby_element<D, S>(pd.v[j], ps.v[j], src != nullptr, alpha, dst_scale);
    reinterpret_cast<Pack<D, V>*>(dst)[i] = pd;
  }
  for (int64_t i = n / V * V + first; i < n; i += step)
    dst[i] = axpby_element<D, S>(dst[i], src != nullptr ? src[i] : S{}, src != nullptr, alpha, dst_scale);
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
  dispatch_vector_width(vector_width({{a, sizeof(T)}, {b, sizeof(T)}, {out, sizeof(T)}}), [&]<int V>() {
    binary_contiguous_kernel<T, V><<<grid_for(std::max<int64_t>(n / V, 1)), kThreads, 0, stream>>>(op, a, b, out, n);
  });
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
  dispatch_vector_width(vector_width({{x, sizeof(T)}, {y, sizeof(T)}}), [&]<int V>() {
    unary_kernel<T, V><<<grid_for(std::max<int64_t>(n / V, 1)), kThreads, 0, stream>>>(op, x, y,
                                                                                     static_cast<acc_t<T>>(scalar), n);
  });
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename G, typename X>
void launch_unary_backward(UnaryOp op, const G* grad, const X* x, const X* y, G* dx, double scalar, int64_t n,
                           cudaStream_t stream) {
  if (n == 0) return;
  const int width = vector_width({{grad, sizeof(G)}, {x, sizeof(X)}, {y, sizeof(X)}, {dx, sizeof(G)}});
  dispatch_vector_width(width, [&]<int V>() {
    unary_backward_kernel<G, X, V><<<grid_for(std::max<int64_t>(n / V, 1)), kThreads, 0, stream>>>(
        op, grad, x, y, dx, static_cast<acc_t<X>>(scalar), n);
  });
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename D, typename S>
void launch_axpby(D* dst, const S* src, double alpha, double dst_scale, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_vector_width(vector_width({{dst, sizeof(D)}, {src, sizeof(S)}}), [&]<int V>() {
    axpby_kernel<D, S, V><<<grid_for(std::max<int64_t>(n / V, 1)), kThreads, 0, stream>>>(dst, src, alpha, dst_scale, n);
  });
  ZT_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_dropout(const T* x, T* y, int64_t n, double p, uint64_t seed, uint64_t offset, cudaStream_t stream) {
  if (n == 0) return;
  dropout_kernel<T><<<grid_for((n + 3) / 4 + 1), kThreads, 0, stream>>>(x, y, n, p, seed, offset);
  ZT_CUDA_CHECK_LAUNCH();
}

}  // namespace zt::cuda
