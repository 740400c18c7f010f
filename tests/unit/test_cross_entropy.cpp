// cross_entropy against a naive f64 log-softmax + NLL with ignore_index rows and vocabulary padding
// (valid_vocab < V); gradients of the logits against f64 finite differences; exact zeros where the
// gradient must vanish.
#include <gtest/gtest.h>

#include <cmath>

#include "core/backend.h"
#include "gradcheck.h"

namespace zt {
namespace {

std::vector<double> host(const Tensor& t) {
  NoGradGuard no_grad;
  return to(t.detach(), DType::f64).to_vector<double>();
}

double naive_loss(const Tensor& logits, const std::vector<int64_t>& targets, int64_t ignore, int64_t valid) {
  const std::vector<double> x = host(logits);
  const int64_t vocab = logits.size(-1), rows = logits.numel() / vocab;
  double total = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t t = targets[static_cast<size_t>(i)];
    if (t == ignore) continue;
    const double* row = x.data() + i * vocab;
    double m = row[0];
    for (int64_t j = 0; j < valid; ++j) m = std::max(m, row[j]);
    double s = 0;
    for (int64_t j = 0; j < valid; ++j) s += std::exp(row[j] - m);
    total += m + std::log(s) - row[t];
    ++count;
  }
  return count ? total / static_cast<double>(count) : 0.0;
}

// Targets for `rows` rows in [0, valid), with every third row ignored.
std::vector<int64_t> make_targets(int64_t rows, int64_t valid, int64_t ignore, uint64_t seed) {
  std::vector<int64_t> t = randint({rows}, valid, seed).to_vector<int64_t>();
  for (size_t i = 1; i < t.size(); i += 3) t[i] = ignore;
  return t;
}

TEST(CrossEntropy, LossMatchesNaiveWithIgnoredRowsAndPaddedVocab) {
  uint64_t seed = 1;
  for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    for (DType target_dtype : {DType::i32, DType::i64}) {
      for (int64_t valid : {int64_t{-1}, int64_t{37}}) {
        for (int64_t ignore : {int64_t{-100}, int64_t{0}}) {
          const int64_t vocab = 40, valid_cols = valid < 0 ? vocab : valid;
          // Logits [2, 5, 40] with large values in the padded columns: they must not count.
          Tensor logits = mul_scalar(randn({2, 5, vocab}, seed++, 0, dtype), 3.0);
          std::vector<int64_t> t = make_targets(10, valid_cols, ignore, seed++);
          std::vector<double> tv(t.begin(), t.end());
          Tensor targets = from_vector_as(tv, {2, 5}, target_dtype);
          Tensor loss = cross_entropy(logits, targets, ignore, valid);
          EXPECT_EQ(loss.dim(), 0);
          EXPECT_EQ(loss.dtype(), dtype == DType::f64 ? DType::f64 : DType::f32);
          const double ref = naive_loss(logits, t, ignore, valid_cols);
          EXPECT_NEAR(loss.item(), ref, (dtype == DType::f64 ? 1e-12 : 1e-5) * (1 + std::abs(ref)))
              << dtype_name(dtype) << " valid " << valid << " ignore " << ignore;
        }
      }
    }
  }
}

TEST(CrossEntropy, PerRowLossesAndLseFromTheKernel) {
  Tensor logits = randn({6, 9}, 3);
  Tensor targets = from_vector(std::vector<int64_t>{0, -100, 8, 3, -100, 5}, {6});
  CrossEntropyResult r = cpu_backend().cross_entropy(logits, targets, -100, 9);
  std::vector<double> x = host(logits), losses = host(r.losses), lse = host(r.lse);
  std::vector<int64_t> t = targets.to_vector<int64_t>();
  for (size_t i = 0; i < 6; ++i) {
    if (t[i] == -100) {
      EXPECT_EQ(losses[i], 0.0);
      continue;
    }
    double s = 0;
    for (size_t j = 0; j < 9; ++j) s += std::exp(x[i * 9 + j]);
    EXPECT_NEAR(lse[i], std::log(s), 1e-5);
    EXPECT_NEAR(losses[i], std::log(s) - x[i * 9 + static_cast<size_t>(t[i])], 1e-5);
  }
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  for (int64_t valid : {int64_t{-1}, int64_t{5}}) {
    Tensor logits = testing::random_noncontiguous_f64({7, 7}, 4);
    logits.set_requires_grad(true);
    std::vector<int64_t> t = make_targets(7, valid < 0 ? 7 : valid, -100, 5);
    Tensor targets = from_vector(t, {7});
    SCOPED_TRACE("valid_vocab " + std::to_string(valid));
    testing::gradcheck([&](const std::vector<Tensor>& x) { return cross_entropy(x[0], targets, -100, valid); },
                       {logits});
  }
}

