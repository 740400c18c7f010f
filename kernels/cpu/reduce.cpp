// CPU kernels: reductions (sum and max over any set of dims), max over the last dim with indices,
// the sum of squares and the finiteness check.
//
// Accumulation is in f64 for every input type: exact for max, and for sums it keeps CPU results a
// reference for the f32-accumulating GPU kernels. Full reductions split the data into fixed chunks
// whose partial sums are added in order, so the result does not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_backend.h"

namespace zt {

namespace {

constexpr int64_t kChunk = 65536;    // elements per partial sum of a full reduction
constexpr int64_t kColumnChunk = 256;  // kept elements per task when the innermost dim is kept

struct DimGroup {
  int64_t size;
  int64_t stride;  // in elements, in the contiguous input
  bool reduced;
};

// Merges neighbouring dims with the same role (the input is contiguous, so they form one run) and
// drops size-1 dims, which play no part.
std::vector<DimGroup> coalesce(const Shape& shape, const std::vector<bool>& mask) {
  Shape strides = contiguous_strides(shape);
  std::vector<DimGroup> groups;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!groups.empty() && groups.back().reduced == mask[d]) {
      groups.back().size *= shape[d];
      groups.back().stride = strides[d];
    } else {
      groups.push_back({shape[d], strides[d], mask[d]});
    }
  }
  return groups;
}

// Element offset of row-major index `index` over (sizes, strides).
inline int64_t offset_of(int64_t index, const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides) {
  int64_t off = 0;
  for (size_t i = sizes.size(); i-- > 0;) {
    off += (index % sizes[i]) * strides[i];
    index /= sizes[i];
  }
  return off;
}

inline void combine(ReduceOp op, double& acc, double v) {
  if (op == ReduceOp::sum) {
    acc += v;
  } else if (v > acc || std::isnan(v)) {
    acc = std::isnan(acc) ? acc : v;  // NaN wins, as in IEEE max propagation
  }
}

inline double identity(ReduceOp op) { return op == ReduceOp::sum ? 0.0 : -std::numeric_limits<double>::infinity(); }

template <typename T>
void reduce_typed(ReduceOp op, const T* x, T* out, const Shape& shape, const std::vector<bool>& mask) {
  std::vector<DimGroup> groups = coalesce(shape, mask);
  const int64_t n = shape_numel(shape);
  bool any_reduced = std::any_of(groups.begin(), groups.end(), [](const DimGroup& g) { return g.reduced; });
  if (!any_reduced) {  // nothing to combine: a copy
    for (int64_t i = 0; i < n; ++i) out[i] = x[i];
    return;
  }
  bool any_kept = std::any_of(groups.begin(), groups.end(), [](const DimGroup& g) { return !g.reduced; });
  if (!any_kept) {  // a full reduction of a contiguous run, in fixed chunks
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    std::vector<double> partial(static_cast<size_t>(chunks), identity(op));
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      double acc = identity(op);
      for (int64_t i = c * kChunk, end = std::min(n, (c + 1) * kChunk); i < end; ++i) combine(op, acc, to_compute(x[i]));
      partial[static_cast<size_t>(c)] = acc;
    }
    double acc = identity(op);
    for (double p : partial) combine(op, acc, p);
    out[0] = from_compute<T>(acc);
    return;
  }

  // The innermost group runs contiguously. If it is reduced, each output sums runs of it; if it
  // is kept, each output row accumulates whole rows of it (vectorisable, cache friendly).
  const DimGroup inner = groups.back();
  groups.pop_back();
  std::vector<int64_t> kept_sizes, kept_strides, red_sizes, red_strides;
  for (const DimGroup& g : groups) {
    (g.reduced ? red_sizes : kept_sizes).push_back(g.size);
    (g.reduced ? red_strides : kept_strides).push_back(g.stride);
  }
  int64_t outer = 1, red_count = 1;
  for (int64_t s : kept_sizes) outer *= s;
  for (int64_t s : red_sizes) red_count *= s;

  if (inner.reduced) {
#pragma omp parallel for schedule(static) if (outer * inner.size * red_count > kChunk)
    for (int64_t o = 0; o < outer; ++o) {
      const int64_t base = offset_of(o, kept_sizes, kept_strides);
      double acc = identity(op);
      for (int64_t r = 0; r < red_count; ++r) {
        const T* run = x + base + offset_of(r, red_sizes, red_strides);
        for (int64_t i = 0; i < inner.size; ++i) combine(op, acc, to_compute(run[i]));
      }
      out[o] = from_compute<T>(acc);
    }
    return;
  }

  const int64_t col_chunks = (inner.size + kColumnChunk - 1) / kColumnChunk;
  const int64_t tasks = outer * col_chunks;
