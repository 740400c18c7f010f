// CPU kernels: elementwise binary and unary ops, their derivatives, axpy/scale and dropout.
// Halves compute in f32, f64 in f64 (ComputeType). Loops are OpenMP-parallel above a size where
// threading pays off.
#include <cmath>

#include "core/rng.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/strided.h"

namespace zt {

namespace {

constexpr int64_t kParallelThreshold = 32768;

template <typename C>
inline C binary_apply(BinaryOp op, C a, C b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;
  }
  return C{};
}

// GPT-2's gelu: 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). Since 0.5 (1 + tanh(u)) =
// sigmoid(2u), it is computed as x * sigmoid(2u): no cancellation where tanh(u) is near -1, and
// exp is several times faster than tanh in libm.
template <typename C>
inline C gelu_sigmoid(C x) {
  const C k = static_cast<C>(0.7978845608028654), c = static_cast<C>(0.044715);
  return C{1} / (C{1} + std::exp(C{-2} * k * (x + c * x * x * x)));
}

template <typename C>
inline C gelu_forward(C x) {
  return x * gelu_sigmoid(x);
}

// d/dx [x s(2u)] = s + 2 x s (1 - s) du/dx, du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
template <typename C>
inline C gelu_derivative(C x) {
  const C k = static_cast<C>(0.7978845608028654), c = static_cast<C>(0.044715);
  const C s = gelu_sigmoid(x);
  return s + C{2} * x * s * (C{1} - s) * k * (C{1} + C{3} * c * x * x);
}

template <typename C>
inline C unary_apply(UnaryOp op, C x, C s) {
  switch (op) {
    case UnaryOp::neg: return -x;
    case UnaryOp::exp: return std::exp(x);
    case UnaryOp::log: return std::log(x);
    case UnaryOp::sqrt: return std::sqrt(x);
    case UnaryOp::tanh: return std::tanh(x);
    case UnaryOp::relu: return x > C{0} ? x : C{0};
    case UnaryOp::gelu: return gelu_forward(x);
    case UnaryOp::add_scalar: return x + s;
    case UnaryOp::mul_scalar: return x * s;
    case UnaryOp::pow_scalar: return std::pow(x, s);
  }
  return C{};
}

// f'(.) given x and/or y = f(x), per Note [Unary backward inputs] in core/ops/elementwise.cpp.
template <typename C>
inline C unary_derivative(UnaryOp op, C x, C y, C s) {
  switch (op) {
    case UnaryOp::neg: return C{-1};
    case UnaryOp::exp: return y;
    case UnaryOp::log: return C{1} / x;
    case UnaryOp::sqrt: return C{0.5} / y;
    case UnaryOp::tanh: return C{1} - y * y;
    case UnaryOp::relu: return x > C{0} ? C{1} : C{0};
    case UnaryOp::gelu: return gelu_derivative(x);
    case UnaryOp::add_scalar: return C{1};
    case UnaryOp::mul_scalar: return s;
    case UnaryOp::pow_scalar: return s == C{0} ? C{0} : s * std::pow(x, s - C{1});
  }
  return C{};
}

void check_contiguous_cpu(const char* kernel, const Tensor& t) {
  ZT_CHECK(t.device().is_cpu() && t.is_contiguous(), kernel, "needs a contiguous cpu tensor, got ", t.describe());
}

}  // namespace

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) const {
  ZT_CHECK(a.shape() == out.shape() && b.shape() == out.shape() && a.dtype() == out.dtype() && b.dtype() == out.dtype(),
           "binary", "operands ", a.describe(), " and ", b.describe(), " must match the output ", out.describe());
  check_contiguous_cpu("binary", out);
  dispatch_all(out.dtype(), "binary", [&]<typename T>() {
    using C = typename ComputeType<T>::type;
    const T* pa = static_cast<const T*>(a.storage()->data()) + a.offset();
    const T* pb = static_cast<const T*>(b.storage()->data()) + b.offset();
    T* po = static_cast<T*>(out.raw_data());
    const int64_t n = out.numel();
    if (a.is_contiguous() && b.is_contiguous()) {  // the common case: one flat, vectorisable loop
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
      for (int64_t i = 0; i < n; ++i) po[i] = from_compute<T>(binary_apply<C>(op, to_compute(pa[i]), to_compute(pb[i])));
      return;
    }
    cpu::for_each_row<3>(out.shape(), {&a.strides(), &b.strides(), &out.strides()},
                         [&](int64_t count, const std::array<int64_t, 3>& base, const std::array<int64_t, 3>& inner) {
                           const T* ra = pa + base[0];
                           const T* rb = pb + base[1];
                           T* ro = po + base[2];
                           for (int64_t i = 0; i < count; ++i)
                             ro[i] = from_compute<T>(
                                 binary_apply<C>(op, to_compute(ra[i * inner[0]]), to_compute(rb[i * inner[1]])));
                         });
  });
}

Tensor CpuBackend::unary(UnaryOp op, const Tensor& x, double scalar) const {
  check_contiguous_cpu("unary", x);
  Tensor out = empty(x.shape(), x.dtype(), x.device());
  dispatch_float(x.dtype(), "unary", [&]<typename T>() {
    using C = typename ComputeType<T>::type;
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    const C s = static_cast<C>(scalar);
    const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
    for (int64_t i = 0; i < n; ++i) po[i] = from_compute<T>(unary_apply<C>(op, to_compute(px[i]), s));
  });
  return out;
}

