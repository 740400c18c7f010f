// CPU kernels: embedding lookup and its backward.
//
// The backward must be deterministic (the same bits whatever the thread count), so it never lets
// threads race on a shared row: the ids are first bucketed by vocabulary row (a counting sort that
// keeps positions in increasing order), then each row sums its gradient rows in that order, one
// row per thread at a time. Rows no id refers to get zeros.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace zt {

namespace {

// ids as int64, each checked against [0, vocab).
std::vector<int64_t> read_ids(const Tensor& ids, int64_t vocab, const char* api) {
  ZT_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64, api, "ids must be i32 or i64, got ",
           ids.describe());
  ZT_CHECK(ids.dim() == 1 && ids.is_contiguous() && ids.device().is_cpu(), api,
           "ids must be flat, contiguous and on the cpu, got ", ids.describe());
  const int64_t n = ids.numel();
  std::vector<int64_t> out(static_cast<size_t>(n));
  if (ids.dtype() == DType::i32) {
    const int32_t* p = static_cast<const int32_t*>(ids.raw_data());
    for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = p[i];
  } else {
    const int64_t* p = static_cast<const int64_t*>(ids.raw_data());
    for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = p[i];
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = out[static_cast<size_t>(i)];
    ZT_CHECK(id >= 0 && id < vocab, api, "id ", id, " at position ", i, " is out of range [0, ", vocab, ")");
  }
  return out;
}

}  // namespace

Tensor CpuBackend::embedding(const Tensor& weight, const Tensor& ids) const {
  ZT_CHECK(weight.dim() == 2 && weight.is_contiguous() && weight.device().is_cpu(), "embedding",
           "weight must be a contiguous [V, C] cpu tensor, got ", weight.describe());
  const int64_t vocab = weight.size(0), cols = weight.size(1);
  const std::vector<int64_t> id = read_ids(ids, vocab, "embedding");
  const int64_t n = static_cast<int64_t>(id.size());
  Tensor out = empty({n, cols}, weight.dtype(), weight.device());
  const size_t row_bytes = static_cast<size_t>(cols) * dtype_size(weight.dtype());
  const char* w = static_cast<const char*>(weight.raw_data());
  char* o = static_cast<char*>(out.raw_data());
#pragma omp parallel for schedule(static) if (n * cols > 65536)
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(o + static_cast<size_t>(i) * row_bytes, w + static_cast<size_t>(id[static_cast<size_t>(i)]) * row_bytes,
                row_bytes);
  return out;
}

Tensor CpuBackend::embedding_backward(const Tensor& grad_out, const Tensor& ids, int64_t vocab) const {
  ZT_CHECK(grad_out.dim() == 2 && grad_out.is_contiguous() && grad_out.device().is_cpu(), "embedding_backward",
           "grad_out must be a contiguous [N, C] cpu tensor, got ", grad_out.describe());
  ZT_CHECK(vocab > 0, "embedding_backward", "vocabulary size must be positive, got ", vocab);
  const std::vector<int64_t> id = read_ids(ids, vocab, "embedding_backward");
  const int64_t n = static_cast<int64_t>(id.size()), cols = grad_out.size(1);
  ZT_CHECK(grad_out.size(0) == n, "embedding_backward", "grad_out ", grad_out.describe(), " has not one row per id (",
           n, " ids)");

  // Counting sort: positions of each vocabulary row, in increasing order (CSR layout).
  std::vector<int64_t> start(static_cast<size_t>(vocab) + 1, 0);
  for (int64_t v : id) ++start[static_cast<size_t>(v) + 1];
  for (int64_t v = 0; v < vocab; ++v) start[static_cast<size_t>(v) + 1] += start[static_cast<size_t>(v)];
  std::vector<int64_t> positions(static_cast<size_t>(n));
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < n; ++i) positions[static_cast<size_t>(fill[static_cast<size_t>(id[static_cast<size_t>(i)])]++)] = i;
  }

  Tensor dweight = empty({vocab, cols}, grad_out.dtype(), grad_out.device());
  dispatch_float(grad_out.dtype(), "embedding_backward", [&]<typename T>() {
    using C = typename ComputeType<T>::type;
    const T* g = static_cast<const T*>(grad_out.raw_data());
    T* dw = static_cast<T*>(dweight.raw_data());
#pragma omp parallel if ((vocab + n) * cols > 65536)
    {
      std::vector<C> acc(static_cast<size_t>(cols));
#pragma omp for schedule(dynamic, 64)
      for (int64_t v = 0; v < vocab; ++v) {
        std::fill(acc.begin(), acc.end(), C(0));
        for (int64_t p = start[static_cast<size_t>(v)]; p < start[static_cast<size_t>(v) + 1]; ++p) {
          const T* row = g + positions[static_cast<size_t>(p)] * cols;
          for (int64_t j = 0; j < cols; ++j) acc[static_cast<size_t>(j)] += to_compute(row[j]);
        }
        T* out = dw + v * cols;
        for (int64_t j = 0; j < cols; ++j) out[j] = from_compute<T>(acc[static_cast<size_t>(j)]);
      }
    }
  });
  return dweight;
}

}  // namespace zt
