// CPU kernels: batched matrix products through OpenBLAS.
//
// f32 and f64 go straight to cblas_sgemm / cblas_dgemm. bf16 and f16 have no BLAS routine, so
// the operands are widened into f32 buffers, multiplied with sgemm (f32 accumulation, as the GPU
// does) and rounded once on the way out.
//
// A broadcast operand (batch 1) is never copied per batch: when b is shared and a is not
// transposed, a's batch and row dims are contiguous, so the whole product is one GEMM
// [batch * M, K] x [K, N] (the weights case, by far the most common); otherwise each batch entry
// reads the same b (stride 0). OpenBLAS threads each call itself, so the batch loop is serial.
#include <cblas.h>

#include <climits>
#include <type_traits>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace zt {

namespace {

// The geometry of one call: out[i] = op(a[i]) op(b[i]) with a[i], b[i] possibly shared.
struct GemmShape {
  int64_t batch = 1, m = 0, n = 0, k = 0;
  int64_t a_batch = 1, b_batch = 1;  // 1 (shared) or batch
  bool transpose_a = false, transpose_b = false;
  int64_t a_stride() const { return a_batch == 1 ? 0 : m * k; }
  int64_t b_stride() const { return b_batch == 1 ? 0 : k * n; }
  int64_t lda() const { return transpose_a ? m : k; }
  int64_t ldb() const { return transpose_b ? k : n; }
};

void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
               int64_t ldb, float beta, float* c) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, a, static_cast<blasint>(lda), b,
              static_cast<blasint>(ldb), beta, c, static_cast<blasint>(n));
}

void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
               int64_t ldb, double beta, double* c) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), 1.0, a, static_cast<blasint>(lda), b,
              static_cast<blasint>(ldb), beta, c, static_cast<blasint>(n));
}

// c (contiguous [batch, M, N]) = beta * c + op(a) op(b), T = float or double.
template <typename T>
void batched_gemm(const GemmShape& s, const T* a, const T* b, T beta, T* c) {
  if (s.batch == 0 || s.m == 0 || s.n == 0) return;
  if (s.k == 0) {  // an empty sum: BLAS may not touch c, so scale it here
    for (int64_t i = 0; i < s.batch * s.m * s.n; ++i) c[i] = beta == T(0) ? T(0) : c[i] * beta;
    return;
  }
  if (s.b_batch == 1 && !s.transpose_a && s.batch * s.m <= INT_MAX) {
    blas_gemm(false, s.transpose_b, s.batch * s.m, s.n, s.k, a, s.lda(), b, s.ldb(), beta, c);
    return;
  }
  for (int64_t i = 0; i < s.batch; ++i)
    blas_gemm(s.transpose_a, s.transpose_b, s.m, s.n, s.k, a + i * s.a_stride(), s.lda(), b + i * s.b_stride(),
              s.ldb(), beta, c + i * s.m * s.n);
}

template <typename T>
std::vector<float> widen(const Tensor& t) {
  const T* p = static_cast<const T*>(t.raw_data());
  std::vector<float> out(static_cast<size_t>(t.numel()));
  const int64_t n = t.numel();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = to_compute(p[i]);
  return out;
}

// Reads a as [batch_a, rows, cols]; a 2-D operand is one shared matrix.
void split_operand(const Tensor& x, int64_t& batch, int64_t& rows, int64_t& cols) {
  if (x.dim() == 2) {
    batch = 1;
    rows = x.size(0);
    cols = x.size(1);
  } else {
    batch = x.size(0);
    rows = x.size(1);
    cols = x.size(2);
  }
}

// out = op(a) op(b) (+ out when accumulate) for out contiguous in a's dtype, or in f32 for 16-bit
// operands: f32 and f64 straight through BLAS, 16-bit operands widened to f32 (and a 16-bit out
// rounded once at the end).
void gemm_out(const GemmShape& s, const Tensor& a, const Tensor& b, Tensor& out, bool accumulate, const char* api) {
  dispatch_float(a.dtype(), api, [&]<typename T>() {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      batched_gemm<T>(s, static_cast<const T*>(a.raw_data()), static_cast<const T*>(b.raw_data()),
                      accumulate ? T(1) : T(0), static_cast<T*>(out.raw_data()));
    } else {
      std::vector<float> a32 = widen<T>(a), b32 = widen<T>(b);
      if (out.dtype() == DType::f32) {  // straight into an f32 accumulator
        batched_gemm<float>(s, a32.data(), b32.data(), accumulate ? 1.0f : 0.0f, static_cast<float*>(out.raw_data()));
        return;
      }
      std::vector<float> c32 = accumulate ? widen<T>(out) : std::vector<float>(static_cast<size_t>(out.numel()));
      batched_gemm<float>(s, a32.data(), b32.data(), accumulate ? 1.0f : 0.0f, c32.data());
      T* o = static_cast<T*>(out.raw_data());
      const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) o[i] = from_compute<T>(c32[static_cast<size_t>(i)]);
    }
  });
}

}  // namespace

