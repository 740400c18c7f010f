// Walking strided tensors on the CPU. for_each_strided(shape, {strides...}, fn) calls
// fn(offsets...) once per element in row-major order, with each operand's element offset; the
// innermost dimension runs as a tight loop. Parallel over the outer index when large.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace zt::cpu {

// Calls fn(inner_count, base_offsets, inner_strides) for each run of the innermost dimension, so
// kernels can vectorise the inner loop themselves. N operands.
template <size_t N, typename F>
void for_each_row(const Shape& shape, const std::array<const Shape*, N>& strides, F&& fn) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  if (shape_numel(shape) == 0) return;
  if (nd == 0) {
    std::array<int64_t, N> base{};
    std::array<int64_t, N> inner{};
    fn(int64_t{1}, base, inner);
    return;
  }
  const int64_t inner_count = shape[nd - 1];
  std::array<int64_t, N> inner_strides;
  for (size_t k = 0; k < N; ++k) inner_strides[k] = (*strides[k])[nd - 1];
  const int64_t rows = shape_numel(shape) / inner_count;
#pragma omp parallel for schedule(static) if (rows * inner_count > 32768)
  for (int64_t row = 0; row < rows; ++row) {
    std::array<int64_t, N> base{};
    int64_t rem = row;
    for (int64_t d = nd - 2; d >= 0; --d) {
      int64_t idx = rem % shape[d];
      rem /= shape[d];
      for (size_t k = 0; k < N; ++k) base[k] += idx * (*strides[k])[d];
    }
    fn(inner_count, base, inner_strides);
  }
}

}  // namespace zt::cpu
