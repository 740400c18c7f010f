// layernorm and rmsnorm against naive f64 loops (outputs and saved statistics), gradients against
// f64 finite differences, and a thread-count independence check of the fused backward.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>

#include "core/backend.h"
#include "gradcheck.h"

namespace zt {
namespace {

using testing::gradcheck;

std::vector<double> host(const Tensor& t) {
  NoGradGuard no_grad;
  return to(t.detach(), DType::f64).to_vector<double>();
}

void expect_close(const Tensor& out, const std::vector<double>& ref, double tol, const std::string& what) {
  std::vector<double> o = host(out);
  ASSERT_EQ(o.size(), ref.size()) << what;
  for (size_t i = 0; i < o.size(); ++i) ASSERT_NEAR(o[i], ref[i], tol * (1 + std::abs(ref[i]))) << what << " element " << i;
}

struct NaiveNorm {
  std::vector<double> y, mean, rstd;
};

NaiveNorm naive_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool rms) {
  const std::vector<double> xv = host(x), wv = host(w), bv = b.defined() ? host(b) : std::vector<double>();
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  NaiveNorm r;
  r.y.resize(xv.size());
  for (int64_t i = 0; i < rows; ++i) {
    const double* row = xv.data() + i * cols;
    double mu = 0, var = 0;
    if (!rms) {
      for (int64_t j = 0; j < cols; ++j) mu += row[j];
      mu /= static_cast<double>(cols);
    }
    for (int64_t j = 0; j < cols; ++j) var += (row[j] - mu) * (row[j] - mu);
    const double rstd = 1.0 / std::sqrt(var / static_cast<double>(cols) + eps);
    for (int64_t j = 0; j < cols; ++j)
      r.y[static_cast<size_t>(i * cols + j)] =
          (row[j] - mu) * rstd * wv[static_cast<size_t>(j)] + (b.defined() ? bv[static_cast<size_t>(j)] : 0.0);
    r.mean.push_back(mu);
    r.rstd.push_back(rstd);
  }
  return r;
}

double tolerance(DType dtype) { return dtype == DType::f64 ? 1e-12 : is_half(dtype) ? 2e-2 : 2e-5; }

TEST(LayerNorm, ForwardAndStatisticsMatchNaiveLoops) {
  uint64_t seed = 1;
  for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    for (bool with_bias : {true, false}) {
      // A non-contiguous [2, 7, 37] input (a transposed view), mean far from zero.
      Tensor x = add_scalar(transpose(randn({7, 2, 37}, seed++, 0, dtype), 0, 1), 3.0);
      Tensor w = randn({37}, seed++, 0, dtype), b = with_bias ? randn({37}, seed++, 0, dtype) : Tensor();
      NaiveNorm ref = naive_norm(x, w, b, 1e-5, false);
      const std::string what = std::string(dtype_name(dtype)) + (with_bias ? " bias" : " no bias");
      Tensor y = layernorm(x, w, b, 1e-5);
      ASSERT_EQ(y.shape(), x.shape());
      expect_close(y, ref.y, tolerance(dtype), what);
      LayerNormResult r = cpu_backend().layernorm(contiguous(reshape(x, {14, 37})), w, b, 1e-5);
      EXPECT_EQ(r.mean.dtype(), dtype == DType::f64 ? DType::f64 : DType::f32);
      expect_close(r.mean, ref.mean, tolerance(dtype), what + " mean");
      expect_close(r.rstd, ref.rstd, tolerance(dtype), what + " rstd");
    }
  }
}

TEST(RmsNorm, ForwardAndStatisticsMatchNaiveLoops) {
  uint64_t seed = 50;
  for (DType dtype : {DType::f32, DType::f64, DType::bf16}) {
    Tensor x = narrow(randn({5, 3, 45}, seed++, 0, dtype), 2, 2, 40);
    Tensor w = randn({40}, seed++, 0, dtype);
    NaiveNorm ref = naive_norm(x, w, Tensor(), 1e-6, true);
    expect_close(rmsnorm(x, w, 1e-6), ref.y, tolerance(dtype), dtype_name(dtype));
    LayerNormResult r = cpu_backend().rmsnorm(contiguous(reshape(x, {15, 40})), w, 1e-6);
    EXPECT_FALSE(r.mean.defined());
    expect_close(r.rstd, ref.rstd, tolerance(dtype), std::string(dtype_name(dtype)) + " rstd");
  }
}

