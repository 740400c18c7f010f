// softmax / log_softmax over every dim against a naive f64 reference, numerical safety at extreme
// inputs, f64 gradchecks, and dropout's counter-based mask, scale and backward.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/ops.h"
#include "core/rng.h"
#include "gradcheck.h"
#include "reference.h"

namespace zt::testing {
namespace {

std::vector<double> naive_softmax(const std::vector<double>& xv, const Shape& shape, int64_t dim, bool log) {
  std::vector<double> out(xv.size());
  Shape outer = shape;
  outer[static_cast<size_t>(dim)] = 1;
  const int64_t n = shape[static_cast<size_t>(dim)];
  for_each_index(outer, [&](const std::vector<int64_t>& o) {
    std::vector<int64_t> i = o;
    auto at = [&](int64_t j) {
      i[static_cast<size_t>(dim)] = j;
      return static_cast<size_t>(flat_index(shape, i));
    };
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < n; ++j) m = std::max(m, xv[at(j)]);
    double total = 0;
    for (int64_t j = 0; j < n; ++j) total += std::exp(xv[at(j)] - m);
    for (int64_t j = 0; j < n; ++j) out[at(j)] = log ? xv[at(j)] - m - std::log(total) : std::exp(xv[at(j)] - m) / total;
  });
  return out;
}

TEST(Softmax, EveryDimMatchesNaive) {
  uint64_t seed = 1;
  for (DType dtype : {DType::f32, DType::f64, DType::bf16}) {
    for (const Shape& shape : {Shape{3, 4, 5}, Shape{2, 700}, Shape{64, 300}}) {
      for (int64_t dim = -1; dim < static_cast<int64_t>(shape.size()); ++dim) {
        Tensor x = mul_scalar(seed % 2 ? random_strided(shape, seed, dtype) : randn(shape, seed, 0, dtype), 3.0);
        ++seed;
        int64_t d = dim < 0 ? dim + static_cast<int64_t>(shape.size()) : dim;
        std::vector<double> xv = host(x);
        double tol = dtype == DType::bf16 ? 8e-3 : dtype == DType::f32 ? 2e-6 : 1e-13;
        Tensor y = softmax(x, dim);
        ASSERT_EQ(y.shape(), shape);
        ASSERT_EQ(y.dtype(), dtype);
        expect_near_all(y, naive_softmax(xv, shape, d, false), tol, 1e-7, "softmax");
        Tensor ly = log_softmax(x, dim);
        expect_near_all(ly, naive_softmax(xv, shape, d, true), tol, tol * 10, "log_softmax");
      }
    }
  }
}

TEST(Softmax, ExtremeInputs) {
  const double inf = std::numeric_limits<double>::infinity();
  Tensor x = from_vector<float>({1000.0f, 1001.0f, -1000.0f, -std::numeric_limits<float>::infinity()}, {1, 4});
  std::vector<double> ref = naive_softmax({1000, 1001, -1000, -inf}, {1, 4}, 1, false);
  expect_near_all(softmax(x, 1), ref, 1e-6, 1e-30, "large softmax");
  std::vector<double> lref = naive_softmax({1000, 1001, -1000, -inf}, {1, 4}, 1, true);
  expect_near_all(log_softmax(x, 1), lref, 1e-6, 1e-6, "large log_softmax");
  EXPECT_TRUE(all_finite(softmax(x, 1)));
  EXPECT_ZT_ERROR(softmax(x, 2), "[softmax]", "dim 2 out of range", "[1, 4] f32 cpu");
  EXPECT_ZT_ERROR(log_softmax(arange(3), 0), "[log_softmax]", "floating", "[3] i64 cpu");
}

TEST(SoftmaxGrad, EveryDim) {
  Tensor x = random_noncontiguous_f64({3, 4, 5}, 3).set_requires_grad(true);
  for (int64_t dim : {0, 1, -1}) {
    gradcheck([dim](const std::vector<Tensor>& in) { return softmax(in[0], dim); }, {x});
    gradcheck([dim](const std::vector<Tensor>& in) { return log_softmax(in[0], dim); }, {x});
  }
}

TEST(Dropout, MaskScaleAndBackward) {
  const double p = 0.3;
  const uint64_t seed = 77, offset = 1000;
  Tensor x = random_strided({40, 50}, 5).set_requires_grad(true);
  Tensor y = dropout(x, p, seed, offset);
  std::vector<double> xv = host(x), yv = host(y);
  std::vector<double> ref(xv.size()), grad_ref(xv.size());
  Tensor g = randn({40, 50}, 6);
  std::vector<double> gv = host(g);
  int64_t kept = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    bool keep = rng::uniform(seed, offset + i) >= p;
    kept += keep;
    ref[i] = keep ? static_cast<float>(xv[i] * static_cast<float>(1.0 / (1.0 - p))) : 0.0;
    grad_ref[i] = keep ? static_cast<float>(gv[i] * static_cast<float>(1.0 / (1.0 - p))) : 0.0;
  }
  expect_near_all(y, ref, 1e-6, 0, "dropout forward");
  double frac = static_cast<double>(kept) / static_cast<double>(xv.size());
  EXPECT_NEAR(frac, 1 - p, 0.03);
  backward(y, g);
  expect_near_all(x.grad(), grad_ref, 1e-6, 0, "dropout backward");

  // A different offset draws a different mask; evaluation and p = 0 are the identity; p = 1 drops all.
  EXPECT_GT(max_abs_diff(dropout(x, p, seed, offset + 1), y), 0.0);
  EXPECT_TRUE(dropout(x, p, seed, offset, false).same(x));
  EXPECT_TRUE(dropout(x, 0.0, seed, offset).same(x));
  EXPECT_EQ(max_abs_diff(dropout(x, 1.0, seed, offset), zeros({40, 50})), 0.0);
  EXPECT_ZT_ERROR(dropout(x, 1.5, seed, offset), "[dropout]", "p must be in [0, 1]", "[40, 50] f32 cpu");
  EXPECT_ZT_ERROR(dropout(x, -0.1, seed, offset), "[dropout]", "p must be in [0, 1]");
}

TEST(DropoutGrad, Gradcheck) {
  Tensor x = random_noncontiguous_f64({6, 7}, 8).set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& in) { return dropout(in[0], 0.4, 3, 12); }, {x});
  // A split tensor draws the same mask as the whole when each piece uses its element offset.
  Tensor whole = randn({8, 10}, 9);
  Tensor full = dropout(whole, 0.5, 21, 100);
  Tensor top = dropout(contiguous(narrow(whole, 0, 0, 3)), 0.5, 21, 100);
  Tensor bottom = dropout(contiguous(narrow(whole, 0, 3, 5)), 0.5, 21, 100 + 30);
  EXPECT_EQ(max_abs_diff(cat({top, bottom}, 0), full), 0.0);
}

}  // namespace
}  // namespace zt::testing
