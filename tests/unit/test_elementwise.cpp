// Elementwise ops against naive loops in f64 (broadcasting, strided inputs, all float dtypes),
// f64 gradchecks, in-place add_/mul_, and the error messages.
#include <gtest/gtest.h>

#include <cmath>

#include "core/backend.h"
#include "core/ops.h"
#include "gradcheck.h"
#include "reference.h"

namespace zt::testing {
namespace {

// Naive broadcasting: the element of `shape` that output index `out_idx` reads.
double broadcast_at(const std::vector<double>& values, const Shape& shape, const std::vector<int64_t>& out_idx) {
  size_t lead = out_idx.size() - shape.size();
  int64_t flat = 0;
  for (size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + (shape[d] == 1 ? 0 : out_idx[lead + d]);
  return values[static_cast<size_t>(flat)];
}

double apply(BinaryOp op, double a, double b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;
  }
  return 0;
}

Tensor run(BinaryOp op, const Tensor& a, const Tensor& b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;
  }
  return {};
}

double tolerance(DType d) {
  switch (d) {
    case DType::f64: return 1e-14;
    case DType::f32: return 1e-6;
    case DType::f16: return 1e-3;
    default: return 8e-3;  // bf16: 8 mantissa bits
  }
}

struct ShapePair {
  Shape a, b, out;
  bool strided;
};

TEST(Elementwise, BinaryBroadcastMatchesNaive) {
  const std::vector<ShapePair> cases = {
      {{2, 3, 4}, {4}, {2, 3, 4}, false},      {{2, 1, 4}, {3, 1}, {2, 3, 4}, false},
      {{5, 7}, {5, 7}, {5, 7}, true},          {{}, {2, 3}, {2, 3}, false},
      {{4, 1}, {1, 6}, {4, 6}, true},          {{300, 400}, {400}, {300, 400}, true},  // threaded paths
      {{3, 1, 5}, {2, 1, 1, 5}, {2, 3, 1, 5}, false}};
  uint64_t seed = 10;
  for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    for (const ShapePair& c : cases) {
      Tensor a = c.strided ? random_strided(c.a, seed++, dtype) : randn(c.a, seed++, 0, dtype);
      Tensor b = c.strided && c.b.size() >= 2 ? random_strided(c.b, seed++, dtype) : randn(c.b, seed++, 0, dtype);
      // Keep divisors away from zero so that relative errors stay meaningful.
      b = add_scalar(mul_scalar(exp(mul_scalar(b, 0.5)), 1.0), 0.25);
      std::vector<double> av = host(a), bv = host(b);
      for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div}) {
        Tensor out = run(op, a, b);
        ASSERT_EQ(out.shape(), c.out);
        ASSERT_EQ(out.dtype(), dtype);
        std::vector<double> ref;
        for_each_index(c.out, [&](const std::vector<int64_t>& i) {
          ref.push_back(apply(op, broadcast_at(av, c.a, i), broadcast_at(bv, c.b, i)));
        });
        double tol = tolerance(dtype);
        // Differences of nearly equal numbers lose relative precision; bound by the operands' size.
        // f16 results below 2^-14 are subnormal, with a fixed spacing of 2^-24.
        double atol = (op == BinaryOp::sub || op == BinaryOp::add ? 4 * tol : 0) + (dtype == DType::f16 ? 1e-7 : 0);
        expect_near_all(out, ref, tol, atol, dtype_name(dtype));
      }
    }
  }
}

TEST(Elementwise, IntegerAddAndErrors) {
  Tensor a = from_vector<int64_t>({1, 2, 3}, {3}), b = from_vector<int64_t>({10}, {1});
  EXPECT_EQ(add(a, b).to_vector<int64_t>(), (std::vector<int64_t>{11, 12, 13}));
  EXPECT_EQ(mul(a, a).to_vector<int64_t>(), (std::vector<int64_t>{1, 4, 9}));
  EXPECT_ZT_ERROR(div(a, b), "[div]", "needs floating tensors");
  Tensor x = randn({2, 3}, 1), y = randn({4}, 2);
  EXPECT_ZT_ERROR(add(x, y), "[add] shapes [2, 3] f32 cpu and [4] f32 cpu do not broadcast");
  EXPECT_ZT_ERROR(mul(randn({2}, 1), randn({2}, 2, 0, DType::f64)),
                  "[mul] dtypes differ: a is [2] f32 cpu, b is [2] f64 cpu (cast with to())");
  EXPECT_ZT_ERROR(sub(x, Tensor()), "[sub]", "undefined");
  EXPECT_ZT_ERROR(exp(a), "[exp]", "needs a floating tensor", "[3] i64 cpu");
}

double gelu_ref(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }

TEST(Elementwise, UnaryMatchesStd) {
  struct Case {
    const char* name;
    std::function<Tensor(const Tensor&)> op;
    std::function<double(double)> ref;
    bool positive;  // needs positive inputs
  };
  const std::vector<Case> cases = {
      {"neg", [](const Tensor& x) { return neg(x); }, [](double x) { return -x; }, false},
      {"exp", [](const Tensor& x) { return exp(x); }, [](double x) { return std::exp(x); }, false},
      {"log", [](const Tensor& x) { return log(x); }, [](double x) { return std::log(x); }, true},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, [](double x) { return std::sqrt(x); }, true},
      {"tanh", [](const Tensor& x) { return tanh(x); }, [](double x) { return std::tanh(x); }, false},
      {"relu", [](const Tensor& x) { return relu(x); }, [](double x) { return x > 0 ? x : 0.0; }, false},
      {"gelu", [](const Tensor& x) { return gelu(x); }, gelu_ref, false},
      {"add_scalar", [](const Tensor& x) { return add_scalar(x, 0.75); }, [](double x) { return x + 0.75; }, false},
      {"mul_scalar", [](const Tensor& x) { return mul_scalar(x, -1.5); }, [](double x) { return x * -1.5; }, false},
      {"pow_scalar 3", [](const Tensor& x) { return pow_scalar(x, 3.0); }, [](double x) { return x * x * x; }, false},
      {"pow_scalar 2.5", [](const Tensor& x) { return pow_scalar(x, 2.5); }, [](double x) { return std::pow(x, 2.5); },
       true},
  };
  uint64_t seed = 100;
  for (DType dtype : {DType::f32, DType::f64, DType::bf16}) {
    for (const Case& c : cases) {
      for (bool strided : {false, true}) {
        Shape shape = strided ? Shape{37, 29} : Shape{200, 300};
        Tensor x = strided ? random_strided(shape, seed++, dtype) : randn(shape, seed++, 0, dtype);
        if (c.positive) x = add_scalar(exp(x), 0.01);
        std::vector<double> xv = host(x), ref;
        for (double v : xv) ref.push_back(c.ref(v));
        Tensor y = c.op(x);
        ASSERT_EQ(y.dtype(), dtype);
        ASSERT_EQ(y.shape(), shape);
        double tol = dtype == DType::f32 ? 2e-6 : tolerance(dtype);
        expect_near_all(y, ref, tol, tol, (std::string(c.name) + " " + dtype_name(dtype)).c_str());
      }
    }
  }
}

TEST(Elementwise, GeluAtExtremes) {
  // Far in the tails tanh saturates: the result must stay finite and exact (0 or x).
  std::vector<double> xs = {-1e4, -60.0, -30.0, -5.0, -1e-3, 0.0, 1e-3, 5.0, 30.0, 60.0, 1e4};
  for (DType dtype : {DType::f32, DType::f64}) {
    Tensor x = from_vector_as(xs, {static_cast<int64_t>(xs.size())}, dtype).set_requires_grad(true);
    Tensor y = gelu(x);
    std::vector<double> ref;
    for (double v : xs) ref.push_back(gelu_ref(v));
    expect_near_all(y, ref, 1e-6, 1e-30, dtype_name(dtype));
    backward(sum(y));
    EXPECT_TRUE(all_finite(x.grad()));
    std::vector<double> g = host(x.grad());
    EXPECT_EQ(g.front(), 0.0);
    EXPECT_EQ(g.back(), 1.0);
    EXPECT_NEAR(g[5], 0.5, 1e-12);  // gelu'(0) = 1/2
  }
}

TEST(Elementwise, InPlace) {
  Tensor dst = randn({4, 5}, 1);
  std::vector<double> d0 = host(dst);
  Tensor src = random_strided({4, 5}, 2);
  std::vector<double> sv = host(src);
  add_(dst, src, -0.5);
  std::vector<double> ref;
  for (size_t i = 0; i < d0.size(); ++i) ref.push_back(static_cast<float>(d0[i] + static_cast<float>(-0.5 * sv[i])));
  expect_near_all(dst, ref, 1e-6, 1e-7, "add_");
  // A bf16 source is widened into an f32 destination.
  Tensor half = to(src, DType::bf16);
  std::vector<double> hv = host(half), before = host(dst);
  add_(dst, half);
  ref.clear();
  for (size_t i = 0; i < hv.size(); ++i) ref.push_back(before[i] + hv[i]);
  expect_near_all(dst, ref, 1e-6, 1e-7, "add_ bf16");
  // A strided destination (a transposed window) changes only its elements.
  Tensor big = randn({6, 4}, 3);
  std::vector<double> bv = host(big);
  Tensor window = transpose(narrow(big, 0, 1, 5), 0, 1);  // [4, 5]
  mul_(window, 3.0);
  add_(window, src, 1.0);
  std::vector<double> after = host(big);
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t j = 0; j < 4; ++j) {
      double want = bv[static_cast<size_t>(i * 4 + j)];
      if (i >= 1) want = static_cast<float>(static_cast<float>(want * 3.0) + sv[static_cast<size_t>(j * 5 + i - 1)]);
      EXPECT_NEAR(after[static_cast<size_t>(i * 4 + j)], want, 1e-5) << i << "," << j;
    }
  EXPECT_ZT_ERROR(add_(dst, randn({5, 4}, 1)), "[add_]", "dst is [4, 5] f32 cpu", "src is [5, 4] f32 cpu");
}