TEST(LayerNorm, GradientsMatchFiniteDifferences) {
  Tensor x = testing::random_noncontiguous_f64({2, 3, 6}, 1);
  Tensor w = randn({6}, 2, 0, DType::f64), b = randn({6}, 3, 0, DType::f64);
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  b.set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& v) { return layernorm(v[0], v[1], v[2], 1e-5); }, {x, w, b});
  gradcheck([](const std::vector<Tensor>& v) { return layernorm(v[0], v[1], Tensor(), 1e-5); }, {x, w});
}

TEST(RmsNorm, GradientsMatchFiniteDifferences) {
  Tensor x = testing::random_noncontiguous_f64({3, 2, 7}, 4);
  Tensor w = randn({7}, 5, 0, DType::f64);
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& v) { return rmsnorm(v[0], v[1], 1e-6); }, {x, w});
}

TEST(LayerNorm, BackwardDoesNotDependOnThreadCount) {
  // Large enough for the parallel paths; dweight/dbias must be the same bits with 1 or 2 threads.
  Tensor x = randn({700, 96}, 1), w = randn({96}, 2), b = randn({96}, 3), dy = randn({700, 96}, 4);
  LayerNormResult r = cpu_backend().layernorm(x, w, b, 1e-5);
  auto run = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    NormGrads g = cpu_backend().layernorm_backward(dy, x, w, r.mean, r.rstd, true);
    omp_set_num_threads(saved);
    return g;
  };
  NormGrads one = run(1), two = run(2);
  for (auto [p, q] : {std::pair{one.dx, two.dx}, std::pair{one.dweight, two.dweight}, std::pair{one.dbias, two.dbias}}) {
    std::vector<float> a = p.to_vector<float>(), c = q.to_vector<float>();
    EXPECT_EQ(0, std::memcmp(a.data(), c.data(), a.size() * sizeof(float)));
  }
  // And the values: dweight = sum dy * xhat, dbias = sum dy over rows, in f64.
  std::vector<double> xv = host(x), dyv = host(dy), mean = host(r.mean), rstd = host(r.rstd);
  std::vector<double> dw(96, 0.0), db(96, 0.0);
  for (int64_t i = 0; i < 700; ++i)
    for (int64_t j = 0; j < 96; ++j) {
      const size_t at = static_cast<size_t>(i * 96 + j);
      dw[static_cast<size_t>(j)] += dyv[at] * (xv[at] - mean[static_cast<size_t>(i)]) * rstd[static_cast<size_t>(i)];
      db[static_cast<size_t>(j)] += dyv[at];
    }
  expect_close(one.dweight, dw, 1e-4, "dweight");
  expect_close(one.dbias, db, 1e-4, "dbias");
}

TEST(Norm, BadInputsNameTheOpAndOperands) {
  EXPECT_ZT_ERROR(layernorm(zeros({2, 4}), zeros({3}), zeros({3})), "[layernorm] weight must be [C] for x [..., C]",
                  "x is [2, 4] f32 cpu", "weight is [3] f32 cpu");
  EXPECT_ZT_ERROR(layernorm(zeros({2, 4}), zeros({4}), zeros({5})), "[layernorm] bias must be [C]",
                  "bias is [5] f32 cpu");
  EXPECT_ZT_ERROR(layernorm(zeros({2, 4}), zeros({4}, DType::bf16), Tensor()), "[layernorm]", "x is [2, 4] f32 cpu",
                  "weight is [4] bf16 cpu", "dtypes and devices must match");
  EXPECT_ZT_ERROR(rmsnorm(zeros({2, 4}, DType::i32), zeros({4}, DType::i32)), "[rmsnorm] needs a floating x");
  EXPECT_ZT_ERROR(rmsnorm(zeros({2, 4}), zeros({4}), -1.0), "[rmsnorm] eps must be non-negative");
  EXPECT_ZT_ERROR(rmsnorm(zeros({2, 4}), Tensor()), "[rmsnorm] weight is an undefined tensor");
}

}  // namespace
}  // namespace zt
