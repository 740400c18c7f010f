// matmul (batch broadcast, transpose flags), linear, and the CPU gemm kernel against naive loops
// in f64; gradients against f64 finite differences.
#include <cmath>
#include <gtest/gtest.h>

#include <random>

#include "core/backend.h"
#include "gradcheck.h"

namespace zt {
namespace {

using testing::gradcheck;

std::vector<double> host(const Tensor& t) {
  NoGradGuard no_grad;
  return to(t.detach(), DType::f64).to_vector<double>();
}

void expect_close(const Tensor& out, const Shape& shape, const std::vector<double>& ref, double rtol, double atol,
                  const std::string& what) {
  ASSERT_EQ(out.shape(), shape) << what;
  std::vector<double> o = host(out);
  ASSERT_EQ(o.size(), ref.size()) << what;
  for (size_t i = 0; i < o.size(); ++i)
    ASSERT_NEAR(o[i], ref[i], atol + rtol * std::abs(ref[i])) << what << " element " << i;
}

Shape batch_of(const Tensor& x) { return Shape(x.shape().begin(), x.shape().end() - 2); }

// The reference: plain loops over the broadcast batch, in f64.
std::vector<double> naive_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb, Shape& out_shape) {
  const std::vector<double> av = host(a), bv = host(b);
  Shape sa = batch_of(a), sb = batch_of(b);
  const size_t nd = std::max(sa.size(), sb.size());
  sa.insert(sa.begin(), nd - sa.size(), 1);
  sb.insert(sb.begin(), nd - sb.size(), 1);
  Shape batch(nd);
  for (size_t d = 0; d < nd; ++d) batch[d] = std::max(sa[d], sb[d]);
  const int64_t ar = a.size(-2), ac = a.size(-1), br = b.size(-2), bc = b.size(-1);
  const int64_t m = ta ? ac : ar, k = ta ? ar : ac, n = tb ? br : bc;
  const Shape stride_a = contiguous_strides(sa), stride_b = contiguous_strides(sb);
  std::vector<double> out(static_cast<size_t>(shape_numel(batch) * m * n));
  for (int64_t bi = 0; bi < shape_numel(batch); ++bi) {
    int64_t rem = bi, ia = 0, ib = 0;
    for (size_t d = nd; d-- > 0;) {
      const int64_t idx = rem % batch[d];
      rem /= batch[d];
      ia += (sa[d] == 1 ? 0 : idx) * stride_a[d];
      ib += (sb[d] == 1 ? 0 : idx) * stride_b[d];
    }
    const double* pa = av.data() + ia * ar * ac;
    const double* pb = bv.data() + ib * br * bc;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t x = 0; x < k; ++x) s += (ta ? pa[x * ac + i] : pa[i * ac + x]) * (tb ? pb[j * bc + x] : pb[x * bc + j]);
        out[static_cast<size_t>((bi * m + i) * n + j)] = s;
      }
  }
  out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  return out;
}

enum class Layout { contiguous, transposed, strided };

// A random tensor of `shape` laid out as asked: contiguous; a transposed view of a contiguous
// buffer (passed to gemm with a flipped flag); or a narrowed view (copied before gemm).
Tensor make_operand(Shape shape, DType dtype, uint64_t seed, Layout layout) {
  if (layout == Layout::contiguous) return randn(shape, seed, 0, dtype);
  if (layout == Layout::transposed) {
    std::swap(shape[shape.size() - 1], shape[shape.size() - 2]);
    return transpose(randn(shape, seed, 0, dtype), -1, -2);
  }
  const int64_t cols = shape.back();
  shape.back() += 3;
  return narrow(randn(shape, seed, 0, dtype), -1, 1, cols);
}

Shape with_matrix(Shape batch, int64_t rows, int64_t cols) {
  batch.push_back(rows);
  batch.push_back(cols);
  return batch;
}

struct BatchCase {
  Shape a, b;
};
const std::vector<BatchCase> kBatchCases = {
    {{}, {}},       {{3}, {}},        {{}, {3}},  {{2, 3}, {2, 3}}, {{2, 1}, {3}},
    {{1, 3}, {2, 1}}, {{4}, {1}}, {{2, 2}, {}},
};

