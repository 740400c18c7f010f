// CPU kernels: fused log-softmax + negative log-likelihood over logits [N, V], and its backward.
//
// Columns at or past valid_vocab are vocabulary padding (V rounded up for fast matrix products):
// they take no part in the softmax and get zero gradient. Rows whose target is ignore_index have
// loss 0, lse 0 and zero gradient. The backward never materialises the softmax: each element is
// exp(logit - lse) computed where the gradient is written.
//
// Losses and lse are f32, or f64 for f64 logits (so the f64 gradient checks keep full precision).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace zt {

namespace {

void check_logits(const char* api, const Tensor& logits, const Tensor& targets, int64_t valid_vocab) {
  ZT_CHECK(logits.dim() == 2 && logits.is_contiguous() && logits.device().is_cpu(), api,
           "logits must be a contiguous [N, V] cpu tensor, got ", logits.describe());
  ZT_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0) && targets.is_contiguous() &&
               (targets.dtype() == DType::i32 || targets.dtype() == DType::i64),
           api, "targets must be contiguous i32 or i64 [", logits.size(0), "], got ", targets.describe(),
           " for logits ", logits.describe());
  ZT_CHECK(valid_vocab > 0 && valid_vocab <= logits.size(1), api, "valid_vocab ", valid_vocab,
           " must be in [1, V] for logits ", logits.describe());
}

// Targets as int64, each either ignore_index or in [0, valid_vocab). Checked before any parallel
// loop (an exception must not leave an OpenMP region).
std::vector<int64_t> read_targets(const char* api, const Tensor& targets, int64_t ignore_index, int64_t valid_vocab) {
  const int64_t n = targets.numel();
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    out[static_cast<size_t>(i)] = targets.dtype() == DType::i32 ? static_cast<const int32_t*>(targets.raw_data())[i]
                                                                : static_cast<const int64_t*>(targets.raw_data())[i];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = out[static_cast<size_t>(i)];
    ZT_CHECK(t == ignore_index || (t >= 0 && t < valid_vocab), api, "target ", t, " at row ", i,
             " is out of range [0, ", valid_vocab, ") and is not ignore_index ", ignore_index);
  }
  return out;
}

DType loss_dtype(DType logits) { return logits == DType::f64 ? DType::f64 : DType::f32; }

}  // namespace

CrossEntropyResult CpuBackend::cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                             int64_t valid_vocab) const {
  check_logits("cross_entropy", logits, targets, valid_vocab);
  const std::vector<int64_t> target = read_targets("cross_entropy", targets, ignore_index, valid_vocab);
  const int64_t rows = logits.size(0), cols = logits.size(1);
  CrossEntropyResult r;
  r.losses = empty({rows}, loss_dtype(logits.dtype()), logits.device());
  r.lse = empty({rows}, loss_dtype(logits.dtype()), logits.device());
  dispatch_float(logits.dtype(), "cross_entropy", [&]<typename T>() {
    using C = typename ComputeType<T>::type;
    const T* x = static_cast<const T*>(logits.raw_data());
    C* losses = static_cast<C*>(r.losses.raw_data());
    C* lse = static_cast<C*>(r.lse.raw_data());
#pragma omp parallel for schedule(static) if (rows * valid_vocab > 32768)
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t t = target[static_cast<size_t>(i)];
      if (t == ignore_index) {
        losses[i] = 0;
        lse[i] = 0;
        continue;
      }
      const T* row = x + i * cols;
      C m = -std::numeric_limits<C>::infinity();
      for (int64_t j = 0; j < valid_vocab; ++j) m = std::max(m, static_cast<C>(to_compute(row[j])));
      C s = 0;
      for (int64_t j = 0; j < valid_vocab; ++j) s += std::exp(static_cast<C>(to_compute(row[j])) - m);
      lse[i] = m + std::log(s);
      losses[i] = lse[i] - static_cast<C>(to_compute(row[t]));
    }
  });
  r.inv_count = inverse_target_count(targets, ignore_index, valid_vocab, loss_dtype(logits.dtype()));
  return r;
}

Tensor CpuBackend::inverse_target_count(const Tensor& targets, int64_t ignore_index, int64_t valid_vocab,
                                        DType dtype) const {
  const char* api = "inverse_target_count";
  ZT_CHECK(dtype == DType::f32 || dtype == DType::f64, api, "dtype must be f32 or f64, got ", dtype_name(dtype));
  ZT_CHECK(targets.device().is_cpu() && targets.is_contiguous() &&
               (targets.dtype() == DType::i32 || targets.dtype() == DType::i64),
           api, "needs contiguous i32 or i64 cpu targets, got ", targets.describe());
  int64_t count = 0;
  for (int64_t t : read_targets(api, targets, ignore_index, valid_vocab)) count += t != ignore_index;
  const double inv = count == 0 ? 0.0 : 1.0 / static_cast<double>(count);
  Tensor out = empty({}, dtype, Device::cpu());
  if (dtype == DType::f64) {
    *static_cast<double*>(out.raw_data()) = inv;
  } else {
    *static_cast<float*>(out.raw_data()) = static_cast<float>(inv);
  }
  return out;
}

Tensor CpuBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                          int64_t ignore_index, int64_t valid_vocab, double grad_scale,
                                          const Tensor& scale_by, bool in_place) const {
  check_logits("cross_entropy_backward", logits, targets, valid_vocab);
  ZT_CHECK(lse.dim() == 1 && lse.size(0) == logits.size(0) && lse.dtype() == loss_dtype(logits.dtype()) &&
               lse.is_contiguous(),
           "cross_entropy_backward", "lse ", lse.describe(), " does not match logits ", logits.describe());
  const std::vector<int64_t> target = read_targets("cross_entropy_backward", targets, ignore_index, valid_vocab);
  const int64_t rows = logits.size(0), cols = logits.size(1);
  // In place is safe: each element is read before it is written, by the same iteration.
  Tensor dlogits = in_place ? logits : empty(logits.shape(), logits.dtype(), logits.device());
  dispatch_float(logits.dtype(), "cross_entropy_backward", [&]<typename T>() {
    using C = typename ComputeType<T>::type;
    const T* x = static_cast<const T*>(logits.raw_data());
    const C* l = static_cast<const C*>(lse.raw_data());
    T* dx = static_cast<T*>(dlogits.raw_data());
    const C scale = static_cast<C>(scale_by.defined() ? grad_scale * scale_by.item() : grad_scale);
    const T zero = from_compute<T>(C(0));
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t t = target[static_cast<size_t>(i)];
      const T* row = x + i * cols;
      T* drow = dx + i * cols;
      if (t == ignore_index) {
        for (int64_t j = 0; j < cols; ++j) drow[j] = zero;
        continue;
      }
      for (int64_t j = 0; j < valid_vocab; ++j) {
        C p = std::exp(static_cast<C>(to_compute(row[j])) - l[i]);
        drow[j] = from_compute<T>(scale * (j == t ? p - C(1) : p));
      }
      for (int64_t j = valid_vocab; j < cols; ++j) drow[j] = zero;
    }
  });
  return dlogits;
}

}  // namespace zt
