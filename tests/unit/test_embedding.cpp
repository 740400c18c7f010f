// embedding: lookups against the weight rows, the backward against a naive scatter-add in f64
// (repeated ids included), finite differences, and bitwise determinism across thread counts.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>

#include "core/backend.h"
#include "gradcheck.h"

namespace zt {
namespace {

std::vector<double> host(const Tensor& t) {
  NoGradGuard no_grad;
  return to(t.detach(), DType::f64).to_vector<double>();
}

TEST(Embedding, ForwardPicksRowsForAnyIdShapeAndDtype) {
  uint64_t seed = 1;
  for (DType dtype : {DType::f32, DType::f64, DType::bf16}) {
    for (DType id_dtype : {DType::i32, DType::i64}) {
      Tensor w = randn({11, 6}, seed++, 0, dtype);
      Tensor ids = transpose(randint({3, 2}, 11, seed++, 0, id_dtype), 0, 1);  // non-contiguous [2, 3]
      Tensor out = embedding(w, ids);
      ASSERT_EQ(out.shape(), Shape({2, 3, 6}));
      ASSERT_EQ(out.dtype(), dtype);
      std::vector<double> wv = host(w), ov = host(out), iv = host(ids);
      for (size_t p = 0; p < iv.size(); ++p)
        for (size_t j = 0; j < 6; ++j)
          ASSERT_EQ(ov[p * 6 + j], wv[static_cast<size_t>(iv[p]) * 6 + j]) << dtype_name(dtype) << " position " << p;
    }
  }
}

TEST(Embedding, BackwardSumsRepeatedIdsLikeANaiveScatter) {
  for (DType dtype : {DType::f32, DType::f64, DType::bf16}) {
    const int64_t vocab = 9, cols = 5;
    Tensor w = randn({vocab, cols}, 3, 0, dtype);
    w.set_requires_grad(true);
    std::vector<int64_t> id_values = {4, 0, 4, 8, 4, 2, 0, 7, 4, 1, 1, 3};  // 5 and 6 never appear
    Tensor ids = from_vector(id_values, {3, 4});
    Tensor probe = randn({3, 4, cols}, 4, 0, dtype);
    backward(sum(mul(embedding(w, ids), probe)));
    std::vector<double> ref(static_cast<size_t>(vocab * cols), 0.0), pv = host(probe);
    for (size_t p = 0; p < id_values.size(); ++p)
      for (size_t j = 0; j < static_cast<size_t>(cols); ++j)
        ref[static_cast<size_t>(id_values[p]) * cols + j] += pv[p * cols + j];
    std::vector<double> got = host(w.grad());
    const double tol = dtype == DType::f64 ? 1e-14 : dtype == DType::f32 ? 1e-6 : 3e-2;
    for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(got[i], ref[i], tol * (1 + std::abs(ref[i]))) << i;
    for (int64_t row : {5, 6})
      for (int64_t j = 0; j < cols; ++j) EXPECT_EQ(got[static_cast<size_t>(row * cols + j)], 0.0);
  }
}

TEST(Embedding, GradientMatchesFiniteDifferences) {
  Tensor w = randn({6, 4}, 5, 0, DType::f64);
  w.set_requires_grad(true);
  Tensor ids = from_vector(std::vector<int32_t>{5, 1, 1, 0, 5, 5}, {2, 3});
  testing::gradcheck([&](const std::vector<Tensor>& x) { return embedding(x[0], ids); }, {w});
}

TEST(Embedding, BackwardIsBitwiseIdenticalForAnyThreadCount) {
  // Many repeats of few rows, so a racy or reordered sum would show in the low bits.
  const int64_t vocab = 50, cols = 64, n = 4000;
  Tensor ids = randint({n}, vocab, 7, 0, DType::i64);
  Tensor g = randn({n, cols}, 8);
  auto run = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    Tensor d = cpu_backend().embedding_backward(g, ids, vocab);
    omp_set_num_threads(saved);
    return d.to_vector<float>();
  };
  std::vector<float> one = run(1), two = run(2), again = run(2);
  EXPECT_EQ(0, std::memcmp(one.data(), two.data(), one.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(two.data(), again.data(), two.size() * sizeof(float)));
  // Each row is the in-order f32 sum of its gradient rows.
  std::vector<int64_t> iv = ids.to_vector<int64_t>();
  std::vector<float> gv = g.to_vector<float>(), ref(static_cast<size_t>(vocab * cols), 0.0f);
  for (size_t p = 0; p < iv.size(); ++p)
    for (size_t j = 0; j < static_cast<size_t>(cols); ++j) ref[static_cast<size_t>(iv[p]) * cols + j] += gv[p * cols + j];
  EXPECT_EQ(0, std::memcmp(one.data(), ref.data(), ref.size() * sizeof(float)));
}

TEST(Embedding, BadInputsAreReported) {
  Tensor w = zeros({10, 4});
  EXPECT_ZT_ERROR(embedding(w, from_vector(std::vector<int64_t>{1, 10}, {2})), "[embedding] id 10 at position 1",
                  "out of range [0, 10)");
  EXPECT_ZT_ERROR(embedding(w, from_vector(std::vector<int32_t>{-1}, {1})), "[embedding] id -1");
  EXPECT_ZT_ERROR(embedding(w, zeros({2})), "[embedding] ids must be i32 or i64, got [2] f32 cpu",
                  "weight [10, 4] f32 cpu");
  EXPECT_ZT_ERROR(embedding(zeros({10}), zeros({2}, DType::i64)), "[embedding] weight must be a floating [V, C]",
                  "[10] f32 cpu");
  EXPECT_ZT_ERROR(cpu_backend().embedding_backward(zeros({3, 4}), zeros({2}, DType::i64), 10), "[embedding_backward]",
                  "not one row per id");
}

}  // namespace
}  // namespace zt
