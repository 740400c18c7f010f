// Device-side building blocks shared by the kernel families: element conversions that give the
// same bits as core/dtype.h's host conversions, 16-byte packs for vectorised access, warp and
// block reductions, strided indexing, launch sizing and dtype dispatch for GPU kernels.
//
// Why our own conversions: bf16/f16 are zt::bf16/zt::f16 (16-bit patterns) on both sides, so a
// kernel reads exactly the bytes the CPU wrote, and rounding here mirrors the host's in integer
// arithmetic (round to nearest even, f64 through round-to-odd f32, the host's NaN patterns), so
// CPU and GPU casts agree bit for bit.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "kernels/cuda/runtime.h"

namespace zt::cuda {

// ---- element types -------------------------------------------------------------------------------

// The arithmetic type of an element type: f32 for the 16-bit floats, the type itself otherwise.
template <typename T>
struct AccType {
  using type = T;
};
template <>
struct AccType<bf16> {
  using type = float;
};
template <>
struct AccType<f16> {
  using type = float;
};
template <typename T>
using acc_t = typename AccType<T>::type;

__device__ __forceinline__ float to_acc(bf16 v) { return __uint_as_float(static_cast<uint32_t>(v.bits) << 16); }
__device__ __forceinline__ float to_acc(f16 v) { return __half2float(__ushort_as_half(v.bits)); }
template <typename T>
__device__ __forceinline__ T to_acc(T v) {
  return v;
}

__device__ __forceinline__ bf16 float_to_bf16_device(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return bf16{static_cast<uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even, as core/dtype.h
  return bf16{static_cast<uint16_t>(u >> 16)};
}

// The host's algorithm (core/base.cpp's float_to_f16) step for step, so every input, NaN and
// subnormals included, gives the host's bits.
__device__ __forceinline__ f16 float_to_f16_device(float f) {
  const uint32_t u = __float_as_uint(f);
  const uint32_t sign = (u >> 16) & 0x8000u, abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) return f16{static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u))};
  if (abs >= 0x477ff000u) return f16{static_cast<uint16_t>(sign | 0x7c00u)};  // overflow to inf
  if (abs < 0x38800000u) {  // half subnormal or zero: the unit is 2^-24, round to nearest even
    const uint32_t m = static_cast<uint32_t>(rintf(__uint_as_float(abs) * 16777216.0f));
    return f16{static_cast<uint16_t>(sign | m)};
  }
  const uint32_t mant = abs & 0x7fffffu, exp = (abs >> 23) - 127 + 15;
  uint32_t half = exp << 10 | mant >> 13;
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
  return f16{static_cast<uint16_t>(sign | half)};
}

// f64 to f32 rounding to odd (truncate, then set the last bit when inexact), as core/dtype.h does
// before a second rounding to bf16 or f16, so that the two roundings give the correctly rounded
// result of the f64 value. Other types convert normally.
template <typename A>
__device__ __forceinline__ float to_float_round_to_odd_device(A v) {
  float f = static_cast<float>(v);
  if constexpr (std::is_same_v<A, double>) {
    if (static_cast<double>(f) != v && isfinite(f)) {
      if (fabs(static_cast<double>(f)) > fabs(v)) f = nextafterf(f, 0.0f);
      f = __uint_as_float(__float_as_uint(f) | 1u);
    }
  }
  return f;
}

// Element from an arithmetic value, as the host's from_compute.
template <typename T, typename A>
__device__ __forceinline__ T from_acc(A v) {
  if constexpr (std::is_same_v<T, bf16>) {
    return float_to_bf16_device(to_float_round_to_odd_device(v));
  } else if constexpr (std::is_same_v<T, f16>) {
    return float_to_f16_device(to_float_round_to_odd_device(v));
  } else {
    return static_cast<T>(v);
  }
}

// Loads an element as f32 (f64 stays f64 via acc_t; use this where the math is f32 anyway).
template <typename T>
__device__ __forceinline__ float load_float(const T* p) {
  return static_cast<float>(to_acc(*p));
}

