// Test helpers for naive references: host copies in f64, row-major index walks, random strided
// (non-contiguous) inputs of any floating dtype, and element-by-element comparisons.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "core/ops.h"

namespace zt::testing {

// All elements in row-major order as f64 on the host (through the library's own cast).
inline std::vector<double> host(const Tensor& t) {
  NoGradGuard no_grad;
  return to(to(t.detach(), Device::cpu()), DType::f64).to_vector<double>();
}

// Calls fn(index) for every multi-index of `shape` in row-major order.
inline void for_each_index(const Shape& shape, const std::function<void(const std::vector<int64_t>&)>& fn) {
  if (shape_numel(shape) == 0) return;
  std::vector<int64_t> idx(shape.size(), 0);
  while (true) {
    fn(idx);
    int64_t d = static_cast<int64_t>(shape.size()) - 1;
    while (d >= 0 && ++idx[static_cast<size_t>(d)] == shape[static_cast<size_t>(d)]) idx[static_cast<size_t>(d--)] = 0;
    if (d < 0) return;
  }
}

// Row-major flat position of `idx` in `shape`.
inline int64_t flat_index(const Shape& shape, const std::vector<int64_t>& idx) {
  int64_t flat = 0;
  for (size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + idx[d];
  return flat;
}

// Random normal values of `shape` held in a non-contiguous view (last two dims transposed out of a
// padded buffer, or a narrowed 1-d buffer), so kernels that ignore strides fail.
inline Tensor random_strided(const Shape& shape, uint64_t seed, DType dtype = DType::f32) {
  NoGradGuard no_grad;
  if (shape.size() < 2) {
    Shape padded = shape;
    if (padded.empty()) return randn(shape, seed, 0, dtype);
    padded[0] = padded[0] * 2 + 1;
    Tensor base = randn(padded, seed, 0, dtype);
    // Every other element: stride 2.
    return make_view(base, shape, {2}, 1);
  }
  Shape swapped = shape;
  std::swap(swapped[swapped.size() - 1], swapped[swapped.size() - 2]);
  swapped.back() += 3;
  Tensor base = randn(swapped, seed, 0, dtype);
  return transpose(narrow(base, -1, 1, swapped.back() - 3), -1, -2);
}

// Every element of `t` against `ref` (row-major): |t - ref| <= atol + rtol |ref|.
inline void expect_near_all(const Tensor& t, const std::vector<double>& ref, double rtol, double atol,
                            const char* what = "") {
  std::vector<double> got = host(t);
  ASSERT_EQ(got.size(), ref.size()) << what;
  int failures = 0;
  for (size_t i = 0; i < got.size() && failures < 10; ++i) {
    bool ok = std::abs(got[i] - ref[i]) <= atol + rtol * std::abs(ref[i]) || (std::isnan(got[i]) && std::isnan(ref[i])) ||
              got[i] == ref[i];
    if (!ok) {
      ++failures;
      ADD_FAILURE() << what << " element " << i << ": got " << got[i] << ", expected " << ref[i];
    }
  }
}

inline void expect_equal_all(const Tensor& t, const std::vector<double>& ref, const char* what = "") {
  expect_near_all(t, ref, 0.0, 0.0, what);
}

}  // namespace zt::testing