// ---- gradients ---------------------------------------------------------------------------------

// add_ of a 16-bit tensor into an f32 one widens on the fly on the CPU (Backend::axpy), and large
// contiguous casts and copies run in parallel pieces: all must equal the per-element reference,
// bit for bit, including the ragged tail of the last piece.
TEST(Elementwise, WideningAddAndLargeCastsMatchPerElement) {
  const int64_t n = 3 * (1 << 20) + 17;  // several 4 MiB copy pieces and OpenMP chunks
  for (DType half : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(half));
    const Tensor src = to(randn({n}, 5), half);
    Tensor acc = randn({n}, 6);
    const std::vector<float> before = acc.to_vector<float>();
    add_(acc, src, 0.5);
    const Tensor wide = to(src, DType::f32);  // the cast path
    const std::vector<float> got = acc.to_vector<float>(), w = wide.to_vector<float>();
    const std::vector<float> copy = clone(acc).to_vector<float>();  // the parallel byte copy
    // The reference widening, element by element from the raw 16-bit values.
    std::vector<float> ref(static_cast<size_t>(n));
    if (half == DType::bf16) {
      const std::vector<bf16> h = src.to_vector<bf16>();
      for (size_t k = 0; k < ref.size(); ++k) ref[k] = bf16_to_float(h[k]);
    } else {
      const std::vector<f16> h = src.to_vector<f16>();
      for (size_t k = 0; k < ref.size(); ++k) ref[k] = f16_to_float(h[k]);
    }
    int64_t bad = 0, bad_cast = 0, bad_copy = 0;
    for (size_t k = 0; k < ref.size(); ++k) {
      bad_cast += w[k] != ref[k];
      bad += got[k] != before[k] + 0.5f * ref[k];
      bad_copy += copy[k] != got[k];
    }
    EXPECT_EQ(bad, 0);
    EXPECT_EQ(bad_cast, 0);
    EXPECT_EQ(bad_copy, 0);
  }
}

TEST(ElementwiseGrad, BinaryWithBroadcasting) {
  Tensor a = random_noncontiguous_f64({3, 4}, 1).set_requires_grad(true);
  Tensor b = random_f64({4}, 2).set_requires_grad(true);
  Tensor c = random_f64({2, 1, 1}, 3).set_requires_grad(true);
  Tensor pos = add_scalar(exp(random_f64({3, 1}, 4)), 0.5).set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& in) { return add(in[0], in[1]); }, {a, b});
  gradcheck([](const std::vector<Tensor>& in) { return sub(in[1], in[0]); }, {a, b});
  gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, {a, c});
  gradcheck([](const std::vector<Tensor>& in) { return div(in[0], in[1]); }, {a, pos});
  gradcheck([](const std::vector<Tensor>& in) { return div(in[1], in[0]); }, {pos, c});
  // The same tensor on both sides: contributions add up.
  gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], in[0]); }, {a});
  // Only one operand requires grad.
  Tensor fixed = random_f64({3, 4}, 5);
  gradcheck([&](const std::vector<Tensor>& in) { return mul(fixed, in[0]) + in[0] / fixed; }, {b});
}

TEST(ElementwiseGrad, Unary) {
  Tensor x = random_noncontiguous_f64({4, 5}, 7).set_requires_grad(true);
  Tensor p = add_scalar(exp(random_f64({4, 5}, 8)), 0.1).set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& in) { return neg(in[0]); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return exp(in[0]); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return log(in[0]); }, {p});
  gradcheck([](const std::vector<Tensor>& in) { return sqrt(in[0]); }, {p});
  gradcheck([](const std::vector<Tensor>& in) { return tanh(in[0]); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return relu(in[0]); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return gelu(in[0]); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return add_scalar(in[0], 2.0); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return mul_scalar(in[0], -3.0); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return pow_scalar(in[0], 3.0); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return pow_scalar(in[0], -1.5); }, {p});
}

}  // namespace
}  // namespace zt::testing