// Reports bad input found by a kernel (the first report wins). Note [Asynchronous kernel errors].
__device__ __forceinline__ void report_kernel_error(DeviceErrorSink sink, DeviceErrorCode code, int64_t value,
                                                    int64_t bound) {
  if (atomicCAS(sink.claim, 0, 1) == 0) {
    sink.record->value = value;
    sink.record->bound = bound;
    sink.record->code = static_cast<int32_t>(code);
    __threadfence_system();
  }
}

// ---- 16-byte packs -------------------------------------------------------------------------------

// V elements of T moved as one access (16 bytes for V = 16 / sizeof(T): LDG.128 / STG.128).
// Memory-bound kernels reach the chip's bandwidth only with wide loads and stores, about three
// times what 2-byte accesses give (measured on an H200: a bf16 add at 1.25 TB/s with scalar ones).
// Kernels mixing element types use one V for all their operands (vector_width below).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  static constexpr int kSize = V;
  T v[V];
};

// dst[i] = f(src[i]) for i < n in a grid-stride loop, V elements per load and store (src and dst
// V-element aligned), the tail past the last whole pack element by element.
template <typename S, typename D, int V, typename F>
__device__ __forceinline__ void map_packs(const S* __restrict__ src, D* __restrict__ dst, int64_t n, F f) {
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = first; i < n / V; i += step) {
    const Pack<S, V> ps = reinterpret_cast<const Pack<S, V>*>(src)[i];
    Pack<D, V> pd;
#pragma unroll
    for (int j = 0; j < V; ++j) pd.v[j] = f(ps.v[j]);
    reinterpret_cast<Pack<D, V>*>(dst)[i] = pd;
  }
  for (int64_t i = n / V * V + first; i < n; i += step) dst[i] = f(src[i]);
}

// Sixteen bytes of T.
template <typename T>
using Pack16 = Pack<T, static_cast<int>(16 / sizeof(T))>;

template <typename T>
__device__ __forceinline__ Pack16<T> load_pack(const T* p) {
  Pack16<T> out;
  *reinterpret_cast<int4*>(&out) = *reinterpret_cast<const int4*>(p);
  return out;
}

// Streaming load: data read once, kept out of L1 (the logits row of the classifier).
template <typename T>
__device__ __forceinline__ Pack16<T> load_pack_streaming(const T* p) {
  Pack16<T> out;
  *reinterpret_cast<int4*>(&out) = __ldcs(reinterpret_cast<const int4*>(p));
  return out;
}

template <typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack16<T>& v) {
  *reinterpret_cast<int4*>(p) = *reinterpret_cast<const int4*>(&v);
}