#pragma omp parallel for schedule(static) if (outer * inner.size * red_count > kChunk)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t o = task / col_chunks;
    const int64_t k0 = (task % col_chunks) * kColumnChunk, k1 = std::min(inner.size, k0 + kColumnChunk);
    double acc[kColumnChunk];
    std::fill(acc, acc + (k1 - k0), identity(op));
    const int64_t base = offset_of(o, kept_sizes, kept_strides);
    for (int64_t r = 0; r < red_count; ++r) {
      const T* row = x + base + offset_of(r, red_sizes, red_strides);
      if (op == ReduceOp::sum) {
        for (int64_t k = k0; k < k1; ++k) acc[k - k0] += static_cast<double>(to_compute(row[k]));
      } else {
        for (int64_t k = k0; k < k1; ++k) combine(op, acc[k - k0], to_compute(row[k]));
      }
    }
    for (int64_t k = k0; k < k1; ++k) out[o * inner.size + k] = from_compute<T>(acc[k - k0]);
  }
}

void check_contiguous_cpu(const char* kernel, const Tensor& t) {
  ZT_CHECK(t.device().is_cpu() && t.is_contiguous(), kernel, "needs a contiguous cpu tensor, got ", t.describe());
}

}  // namespace

Tensor CpuBackend::reduce(ReduceOp op, const Tensor& x, const std::vector<bool>& reduce_mask) const {
  check_contiguous_cpu("reduce", x);
  ZT_CHECK(static_cast<int64_t>(reduce_mask.size()) == x.dim(), "reduce", "mask has ", reduce_mask.size(),
           " entries for ", x.describe());
  Shape out_shape = x.shape();
  for (size_t d = 0; d < out_shape.size(); ++d)
    if (reduce_mask[d]) out_shape[d] = 1;
  Tensor out = empty(out_shape, x.dtype(), x.device());
  if (out.numel() == 0) return out;
  if (x.numel() == 0) {  // reducing over an empty dim
    fill(out, identity(op));
    return out;
  }
  dispatch_float(x.dtype(), "reduce", [&]<typename T>() {
    reduce_typed<T>(op, static_cast<const T*>(x.raw_data()), static_cast<T*>(out.raw_data()), x.shape(), reduce_mask);
  });
  return out;
}

std::pair<Tensor, Tensor> CpuBackend::max_last_dim(const Tensor& x) const {
  check_contiguous_cpu("max_last_dim", x);
  ZT_CHECK(x.dim() >= 1 && x.shape().back() > 0, "max_last_dim", "needs a non-empty last dim, got ", x.describe());
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  Tensor values = empty(out_shape, x.dtype(), x.device());
  Tensor indices = empty(out_shape, DType::i64, x.device());
  const int64_t c = x.shape().back(), rows = x.numel() / c;
  dispatch_float(x.dtype(), "max_last_dim", [&]<typename T>() {
    const T* px = static_cast<const T*>(x.raw_data());
    T* pv = static_cast<T*>(values.raw_data());
    int64_t* pi = static_cast<int64_t*>(indices.raw_data());
#pragma omp parallel for schedule(static) if (rows * c > kChunk)
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = px + r * c;
      auto best = to_compute(row[0]);
      int64_t at = 0;
      for (int64_t i = 1; i < c && !std::isnan(best); ++i) {  // first maximum; a NaN is the maximum
        auto v = to_compute(row[i]);
        if (v > best || std::isnan(v)) {
          best = v;
          at = i;
        }
      }
      pv[r] = from_compute<T>(best);
      pi[r] = at;
    }
  });
  return {values, indices};
}

double CpuBackend::sum_squares(const Tensor& x) const {
  check_contiguous_cpu("sum_squares", x);
  return dispatch_float(x.dtype(), "sum_squares", [&]<typename T>() {
    const T* px = static_cast<const T*>(x.raw_data());
    const int64_t n = x.numel(), chunks = (n + kChunk - 1) / kChunk;
    std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      double acc = 0;
      for (int64_t i = c * kChunk, end = std::min(n, (c + 1) * kChunk); i < end; ++i) {
        double v = static_cast<double>(to_compute(px[i]));
        acc += v * v;
      }
      partial[static_cast<size_t>(c)] = acc;
    }
    double total = 0;
    for (double p : partial) total += p;
    return total;
  });
}

bool CpuBackend::all_finite(const Tensor& x) const {
  check_contiguous_cpu("all_finite", x);
  return dispatch_float(x.dtype(), "all_finite", [&]<typename T>() {
    const T* px = static_cast<const T*>(x.raw_data());
    const int64_t n = x.numel();
    int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad) if (n > kChunk)
    for (int64_t i = 0; i < n; ++i) bad += std::isfinite(static_cast<double>(to_compute(px[i]))) ? 0 : 1;
    return bad == 0;
  });
}

}  // namespace zt
