// CPU kernels: layernorm and rmsnorm over the last dim of x [rows, C], fused forward and backward.
//
// The forward saves the per-row statistics (mean and rstd = 1 / sqrt(var + eps); rstd only for
// rmsnorm) in the compute type: f32 for f32/bf16/f16 inputs, f64 for f64 (f32 statistics would
// cap the f64 gradient checks at f32 precision). The backward reuses them instead of recomputing.
//
// Backward, with xhat = (x - mean) * rstd (layernorm) or x * rstd (rmsnorm) and g = dy * w:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))      (rmsnorm drops the mean(g) term)
//   dweight = sum over rows of dy * xhat,  dbias = sum over rows of dy
// The column sums are taken per fixed chunk of rows and the chunks added in order, so the result
// does not depend on the number of threads.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace zt {

namespace {

constexpr int64_t kMaxRowChunks = 64;

enum class NormKind : uint8_t { layer, rms };

void check_rows(const char* api, const Tensor& x, const Tensor& weight) {
  ZT_CHECK(x.dim() == 2, api, "x must be [rows, C], got ", x.describe());
  ZT_CHECK(x.device().is_cpu(), api, "cpu kernel got ", x.describe());
  ZT_CHECK(x.is_contiguous() && weight.is_contiguous(), api, "inputs must be contiguous: x ", x.describe(),
           ", weight ", weight.describe());
  ZT_CHECK(weight.dim() == 1 && weight.size(0) == x.size(1) && weight.dtype() == x.dtype(), api, "weight ",
           weight.describe(), " does not match x ", x.describe());
}

template <typename T>
LayerNormResult norm_forward(NormKind kind, const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  using C = typename ComputeType<T>::type;
  const int64_t rows = x.size(0), cols = x.size(1);
  LayerNormResult r;
  r.y = empty(x.shape(), x.dtype(), x.device());
  r.rstd = empty({rows}, dtype_of<C>(), x.device());
  if (kind == NormKind::layer) r.mean = empty({rows}, dtype_of<C>(), x.device());
  const T* xp = static_cast<const T*>(x.raw_data());
  const T* wp = static_cast<const T*>(weight.raw_data());
  const T* bp = bias.defined() ? static_cast<const T*>(bias.raw_data()) : nullptr;
  T* yp = static_cast<T*>(r.y.raw_data());
  C* mean_p = r.mean.defined() ? static_cast<C*>(r.mean.raw_data()) : nullptr;
  C* rstd_p = static_cast<C*>(r.rstd.raw_data());
#pragma omp parallel for schedule(static) if (rows * cols > 16384)
  for (int64_t i = 0; i < rows; ++i) {
    const T* xr = xp + i * cols;
    T* yr = yp + i * cols;
    C mu = 0;
    if (kind == NormKind::layer) {
      for (int64_t j = 0; j < cols; ++j) mu += to_compute(xr[j]);
      mu /= static_cast<C>(cols);
    }
    C sq = 0;  // two passes: the variance of (x - mean), not E[x^2] - mean^2, which cancels badly
    for (int64_t j = 0; j < cols; ++j) {
      C d = to_compute(xr[j]) - mu;
      sq += d * d;
    }
    const C rstd = C(1) / std::sqrt(sq / static_cast<C>(cols) + static_cast<C>(eps));
    for (int64_t j = 0; j < cols; ++j) {
      C v = (to_compute(xr[j]) - mu) * rstd * to_compute(wp[j]);
      if (bp) v += to_compute(bp[j]);
      yr[j] = from_compute<T>(v);
    }
    if (mean_p) mean_p[i] = mu;
    rstd_p[i] = rstd;
  }
  return r;
}

template <typename T>
NormGrads norm_backward(NormKind kind, const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                        const Tensor& rstd, bool has_bias) {
  using C = typename ComputeType<T>::type;
  const int64_t rows = x.size(0), cols = x.size(1);
  const T* dyp = static_cast<const T*>(dy.raw_data());
  const T* xp = static_cast<const T*>(x.raw_data());
  const T* wp = static_cast<const T*>(weight.raw_data());
  const C* mean_p = kind == NormKind::layer ? static_cast<const C*>(mean.raw_data()) : nullptr;
  const C* rstd_p = static_cast<const C*>(rstd.raw_data());
  NormGrads g;
  g.dx = empty(x.shape(), x.dtype(), x.device());
  T* dxp = static_cast<T*>(g.dx.raw_data());

  const int64_t chunks = std::max<int64_t>(1, std::min(rows, kMaxRowChunks));
  const int64_t chunk_rows = (rows + chunks - 1) / chunks;
  std::vector<C> dw_part(static_cast<size_t>(chunks * cols), C(0));
  std::vector<C> db_part(has_bias ? static_cast<size_t>(chunks * cols) : 0, C(0));
#pragma omp parallel for schedule(static) if (rows * cols > 16384)
  for (int64_t c = 0; c < chunks; ++c) {
    C* dw = dw_part.data() + c * cols;
    C* db = has_bias ? db_part.data() + c * cols : nullptr;
    const int64_t end = std::min(rows, (c + 1) * chunk_rows);
    for (int64_t i = c * chunk_rows; i < end; ++i) {
      const T* xr = xp + i * cols;
      const T* dyr = dyp + i * cols;
      T* dxr = dxp + i * cols;
      const C mu = mean_p ? mean_p[i] : C(0), rs = rstd_p[i];
      C sum_g = 0, sum_gx = 0;
      for (int64_t j = 0; j < cols; ++j) {
        const C d = to_compute(dyr[j]);
        const C xhat = (to_compute(xr[j]) - mu) * rs;
        const C gj = d * to_compute(wp[j]);
        sum_g += gj;
        sum_gx += gj * xhat;
        dw[j] += d * xhat;
        if (db) db[j] += d;
      }
      const C mean_g = kind == NormKind::layer ? sum_g / static_cast<C>(cols) : C(0);
      const C mean_gx = sum_gx / static_cast<C>(cols);
      for (int64_t j = 0; j < cols; ++j) {
        const C xhat = (to_compute(xr[j]) - mu) * rs;
        const C gj = to_compute(dyr[j]) * to_compute(wp[j]);
        dxr[j] = from_compute<T>(rs * (gj - mean_g - xhat * mean_gx));
      }
    }
  }

  g.dweight = empty({cols}, x.dtype(), x.device());
  if (has_bias) g.dbias = empty({cols}, x.dtype(), x.device());
  T* dwp = static_cast<T*>(g.dweight.raw_data());
  T* dbp = has_bias ? static_cast<T*>(g.dbias.raw_data()) : nullptr;
#pragma omp parallel for schedule(static) if (chunks * cols > 65536)
  for (int64_t j = 0; j < cols; ++j) {
    C w = 0, b = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      w += dw_part[static_cast<size_t>(c * cols + j)];
      if (dbp) b += db_part[static_cast<size_t>(c * cols + j)];
    }
    dwp[j] = from_compute<T>(w);
    if (dbp) dbp[j] = from_compute<T>(b);
  }
  return g;
}