TEST(Matmul, ForwardMatchesNaiveLoopsForBroadcastFlagsLayoutsAndDtypes) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int64_t> dim(1, 9);
  uint64_t seed = 100;
  for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    for (const BatchCase& c : kBatchCases) {
      for (int flags = 0; flags < 4; ++flags) {
        const bool ta = flags & 1, tb = flags & 2;
        const int64_t m = dim(rng), k = dim(rng) + 8, n = dim(rng);
        const Layout la = static_cast<Layout>(seed % 3), lb = static_cast<Layout>((seed / 3) % 3);
        Tensor a = make_operand(with_matrix(c.a, ta ? k : m, ta ? m : k), dtype, seed++, la);
        Tensor b = make_operand(with_matrix(c.b, tb ? n : k, tb ? k : n), dtype, seed++, lb);
        Shape shape;
        std::vector<double> ref = naive_matmul(a, b, ta, tb, shape);
        const bool half = is_half(dtype);
        const double rtol = dtype == DType::f64 ? 1e-12 : half ? 1e-2 : 1e-5;
        const double atol = dtype == DType::f64 ? 1e-12 : half ? 5e-2 : 1e-5;
        expect_close(matmul(a, b, ta, tb), shape, ref, rtol, atol,
                     std::string(dtype_name(dtype)) + " a " + a.describe() + " b " + b.describe() + " flags " +
                         std::to_string(flags));
      }
    }
  }
}

TEST(Matmul, LargerProductsTakeTheThreadedPaths) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    Tensor a = randn({3, 70, 300}, 21, 0, dtype), b = make_operand({90, 300}, dtype, 22, Layout::transposed);
    Shape shape;
    std::vector<double> ref = naive_matmul(a, b, false, true, shape);
    const double tol = dtype == DType::f32 ? 1e-4 : 1e-1;
    expect_close(matmul(a, b, false, true), shape, ref, tol, tol, dtype_name(dtype));
  }
}

TEST(Matmul, WeightsCaseUsesOneGemmAndMatchesPerBatchProducts) {
  // a [B, T, K] x w [K, N]: the kernel runs one [B*T, K] GEMM; compare with 2-D products per batch.
  Tensor a = randn({3, 5, 16}, 1), w = randn({16, 7}, 2);
  Tensor out = matmul(a, w);
  for (int64_t i = 0; i < 3; ++i) {
    Tensor per = matmul(contiguous(narrow(a, 0, i, 1)), w);
    EXPECT_LE(max_abs_diff(narrow(out, 0, i, 1), per), 1e-6);
  }
}

TEST(Matmul, GradientsMatchFiniteDifferences) {
  const std::vector<BatchCase> cases = {{{}, {}}, {{3}, {}}, {{}, {2}}, {{2, 1}, {3}}, {{2}, {1}}};
  uint64_t seed = 500;
  for (const BatchCase& c : cases) {
    for (int flags = 0; flags < 4; ++flags) {
      const bool ta = flags & 1, tb = flags & 2;
      const int64_t m = 3, k = 4, n = 2;
      Tensor a = make_operand(with_matrix(c.a, ta ? k : m, ta ? m : k), DType::f64, seed++, Layout(flags % 3));
      Tensor b = make_operand(with_matrix(c.b, tb ? n : k, tb ? k : n), DType::f64, seed++, Layout((flags + 1) % 3));
      a.set_requires_grad(true);
      b.set_requires_grad(true);
      SCOPED_TRACE("a " + a.describe() + " b " + b.describe() + " flags " + std::to_string(flags));
      gradcheck([&](const std::vector<Tensor>& x) { return matmul(x[0], x[1], ta, tb); }, {a, b});
    }
  }
}

TEST(Matmul, GradientOfOneOperandOnly) {
  Tensor a = randn({2, 3, 4}, 1, 0, DType::f64), b = randn({4, 5}, 2, 0, DType::f64);
  b.set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); }, {a, b});
  EXPECT_FALSE(a.grad().defined());
}

std::vector<double> naive_linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const std::vector<double> xv = host(x), wv = host(w);
  const std::vector<double> bv = bias.defined() ? host(bias) : std::vector<double>();
  const int64_t in = w.size(1), out = w.size(0), rows = x.numel() / in;
  std::vector<double> y(static_cast<size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = bias.defined() ? bv[static_cast<size_t>(o)] : 0.0;
      for (int64_t i = 0; i < in; ++i) s += xv[static_cast<size_t>(r * in + i)] * wv[static_cast<size_t>(o * in + i)];
      y[static_cast<size_t>(r * out + o)] = s;
    }
  return y;
}