// Whether `count` elements from every pointer can be walked in 16-byte packs.
inline bool pack_aligned(int64_t count, size_t elem_size, std::initializer_list<const void*> ptrs) {
  if ((count * static_cast<int64_t>(elem_size)) % 16 != 0) return false;
  for (const void* p : ptrs)
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// ---- reductions ----------------------------------------------------------------------------------

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename A>
__device__ __forceinline__ A warp_max(A v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over the block, returned to every thread. `scratch` holds 32 values in shared memory; the
// trailing barrier lets the caller reuse it at once. blockDim.x must be a multiple of 32.
template <typename A>
__device__ __forceinline__ A block_sum(A v, A* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  A total = lane < warps ? scratch[lane] : A(0);
  total = warp_sum(total);
  __syncthreads();
  return total;
}

template <typename A>
__device__ __forceinline__ A block_max(A v, A* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_max(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  A total = lane < warps ? scratch[lane] : scratch[0];
  total = warp_max(total);
  __syncthreads();
  return total;
}

// Online softmax state: running maximum and sum of exp(x - max). Combining two states is
// associative, so threads fold their own elements and then merge across the warp or block.
struct SoftmaxState {
  float max;
  float sum;
};

__device__ __forceinline__ SoftmaxState softmax_merge(SoftmaxState a, SoftmaxState b) {
  const float m = fmaxf(a.max, b.max);
  if (m == -INFINITY) return {m, 0.0f};
  return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}

__device__ __forceinline__ SoftmaxState softmax_add(SoftmaxState s, float x) {
  if (x == -INFINITY) return s;  // contributes exp(-inf) = 0 (and -inf - -inf would be NaN)
  if (x > s.max) {
    s.sum = s.sum * expf(s.max - x) + 1.0f;
    s.max = x;
  } else {
    s.sum += expf(x - s.max);
  }
  return s;
}

__device__ __forceinline__ SoftmaxState warp_softmax_merge(SoftmaxState s) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    SoftmaxState o{__shfl_xor_sync(0xffffffffu, s.max, offset), __shfl_xor_sync(0xffffffffu, s.sum, offset)};
    s = softmax_merge(s, o);
  }
  return s;
}

// Block-wide merge; `scratch` holds 32 states in shared memory.
__device__ __forceinline__ SoftmaxState block_softmax_merge(SoftmaxState s, SoftmaxState* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  s = warp_softmax_merge(s);
  if (lane == 0) scratch[warp] = s;
  __syncthreads();
  SoftmaxState t = lane < warps ? scratch[lane] : SoftmaxState{-INFINITY, 0.0f};
  t = warp_softmax_merge(t);
  __syncthreads();
  return t;
}

// ---- strided indexing ----------------------------------------------------------------------------

inline constexpr int kMaxDims = 12;

// Maps a row-major linear index over `sizes` to an element offset in each of N operands.
// Index is uint32_t when every offset fits (far cheaper division), else int64_t.
template <int N, typename Index>
struct StridedIndexer {
  int ndim = 0;
  Index sizes[kMaxDims];
  Index strides[N][kMaxDims];

  __device__ __forceinline__ void offsets(Index linear, Index (&out)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) out[k] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const Index i = linear % sizes[d];
      linear /= sizes[d];
#pragma unroll
      for (int k = 0; k < N; ++k) out[k] += i * strides[k][d];
    }
  }
};

// A shape with one stride list per operand, with size-1 dims dropped and dims merged where every
// operand is contiguous across them (fewer divisions per element).
template <int N>
struct CoalescedLayout {
  int ndim = 0;
  int64_t sizes[kMaxDims];
  int64_t strides[N][kMaxDims];
  bool fits_32bit = true;  // every linear index and offset fits in uint32_t
};

template <int N>
CoalescedLayout<N> coalesce(const Shape& shape, const std::array<const Shape*, N>& strides) {
  CoalescedLayout<N> out;
  int64_t numel = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    numel *= shape[d];
    if (shape[d] == 1) continue;
    const int nd = out.ndim;
    bool merge = nd > 0;
    for (int k = 0; k < N && merge; ++k)
      merge = out.strides[k][nd - 1] == (*strides[k])[d] * shape[d];
    if (merge) {
      out.sizes[nd - 1] *= shape[d];
      for (int k = 0; k < N; ++k) out.strides[k][nd - 1] = (*strides[k])[d];
      continue;
    }
    ZT_CHECK(nd < kMaxDims, "cuda", "tensor has more than ", kMaxDims, " non-trivial dims after merging: ",
             shape_str(shape));
    out.sizes[nd] = shape[d];
    for (int k = 0; k < N; ++k) out.strides[k][nd] = (*strides[k])[d];
    out.ndim = nd + 1;
  }
  constexpr int64_t kLimit = int64_t{1} << 31;
  out.fits_32bit = numel < kLimit;
  for (int k = 0; k < N; ++k) {
    int64_t lo = 0, hi = 0;
    for (int d = 0; d < out.ndim; ++d) {
      const int64_t span = (out.sizes[d] - 1) * out.strides[k][d];
      (span < 0 ? lo : hi) += span;
    }
    if (lo < 0 || hi >= kLimit) out.fits_32bit = false;
  }
  return out;
}