// Note [Logits in place]: logits made inside the graph are owned by the loss node alone, and
// their gradient is written over them; the result must be what finite differences say.
TEST(CrossEntropy, GradientThroughLogitsOwnedByTheLossNode) {
  Tensor x = testing::random_f64({6, 5}, 8);
  x.set_requires_grad(true);
  Tensor targets = from_vector(make_targets(6, 5, -100, 9), {6});
  testing::gradcheck([&](const std::vector<Tensor>& in) { return cross_entropy(mul_scalar(in[0], 2.0), targets); },
                     {x});
}

TEST(CrossEntropy, InPlaceBackwardWritesOverTheLogits) {
  Tensor logits = randn({5, 12}, 10);
  Tensor targets = from_vector(std::vector<int64_t>{0, -100, 11, 3, 7}, {5});
  CrossEntropyResult r = cpu_backend().cross_entropy(logits, targets, -100, 12);
  Tensor want = cpu_backend().cross_entropy_backward(logits, targets, r.lse, -100, 12, 0.5, Tensor(), false);
  Tensor copy = clone(logits);
  Tensor got = cpu_backend().cross_entropy_backward(copy, targets, r.lse, -100, 12, 0.5, Tensor(), true);
  EXPECT_EQ(got.storage(), copy.storage());
  EXPECT_EQ(host(got), host(want));
}

TEST(CrossEntropy, GradientIsExactlyZeroOnIgnoredRowsAndPaddedColumns) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    Tensor logits = randn({4, 10}, 6, 0, dtype);
    logits.set_requires_grad(true);
    Tensor targets = from_vector(std::vector<int32_t>{2, -1, 7, -1}, {4});
    Tensor loss = cross_entropy(logits, targets, -1, 8);
    backward(mul_scalar(loss, 3.0));  // grad_scale = 3 / count
    std::vector<double> g = host(logits.grad()), x = host(logits);
    for (size_t i = 0; i < 4; ++i) {
      double s = 0;
      for (size_t j = 0; j < 8; ++j) s += std::exp(x[i * 10 + j]);
      for (size_t j = 0; j < 10; ++j) {
        if (i % 2 == 1 || j >= 8) {
          EXPECT_EQ(g[i * 10 + j], 0.0) << "row " << i << " col " << j;
          continue;
        }
        const double p = std::exp(x[i * 10 + j]) / s - (static_cast<int64_t>(j) == (i == 0 ? 2 : 7) ? 1.0 : 0.0);
        EXPECT_NEAR(g[i * 10 + j], 1.5 * p, dtype == DType::f32 ? 1e-6 : 1e-2) << "row " << i << " col " << j;
      }
    }
  }
}

TEST(CrossEntropy, AllTargetsIgnoredGivesZeroLossAndZeroGradient) {
  Tensor logits = randn({3, 4}, 7);
  logits.set_requires_grad(true);
  Tensor loss = cross_entropy(logits, full({3}, -100, DType::i64));
  EXPECT_EQ(loss.item(), 0.0);
  backward(loss);
  for (float g : logits.grad().to_vector<float>()) EXPECT_EQ(g, 0.0f);
}

TEST(CrossEntropy, BadInputsAreReported) {
  Tensor logits = zeros({3, 5});
  EXPECT_ZT_ERROR(cross_entropy(logits, from_vector(std::vector<int64_t>{0, 5, 1}, {3})), "[cross_entropy] target 5 at row 1",
                  "out of range [0, 5)");
  EXPECT_ZT_ERROR(cross_entropy(logits, from_vector(std::vector<int64_t>{0, 4, 1}, {3}), -100, 4),
                  "[cross_entropy] target 4 at row 1", "out of range [0, 4)");
  EXPECT_ZT_ERROR(cross_entropy(logits, zeros({4}, DType::i64)), "[cross_entropy] targets must have logits' shape",
                  "logits are [3, 5] f32 cpu", "targets are [4] i64 cpu");
  EXPECT_ZT_ERROR(cross_entropy(logits, zeros({3})), "[cross_entropy] targets must be i32 or i64, got [3] f32 cpu");
  EXPECT_ZT_ERROR(cross_entropy(logits, zeros({3}, DType::i64), -100, 6), "[cross_entropy] valid_vocab 6 must be in [1, 5]");
  EXPECT_ZT_ERROR(cross_entropy(zeros({3, 5}, DType::i32), zeros({3}, DType::i64)),
                  "[cross_entropy] logits must be a floating [..., V] tensor");
}

}  // namespace
}  // namespace zt