TEST(Linear, ForwardMatchesNaiveLoops) {
  uint64_t seed = 900;
  for (DType dtype : {DType::f32, DType::f64, DType::bf16}) {
    for (const Shape& lead : {Shape{}, Shape{5}, Shape{2, 3}}) {
      for (bool with_bias : {true, false}) {
        Shape xs = lead;
        xs.push_back(11);
        Tensor x = randn(xs, seed++, 0, dtype);
        if (lead.size() == 2) x = transpose(randn({3, 2, 11}, seed++, 0, dtype), 0, 1);  // non-contiguous rows
        Tensor w = make_operand({6, 11}, dtype, seed++, Layout::strided);
        Tensor b = with_bias ? randn({6}, seed++, 0, dtype) : Tensor();
        Shape ys = lead;
        ys.push_back(6);
        const double tol = dtype == DType::f64 ? 1e-12 : is_half(dtype) ? 3e-2 : 1e-5;
        expect_close(linear(x, w, b), ys, naive_linear(x, w, b), tol, tol,
                     std::string(dtype_name(dtype)) + " x " + x.describe());
      }
    }
  }
}

TEST(Linear, GradientsMatchFiniteDifferences) {
  for (const Shape& xs : {Shape{4}, Shape{3, 4}, Shape{2, 3, 4}}) {
    Tensor x = randn(xs, 11, 0, DType::f64), w = randn({5, 4}, 12, 0, DType::f64), b = randn({5}, 13, 0, DType::f64);
    x.set_requires_grad(true);
    w.set_requires_grad(true);
    b.set_requires_grad(true);
    SCOPED_TRACE(x.describe());
    gradcheck([](const std::vector<Tensor>& v) { return linear(v[0], v[1], v[2]); }, {x, w, b});
    gradcheck([](const std::vector<Tensor>& v) { return linear(v[0], v[1]); }, {x, w});
  }
}

TEST(LinearGelu, ForwardMatchesNaiveLoopsAndGradientsMatchFiniteDifferences) {
  auto gelu_ref = [](double v) { return 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))); };
  uint64_t seed = 1000;
  for (DType dtype : {DType::f32, DType::f64}) {
    for (bool with_bias : {true, false}) {
      Tensor x = randn({2, 3, 7}, seed++, 0, dtype), w = randn({5, 7}, seed++, 0, dtype);
      Tensor b = with_bias ? randn({5}, seed++, 0, dtype) : Tensor();
      std::vector<double> want = naive_linear(x, w, b);
      for (double& v : want) v = gelu_ref(v);
      const double tol = dtype == DType::f64 ? 1e-12 : 1e-5;
      expect_close(linear_gelu(x, w, b), {2, 3, 5}, want, tol, tol, std::string(dtype_name(dtype)));
    }
  }
  Tensor x = randn({3, 4}, 21, 0, DType::f64), w = randn({5, 4}, 22, 0, DType::f64), b = randn({5}, 23, 0, DType::f64);
  for (Tensor* t : {&x, &w, &b}) t->set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& v) { return linear_gelu(v[0], v[1], v[2]); }, {x, w, b});
  gradcheck([](const std::vector<Tensor>& v) { return linear_gelu(v[0], v[1]); }, {x, w});
}

// mlp is one node for linear(linear_gelu(x, w1, b1), w2, b2): the same values, and gradients that
// match both that composition and finite differences, with and without either bias.
TEST(Mlp, MatchesLinearGeluThenLinearAndFiniteDifferences) {
  uint64_t seed = 2000;
  for (int biases = 0; biases < 4; ++biases) {
    const bool has_b1 = biases & 1, has_b2 = biases & 2;
    Tensor x = randn({2, 3, 4}, seed++, 0, DType::f64), w1 = randn({8, 4}, seed++, 0, DType::f64);
    Tensor w2 = randn({5, 8}, seed++, 0, DType::f64);
    Tensor b1 = has_b1 ? randn({8}, seed++, 0, DType::f64) : Tensor();
    Tensor b2 = has_b2 ? randn({5}, seed++, 0, DType::f64) : Tensor();
    std::vector<Tensor> leaves{x, w1, w2};
    if (has_b1) leaves.push_back(b1);
    if (has_b2) leaves.push_back(b2);
    for (Tensor& t : leaves) t.set_requires_grad(true);
    SCOPED_TRACE("b1 " + std::to_string(has_b1) + " b2 " + std::to_string(has_b2));
    auto fn = [has_b1, has_b2](const std::vector<Tensor>& v, bool fused) {
      const Tensor bias1 = has_b1 ? v[3] : Tensor();
      const Tensor bias2 = has_b2 ? v[has_b1 ? 4 : 3] : Tensor();
      return fused ? mlp(v[0], v[1], bias1, v[2], bias2) : linear(linear_gelu(v[0], v[1], bias1), v[2], bias2);
    };
    Tensor fused = fn(leaves, true), composed = fn(leaves, false);
    EXPECT_EQ(fused.shape(), Shape({2, 3, 5}));
    expect_close(fused, composed.shape(), host(composed), 1e-14, 1e-14, "forward");
    Tensor dy = randn({2, 3, 5}, seed++, 0, DType::f64);
    std::vector<Tensor> g_fused = grad({fused}, leaves, {dy});
    std::vector<Tensor> g_composed = grad({composed}, leaves, {dy});
    for (size_t i = 0; i < leaves.size(); ++i)
      expect_close(g_fused[i], g_composed[i].shape(), host(g_composed[i]), 1e-12, 1e-12, "grad " + std::to_string(i));
    gradcheck([&](const std::vector<Tensor>& v) { return fn(v, true); }, leaves);
  }
}