Tensor CpuBackend::unary_backward(UnaryOp op, const Tensor& grad_out, const Tensor& x, const Tensor& y,
                                  double scalar) const {
  check_contiguous_cpu("unary_backward", grad_out);
  for (const Tensor* t : {&x, &y}) {
    if (!t->defined()) continue;
    check_contiguous_cpu("unary_backward", *t);
    ZT_CHECK(t->shape() == grad_out.shape() && t->dtype() == grad_out.dtype(), "unary_backward", "saved tensor ",
             t->describe(), " does not match the gradient ", grad_out.describe());
  }
  Tensor out = empty(grad_out.shape(), grad_out.dtype(), grad_out.device());
  dispatch_float(grad_out.dtype(), "unary_backward", [&]<typename T>() {
    using C = typename ComputeType<T>::type;
    const T* pg = static_cast<const T*>(grad_out.raw_data());
    const T* px = x.defined() ? static_cast<const T*>(x.raw_data()) : nullptr;
    const T* py = y.defined() ? static_cast<const T*>(y.raw_data()) : nullptr;
    T* po = static_cast<T*>(out.raw_data());
    const C s = static_cast<C>(scalar);
    const int64_t n = grad_out.numel();
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
    for (int64_t i = 0; i < n; ++i) {
      C xv = px ? to_compute(px[i]) : C{0};
      C yv = py ? to_compute(py[i]) : C{0};
      po[i] = from_compute<T>(to_compute(pg[i]) * unary_derivative<C>(op, xv, yv, s));
    }
  });
  return out;
}

void CpuBackend::axpy(Tensor& dst, const Tensor& src, double alpha) const {
  check_contiguous_cpu("axpy", dst);
  check_contiguous_cpu("axpy", src);
  ZT_CHECK(dst.shape() == src.shape(), "axpy", "dst ", dst.describe(), " and src ", src.describe(), " must match");
  if (dst.dtype() != src.dtype()) {
    // A lower-precision src widened on the fly (16-bit gradients added into f32 host buffers):
    // one pass, no widened copy.
    ZT_CHECK(dst.dtype() == DType::f32 && is_half(src.dtype()), "axpy", "mixed dtypes need an f32 dst and a bf16/f16 "
             "src, got dst ", dst.describe(), ", src ", src.describe());
    dispatch_float(src.dtype(), "axpy", [&]<typename S>() {
      float* pd = dst.data<float>();
      const S* ps = static_cast<const S*>(src.raw_data());
      const float a = static_cast<float>(alpha);
      const int64_t n = dst.numel();
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
      for (int64_t i = 0; i < n; ++i) pd[i] += a * static_cast<float>(to_compute(ps[i]));
    });
    return;
  }
  dispatch_float(dst.dtype(), "axpy", [&]<typename T>() {
    using C = typename ComputeType<T>::type;
    T* pd = static_cast<T*>(dst.raw_data());
    const T* ps = static_cast<const T*>(src.raw_data());
    const C a = static_cast<C>(alpha);
    const int64_t n = dst.numel();
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
    for (int64_t i = 0; i < n; ++i) pd[i] = from_compute<T>(to_compute(pd[i]) + a * to_compute(ps[i]));
  });
}

void CpuBackend::scale(Tensor& dst, double s) const {
  check_contiguous_cpu("scale", dst);
  dispatch_float(dst.dtype(), "scale", [&]<typename T>() {
    using C = typename ComputeType<T>::type;
    T* pd = static_cast<T*>(dst.raw_data());
    const C c = static_cast<C>(s);
    const int64_t n = dst.numel();
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
    for (int64_t i = 0; i < n; ++i) pd[i] = from_compute<T>(to_compute(pd[i]) * c);
  });
}

Tensor CpuBackend::dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset) const {
  check_contiguous_cpu("dropout", x);
  Tensor out = empty(x.shape(), x.dtype(), x.device());
  dispatch_float(x.dtype(), "dropout", [&]<typename T>() {
    using C = typename ComputeType<T>::type;
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    const C keep_scale = p >= 1.0 ? C{0} : static_cast<C>(1.0 / (1.0 - p));
    const uint64_t n = static_cast<uint64_t>(x.numel());
    // One Philox call yields the words of four consecutive counters: walk whole blocks.
    const uint64_t first_block = offset >> 2, blocks = ((offset + n + 3) >> 2) - first_block;
#pragma omp parallel for schedule(static) if (n > static_cast<uint64_t>(kParallelThreshold) / 4)
    for (uint64_t b = 0; b < blocks; ++b) {
      const rng::Philox4x32 r = rng::philox(seed, first_block + b);
      for (uint64_t w = 0; w < 4; ++w) {
        const uint64_t counter = (first_block + b) * 4 + w;
        if (counter < offset || counter >= offset + n) continue;
        const uint64_t i = counter - offset;
        // The same 24-bit value as rng::uniform, exact in f32, so comparing with p in f64 is exact.
        const float u = static_cast<float>(r.v[w] >> 8) * (1.0f / 16777216.0f);
        po[i] = from_compute<T>(static_cast<double>(u) >= p ? to_compute(px[i]) * keep_scale : C{0});
      }
    }
  });
  return out;
}

}  // namespace zt