Tensor CpuBackend::gemm(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b, int64_t batch,
                        const Tensor& accumulate) const {
  ZT_CHECK((a.dim() == 2 || a.dim() == 3) && (b.dim() == 2 || b.dim() == 3), "gemm",
           "operands must be [batch, rows, cols] or [rows, cols]: a is ", a.describe(), ", b is ", b.describe());
  ZT_CHECK(a.dtype() == b.dtype(), "gemm", "dtypes differ: a is ", a.describe(), ", b is ", b.describe());
  ZT_CHECK(a.device().is_cpu() && b.device().is_cpu(), "gemm", "cpu kernel got a ", a.describe(), ", b ",
           b.describe());
  // An empty operand has no layout to speak of (and may carry any strides).
  ZT_CHECK((a.is_contiguous() || a.numel() == 0) && (b.is_contiguous() || b.numel() == 0), "gemm", "operands must be contiguous: a is ", a.describe(),
           ", b is ", b.describe());
  GemmShape s;
  s.batch = batch;
  s.transpose_a = transpose_a;
  s.transpose_b = transpose_b;
  int64_t a_rows, a_cols, b_rows, b_cols;
  split_operand(a, s.a_batch, a_rows, a_cols);
  split_operand(b, s.b_batch, b_rows, b_cols);
  s.m = transpose_a ? a_cols : a_rows;
  s.k = transpose_a ? a_rows : a_cols;
  s.n = transpose_b ? b_rows : b_cols;
  const int64_t kb = transpose_b ? b_cols : b_rows;
  ZT_CHECK(s.k == kb, "gemm", "inner dimensions differ: a is ", a.describe(), (transpose_a ? " (transposed)" : ""),
           ", b is ", b.describe(), (transpose_b ? " (transposed)" : ""));
  ZT_CHECK(batch >= 0 && (s.a_batch == 1 || s.a_batch == batch) && (s.b_batch == 1 || s.b_batch == batch), "gemm",
           "batch ", batch, " does not match a ", a.describe(), " and b ", b.describe(), " (each must be 1 or ",
           batch, ")");
  ZT_CHECK(s.m <= INT_MAX && s.n <= INT_MAX && s.k <= INT_MAX, "gemm", "matrix dimensions exceed BLAS int range: a ",
           a.describe(), ", b ", b.describe());

  Tensor out = empty({batch, s.m, s.n}, a.dtype(), a.device());
  if (accumulate.defined()) {
    // Any contiguous tensor with the product's element count ([M, N] for batch 1, say) is accepted.
    ZT_CHECK(accumulate.numel() == out.numel() && accumulate.is_contiguous(), "gemm", "accumulate ",
             accumulate.describe(), " must be contiguous and match the product ", out.describe());
    ZT_CHECK(accumulate.dtype() == a.dtype() && accumulate.device().is_cpu(), "gemm", "accumulate ",
             accumulate.describe(), " must match a ", a.describe());
    Tensor acc_view = make_view(accumulate, out.shape(), contiguous_strides(out.shape()), accumulate.offset());
    copy_strided(acc_view, out);
  }
  gemm_out(s, a, b, out, accumulate.defined(), "gemm");
  return out;
}

void CpuBackend::gemm_into(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b, Tensor& out,
                           bool accumulate) const {
  const char* api = "gemm_into";
  ZT_CHECK(a.dim() == 2 && b.dim() == 2 && out.dim() == 2, api, "needs 2-D a, b and out, got a ", a.describe(),
           ", b ", b.describe(), ", out ", out.describe());
  ZT_CHECK(a.dtype() == b.dtype(), api, "dtypes differ: a is ", a.describe(), ", b is ", b.describe());
  ZT_CHECK(out.dtype() == a.dtype() || (is_half(a.dtype()) && out.dtype() == DType::f32), api, "out ", out.describe(),
           " must have the operands' dtype (", dtype_name(a.dtype()), ") or f32 for 16-bit operands");
  ZT_CHECK(a.device().is_cpu() && b.device().is_cpu() && out.device().is_cpu(), api, "cpu kernel got a ",
           a.describe(), ", b ", b.describe(), ", out ", out.describe());
  ZT_CHECK((a.is_contiguous() || a.numel() == 0) && (b.is_contiguous() || b.numel() == 0) && out.is_contiguous(), api,
           "operands and out must be contiguous: a is ", a.describe(), ", b is ", b.describe(), ", out is ",
           out.describe());
  GemmShape s;
  s.transpose_a = transpose_a;
  s.transpose_b = transpose_b;
  s.m = transpose_a ? a.size(1) : a.size(0);
  s.k = transpose_a ? a.size(0) : a.size(1);
  s.n = transpose_b ? b.size(0) : b.size(1);
  ZT_CHECK(s.k == (transpose_b ? b.size(1) : b.size(0)) && out.size(0) == s.m && out.size(1) == s.n, api,
           "shapes do not match: a ", a.describe(), transpose_a ? " (transposed)" : "", ", b ", b.describe(),
           transpose_b ? " (transposed)" : "", ", out ", out.describe());
  ZT_CHECK(s.m <= INT_MAX && s.n <= INT_MAX && s.k <= INT_MAX, api, "matrix dimensions exceed BLAS int range: a ",
           a.describe(), ", b ", b.describe());
  gemm_out(s, a, b, out, accumulate, api);
}

}  // namespace zt