void check_backward(const char* api, const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& stat) {
  check_rows(api, x, weight);
  ZT_CHECK(dy.shape() == x.shape() && dy.dtype() == x.dtype() && dy.is_contiguous(), api, "dy ", dy.describe(),
           " must be contiguous and match x ", x.describe());
  const DType stat_dtype = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  ZT_CHECK(stat.defined() && stat.dim() == 1 && stat.size(0) == x.size(0) && stat.dtype() == stat_dtype &&
               stat.is_contiguous(),
           api, "saved statistics ", stat.describe(), " do not match x ", x.describe(), " (want [",
           x.size(0), "] ", dtype_name(stat_dtype), ")");
}

}  // namespace

LayerNormResult CpuBackend::layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) const {
  check_rows("layernorm", x, weight);
  if (bias.defined())
    ZT_CHECK(bias.shape() == weight.shape() && bias.dtype() == x.dtype() && bias.is_contiguous(), "layernorm",
             "bias ", bias.describe(), " does not match weight ", weight.describe());
  return dispatch_float(x.dtype(), "layernorm",
                        [&]<typename T>() { return norm_forward<T>(NormKind::layer, x, weight, bias, eps); });
}

NormGrads CpuBackend::layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                         const Tensor& rstd, bool has_bias) const {
  check_backward("layernorm_backward", dy, x, weight, mean);
  check_backward("layernorm_backward", dy, x, weight, rstd);
  return dispatch_float(x.dtype(), "layernorm_backward", [&]<typename T>() {
    return norm_backward<T>(NormKind::layer, dy, x, weight, mean, rstd, has_bias);
  });
}

LayerNormResult CpuBackend::rmsnorm(const Tensor& x, const Tensor& weight, double eps) const {
  check_rows("rmsnorm", x, weight);
  return dispatch_float(x.dtype(), "rmsnorm",
                        [&]<typename T>() { return norm_forward<T>(NormKind::rms, x, weight, Tensor(), eps); });
}

NormGrads CpuBackend::rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                       const Tensor& rstd) const {
  check_backward("rmsnorm_backward", dy, x, weight, rstd);
  return dispatch_float(x.dtype(), "rmsnorm_backward", [&]<typename T>() {
    return norm_backward<T>(NormKind::rms, dy, x, weight, Tensor(), rstd, false);
  });
}

}  // namespace zt