template <int N, typename Index>
StridedIndexer<N, Index> make_indexer(const CoalescedLayout<N>& layout) {
  StridedIndexer<N, Index> ix;
  ix.ndim = layout.ndim;
  for (int d = 0; d < layout.ndim; ++d) {
    ix.sizes[d] = static_cast<Index>(layout.sizes[d]);
    for (int k = 0; k < N; ++k) ix.strides[k][d] = static_cast<Index>(layout.strides[k][d]);
  }
  return ix;
}

// ---- vectorised access ---------------------------------------------------------------------------

// The widest V (elements, a power of two up to 16 bytes of the widest type) for which every
// (pointer, element size) given is V-element aligned, so the kernel can use Pack<T, V>; 1 when
// none fits. Null pointers (optional operands) do not count.
inline int vector_width(std::initializer_list<std::pair<const void*, size_t>> operands) {
  size_t widest = 1;
  for (const auto& [p, size] : operands) widest = std::max(widest, size);
  int v = static_cast<int>(16 / widest);
  for (; v > 1; v /= 2) {
    bool ok = true;
    for (const auto& [p, size] : operands)
      ok = ok && (p == nullptr || reinterpret_cast<uintptr_t>(p) % (size * static_cast<size_t>(v)) == 0);
    if (ok) break;
  }
  return std::max(v, 1);
}

// Calls f.template operator()<V>() with V a compile-time constant equal to the runtime width.
template <typename F>
void dispatch_vector_width(int width, F&& f) {
  switch (width) {
    case 16: f.template operator()<16>(); break;
    case 8: f.template operator()<8>(); break;
    case 4: f.template operator()<4>(); break;
    case 2: f.template operator()<2>(); break;
    default: f.template operator()<1>(); break;
  }
}

// ---- launch sizing -------------------------------------------------------------------------------

inline constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items: enough to fill the GPU several times over.
inline unsigned grid_for(int64_t n, int threads = kThreads, int64_t max_blocks = 65536) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, max_blocks));
}

inline int round_up(int v, int multiple) { return (v + multiple - 1) / multiple * multiple; }

// ---- dtype dispatch for GPU kernels --------------------------------------------------------------

// Like dispatch_float, for kernels written for the GPU's training types only.
template <typename F>
decltype(auto) dispatch_gpu_float(DType dtype, const char* api, F&& f) {
  switch (dtype) {
    case DType::f32: return f.template operator()<float>();
    case DType::bf16: return f.template operator()<bf16>();
    case DType::f16: return f.template operator()<f16>();
    default: break;
  }
  throw_dtype_error(api, dtype, "f32, bf16 or f16 (f64 runs on the CPU backend only for this kernel)");
}

// Floating types and the index types (i32, i64) for arithmetic kernels.
template <typename F>
decltype(auto) dispatch_numeric(DType dtype, const char* api, F&& f) {
  switch (dtype) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
    case DType::bf16: return f.template operator()<bf16>();
    case DType::f16: return f.template operator()<f16>();
    case DType::i32: return f.template operator()<int32_t>();
    case DType::i64: return f.template operator()<int64_t>();
    default: break;
  }
  throw_dtype_error(api, dtype, "f32, f64, bf16, f16, i32 or i64");
}

// The device index of a CUDA tensor, with a check that it is one.
inline int cuda_device_of(const char* api, const Tensor& t) {
  ZT_CHECK(t.defined(), api, "got an undefined tensor");
  ZT_CHECK(t.device().is_cuda(), api, "the CUDA backend got a tensor on ", t.device().str(), ": ", t.describe());
  return t.device().index;
}

inline void check_same_device(const char* api, const Tensor& a, const Tensor& b) {
  ZT_CHECK(a.device() == b.device(), api, "tensors are on different devices: ", a.describe(), " and ",
           b.describe());
}

inline void check_contiguous(const char* api, const Tensor& t, const char* what) {
  ZT_CHECK(t.is_contiguous(), api, what, " must be contiguous, got ", t.describe(), " with strides ",
           shape_str(t.strides()));
}

}  // namespace zt::cuda
