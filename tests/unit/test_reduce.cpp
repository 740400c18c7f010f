// Reductions against naive loops (every dim subset, keepdim, strided inputs, float dtypes), f64
// gradchecks, max routing to the first maximum, and the comparison helpers.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/backend.h"
#include "core/ops.h"
#include "gradcheck.h"
#include "reference.h"

namespace zt::testing {
namespace {

// Naive reduction: out index = input index with reduced dims set to 0 (keepdim layout).
std::vector<double> naive_reduce(const std::vector<double>& xv, const Shape& shape, const std::vector<bool>& mask,
                                 bool is_max) {
  Shape keep = shape;
  for (size_t d = 0; d < shape.size(); ++d)
    if (mask[d]) keep[d] = 1;
  std::vector<double> out(static_cast<size_t>(shape_numel(keep)),
                          is_max ? -std::numeric_limits<double>::infinity() : 0.0);
  for_each_index(shape, [&](const std::vector<int64_t>& i) {
    std::vector<int64_t> o = i;
    for (size_t d = 0; d < shape.size(); ++d)
      if (mask[d]) o[d] = 0;
    double& acc = out[static_cast<size_t>(flat_index(keep, o))];
    double v = xv[static_cast<size_t>(flat_index(shape, i))];
    acc = is_max ? std::max(acc, v) : acc + v;
  });
  return out;
}

Shape result_shape(const Shape& shape, const std::vector<bool>& mask, bool keepdim) {
  Shape out;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (!mask[d]) out.push_back(shape[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

TEST(Reduce, SumAndMeanOverEveryDimSubset) {
  uint64_t seed = 1;
  for (DType dtype : {DType::f32, DType::f64, DType::bf16}) {
    for (const Shape& shape : {Shape{3, 4, 5}, Shape{2, 1, 6, 3}, Shape{70, 600}}) {
      const size_t nd = shape.size();
      for (uint32_t bits = 1; bits < (1u << nd); ++bits) {
        std::vector<bool> mask(nd);
        std::vector<int64_t> dims;
        for (size_t d = 0; d < nd; ++d) {
          mask[d] = (bits >> d) & 1u;
          if (mask[d]) dims.push_back(d % 2 ? static_cast<int64_t>(d) - static_cast<int64_t>(nd) : static_cast<int64_t>(d));
        }
        Tensor x = seed % 2 ? random_strided(shape, seed, dtype) : randn(shape, seed, 0, dtype);
        ++seed;
        std::vector<double> ref = naive_reduce(host(x), shape, mask, false);
        int64_t count = 1;
        for (size_t d = 0; d < nd; ++d)
          if (mask[d]) count *= shape[d];
        double tol = dtype == DType::bf16 ? 8e-3 : dtype == DType::f32 ? 1e-6 : 1e-12;
        for (bool keepdim : {false, true}) {
          Tensor s = sum(x, dims, keepdim);
          ASSERT_EQ(s.shape(), result_shape(shape, mask, keepdim));
          // Sums of random signs can cancel: allow an absolute error relative to sqrt(count).
          expect_near_all(s, ref, tol, tol * std::sqrt(static_cast<double>(count)), "sum");
          std::vector<double> mref;
          for (double v : ref) mref.push_back(v / static_cast<double>(count));
          expect_near_all(mean(x, dims, keepdim), mref, 2 * tol, tol, "mean");
        }
      }
    }
  }
  Tensor big = randn({1000, 300}, 5);  // a full reduction over several chunks
  std::vector<double> bv = host(big);
  double total = 0;
  for (double v : bv) total += v;
  EXPECT_NEAR(sum(big).item(), total, 1e-4);
  EXPECT_EQ(sum(big).dim(), 0);
  EXPECT_NEAR(mean(big).item(), total / 300000.0, 1e-9);
}

TEST(Reduce, MaxAndArgmax) {
  uint64_t seed = 50;
  for (DType dtype : {DType::f32, DType::f64, DType::f16}) {
    for (const Shape& shape : {Shape{4, 7}, Shape{3, 5, 6}, Shape{2, 300, 130}}) {
      for (int64_t dim = 0; dim < static_cast<int64_t>(shape.size()); ++dim) {
        Tensor x = seed % 2 ? random_strided(shape, seed, dtype) : randn(shape, seed, 0, dtype);
        ++seed;
        std::vector<double> xv = host(x);
        std::vector<bool> mask(shape.size(), false);
        mask[static_cast<size_t>(dim)] = true;
        std::vector<double> ref = naive_reduce(xv, shape, mask, true);
        Tensor m = max(x, dim);
        ASSERT_EQ(m.shape(), result_shape(shape, mask, false));
        expect_equal_all(m, ref, "max");
        expect_equal_all(max(x, dim - static_cast<int64_t>(shape.size()), true), ref, "max keepdim");
        // argmax: the first index whose value is the maximum.
        std::vector<int64_t> idx = argmax(x, dim).to_vector<int64_t>();
        Shape keep = shape;
        keep[static_cast<size_t>(dim)] = 1;
        size_t k = 0;
        for_each_index(keep, [&](const std::vector<int64_t>& o) {
          std::vector<int64_t> i = o;
          int64_t first = -1;
          for (int64_t j = 0; j < shape[static_cast<size_t>(dim)] && first < 0; ++j) {
            i[static_cast<size_t>(dim)] = j;
            if (xv[static_cast<size_t>(flat_index(shape, i))] == ref[k]) first = j;
          }
          EXPECT_EQ(idx[k], first) << "row " << k;
          ++k;
        });
      }
    }
  }
  Tensor x = randn({3, 4}, 9);
  std::vector<double> xv = host(x);
  EXPECT_EQ(max(x).item(), *std::max_element(xv.begin(), xv.end()));
  EXPECT_EQ(max(x).dim(), 0);
  EXPECT_EQ(argmax(x, 1, true).shape(), (Shape{3, 1}));
  EXPECT_EQ(argmax(x, 1).dtype(), DType::i64);
}

TEST(Reduce, Errors) {
  Tensor x = randn({2, 3}, 1);
  EXPECT_ZT_ERROR(sum(x, {0, -2}), "[sum]", "given twice", "[2, 3] f32 cpu");
  EXPECT_ZT_ERROR(sum(x, {2}), "[sum]", "dim 2 out of range", "[2, 3] f32 cpu");
  EXPECT_ZT_ERROR(max(x, -3), "[max]", "out of range");
  EXPECT_ZT_ERROR(max(zeros({0, 3})), "[max]", "empty");
  EXPECT_ZT_ERROR(mean(zeros({0})), "[mean]", "no elements");
  EXPECT_ZT_ERROR(sum(arange(3)), "[sum]", "floating", "i64");
  EXPECT_ZT_ERROR(allclose(x, randn({3, 2}, 1)), "[allclose]", "a is [2, 3] f32 cpu", "b is [3, 2] f32 cpu");
}

TEST(Reduce, SumSquaresIntoAddsToTheAccumulator) {
  Tensor acc = full({1}, 2.0, DType::f64);
  Tensor a = randn({5, 3}, 41), b = randn({17}, 42);
  double want = 2.0;
  for (const Tensor* t : {&a, &b}) {
    for (double v : host(*t)) want += v * v;
    cpu_backend().sum_squares_into(*t, acc);
  }
  EXPECT_NEAR(acc.item(), want, 1e-12 * want);
  Tensor wrong = full({1}, 0.0, DType::f32);
  EXPECT_ZT_ERROR(cpu_backend().sum_squares_into(a, wrong), "[sum_squares_into] acc must be one f64");
}

TEST(Reduce, ComparisonHelpers) {
  Tensor a = from_vector<double>({1.0, 2.0, -3.0, 4.0}, {2, 2});
  Tensor b = from_vector<double>({1.0, 2.0 + 1e-9, -3.0, 4.5}, {2, 2});
  EXPECT_DOUBLE_EQ(max_abs_diff(a, b), 0.5);
  EXPECT_FALSE(allclose(a, b));
  EXPECT_TRUE(allclose(a, b, 0.2, 0.0));  // 0.5 <= 0.2 * 4.5
  EXPECT_FALSE(allclose(a, b, 0.1, 0.0));
  EXPECT_TRUE(allclose(to(a, DType::f32), to(a, DType::f32)));
  Tensor nan = from_vector<double>({1.0, std::nan(""), 0.0, 0.0}, {2, 2});
  EXPECT_FALSE(allclose(nan, nan));
  EXPECT_TRUE(std::isnan(max_abs_diff(a, nan)));
  EXPECT_DOUBLE_EQ(norm(a), std::sqrt(1.0 + 4.0 + 9.0 + 16.0));
  EXPECT_DOUBLE_EQ(norm(transpose(a, 0, 1)), norm(a));
  Tensor big = randn({512, 300}, 3, 0, DType::bf16);
  double ss = 0;
  for (double v : host(big)) ss += v * v;
  EXPECT_NEAR(norm(big), std::sqrt(ss), 1e-9 * std::sqrt(ss));
  EXPECT_TRUE(all_finite(big));
  EXPECT_FALSE(all_finite(nan));
  Tensor inf = from_vector<float>({1.0f, std::numeric_limits<float>::infinity()}, {2});
  EXPECT_FALSE(all_finite(inf));
  EXPECT_TRUE(all_finite(narrow(inf, 0, 0, 1)));
}

// ---- gradients ---------------------------------------------------------------------------------

TEST(ReduceGrad, SumMean) {
  Tensor x = random_noncontiguous_f64({3, 4, 2}, 1).set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& in) { return sum(in[0]); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return sum(in[0], {0, 2}); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return sum(in[0], {-2}, true); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return mean(in[0]); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return mean(in[0], {1}, true); }, {x});
}

TEST(ReduceGrad, MaxRoutesToFirstMaximum) {
  Tensor x = random_noncontiguous_f64({4, 5}, 2).set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& in) { return max(in[0], 1); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return max(in[0], 0, true); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return max(in[0]); }, {x});
  // Ties: the whole gradient goes to the first maximum.
  Tensor t = from_vector<double>({1.0, 3.0, 3.0, 2.0, 5.0, 5.0}, {2, 3}).set_requires_grad(true);
  backward(sum(mul(max(t, 1), from_vector<double>({2.0, 7.0}, {2}))));
  expect_equal_all(t.grad(), {0, 2, 0, 0, 7, 0}, "tie grad");
  Tensor u = from_vector<double>({4.0, 4.0, 1.0}, {3}).set_requires_grad(true);
  backward(max(u));
  expect_equal_all(u.grad(), {1, 0, 0}, "tie grad all");
}

}  // namespace
}  // namespace zt::testing