TEST(GemmKernel, AccumulateAddsToTheStartingValue) {
  for (DType dtype : {DType::f32, DType::f64, DType::bf16}) {
    Tensor a = randn({2, 3, 4}, 1, 0, dtype), b = randn({4, 5}, 2, 0, dtype), acc = randn({2, 3, 5}, 3, 0, dtype);
    Tensor out = cpu_backend().gemm(a, b, false, false, 2, acc);
    Shape shape;
    std::vector<double> ref = naive_matmul(a, b, false, false, shape);
    std::vector<double> start = host(acc);
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += start[i];
    const double tol = dtype == DType::f64 ? 1e-12 : is_half(dtype) ? 3e-2 : 1e-5;
    expect_close(out, {2, 3, 5}, ref, tol, tol, dtype_name(dtype));
  }
  // Shared a, batched and transposed b: out[i] = a b[i]^T.
  Tensor a = randn({3, 4}, 4), b = randn({2, 5, 4}, 5);
  Tensor out = cpu_backend().gemm(a, b, false, true, 2, Tensor());
  Shape shape;
  expect_close(out, {2, 3, 5}, naive_matmul(a, b, false, true, shape), 1e-5, 1e-5, "shared a");
}

TEST(Matmul, EmptyInnerDimensionGivesZeros) {
  Tensor out = matmul(empty({3, 0}), empty({0, 4}));
  ASSERT_EQ(out.shape(), Shape({3, 4}));
  for (float v : out.to_vector<float>()) EXPECT_EQ(v, 0.0f);
}

TEST(Matmul, BadInputsNameTheOpAndBothOperands) {
  EXPECT_ZT_ERROR(matmul(zeros({2, 3}), zeros({4, 5})),
                  "[matmul] inner dimensions differ: a is [2, 3] f32 cpu, b is [4, 5] f32 cpu");
  EXPECT_ZT_ERROR(matmul(zeros({2, 3}), zeros({5, 4}), false, true), "[matmul] inner dimensions differ",
                  "b is [5, 4] f32 cpu (transposed)");
  EXPECT_ZT_ERROR(matmul(zeros({2, 3}), zeros({3, 4}, DType::f64)), "[matmul] dtypes differ", "[2, 3] f32 cpu",
                  "[3, 4] f64 cpu");
  EXPECT_ZT_ERROR(matmul(zeros({3}), zeros({3, 4})), "[matmul] operands need at least 2 dims", "a is [3] f32 cpu");
  EXPECT_ZT_ERROR(matmul(zeros({2, 3, 4}), zeros({3, 4, 5})), "[matmul] batch dims do not broadcast",
                  "a is [2, 3, 4] f32 cpu", "b is [3, 4, 5] f32 cpu");
  EXPECT_ZT_ERROR(matmul(zeros({2, 2}, DType::i64), zeros({2, 2}, DType::i64)), "[matmul] needs floating operands");
  EXPECT_ZT_ERROR(linear(zeros({2, 3}), zeros({4, 5})), "[linear] x [..., in] and weight [out, in] do not match",
                  "x is [2, 3] f32 cpu", "weight is [4, 5] f32 cpu");
  EXPECT_ZT_ERROR(linear(zeros({2, 3}), zeros({4, 3}), zeros({3})), "[linear] bias must be [out]",
                  "bias is [3] f32 cpu");
  EXPECT_ZT_ERROR(linear(zeros({2, 3}), zeros({4, 3}, DType::bf16)), "[linear] dtypes differ");
  EXPECT_ZT_ERROR(cpu_backend().gemm(zeros({2, 3, 4}), zeros({3, 4, 5}), false, false, 2, Tensor()), "[gemm]",
                  "batch 2 does not match");
}

}  // namespace
}  // namespace zt
