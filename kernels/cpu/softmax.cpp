// CPU kernels: softmax and log_softmax over the last dim of [rows, C], and their backward.
// Each row is independent; rows run in parallel and accumulate in f32 (f64 for f64). The maximum
// is subtracted first so exp never overflows.
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_backend.h"

namespace zt {

namespace {

void check_rows(const char* kernel, const Tensor& x) {
  ZT_CHECK(x.device().is_cpu() && x.is_contiguous() && x.dim() == 2, kernel,
           "needs a contiguous cpu [rows, C] tensor, got ", x.describe());
}

template <typename F>
void for_rows(int64_t rows, int64_t cols, F&& fn) {
#pragma omp parallel for schedule(static) if (rows * cols > 16384)
  for (int64_t r = 0; r < rows; ++r) fn(r);
}

Tensor softmax_forward(const char* kernel, const Tensor& x, bool log) {
  check_rows(kernel, x);
  Tensor y = empty(x.shape(), x.dtype(), x.device());
  const int64_t rows = x.shape()[0], c = x.shape()[1];
  if (c == 0) return y;
  dispatch_float(x.dtype(), kernel, [&]<typename T>() {
    using C = typename ComputeType<T>::type;
    const T* px = static_cast<const T*>(x.raw_data());
    T* py = static_cast<T*>(y.raw_data());
    for_rows(rows, c, [&](int64_t r) {
      const T* in = px + r * c;
      T* out = py + r * c;
      C m = -std::numeric_limits<C>::infinity();
      for (int64_t i = 0; i < c; ++i) m = std::max(m, to_compute(in[i]));
      if (m == -std::numeric_limits<C>::infinity()) m = 0;  // an all -inf row: avoid inf - inf
      C total = 0;
      for (int64_t i = 0; i < c; ++i) total += std::exp(to_compute(in[i]) - m);
      if (log) {
        // (x - m) - log(total), not x - (m + log(total)): the latter loses the small log term's
        // precision when |m| is large.
        const C log_total = std::log(total);
        for (int64_t i = 0; i < c; ++i) out[i] = from_compute<T>((to_compute(in[i]) - m) - log_total);
      } else {
        const C inv = C{1} / total;
        for (int64_t i = 0; i < c; ++i) out[i] = from_compute<T>(std::exp(to_compute(in[i]) - m) * inv);
      }
    });
  });
  return y;
}

// softmax: dx = y (dy - sum(dy y)); log_softmax: dx = dy - exp(y) sum(dy).
Tensor softmax_backward_impl(const char* kernel, const Tensor& dy, const Tensor& y, bool log) {
  check_rows(kernel, dy);
  check_rows(kernel, y);
  ZT_CHECK(dy.shape() == y.shape() && dy.dtype() == y.dtype(), kernel, "gradient ", dy.describe(),
           " does not match the output ", y.describe());
  Tensor dx = empty(y.shape(), y.dtype(), y.device());
  const int64_t rows = y.shape()[0], c = y.shape()[1];
  dispatch_float(y.dtype(), kernel, [&]<typename T>() {
    using C = typename ComputeType<T>::type;
    const T* pg = static_cast<const T*>(dy.raw_data());
    const T* py = static_cast<const T*>(y.raw_data());
    T* pd = static_cast<T*>(dx.raw_data());
    for_rows(rows, c, [&](int64_t r) {
      const T* g = pg + r * c;
      const T* yr = py + r * c;
      T* out = pd + r * c;
      C dot = 0;
      for (int64_t i = 0; i < c; ++i) dot += log ? to_compute(g[i]) : to_compute(g[i]) * to_compute(yr[i]);
      for (int64_t i = 0; i < c; ++i) {
        C yi = to_compute(yr[i]), gi = to_compute(g[i]);
        out[i] = from_compute<T>(log ? gi - std::exp(yi) * dot : yi * (gi - dot));
      }
    });
  });
  return dx;
}

}  // namespace

Tensor CpuBackend::softmax(const Tensor& x) const { return softmax_forward("softmax", x, false); }

Tensor CpuBackend::softmax_backward(const Tensor& grad_y, const Tensor& y) const {
  return softmax_backward_impl("softmax_backward", grad_y, y, false);
}

Tensor CpuBackend::log_softmax(const Tensor& x) const { return softmax_forward("log_softmax", x, true); }

Tensor CpuBackend::log_softmax_backward(const Tensor& grad_y, const Tensor& y) const {
  return softmax_backward_impl("log_softmax_backward", grad_y, y, true);
}

}  // namespace zt
