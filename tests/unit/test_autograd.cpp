// The autograd engine: shared inputs, accumulation across backward passes, grad-ready hooks (once
// per backward, with the complete gradient), no-grad scopes, grad(), and checkpoint().
#include <gtest/gtest.h>

#include "core/ops.h"
#include "gradcheck.h"
#include "reference.h"

namespace zt::testing {
namespace {

std::vector<double> map(const std::vector<double>& v, double (*f)(double)) {
  std::vector<double> out;
  for (double x : v) out.push_back(f(x));
  return out;
}

TEST(Autograd, SharedInputsSumTheirContributions) {
  // y = x*x + 3x + exp(x) through a diamond: dy/dx = 2x + 3 + exp(x).
  Tensor x = random_f64({5}, 1).set_requires_grad(true);
  Tensor y = sum(add(add(mul(x, x), mul_scalar(x, 3.0)), exp(x)));
  backward(y);
  expect_near_all(x.grad(), map(host(x), [](double v) { return 2 * v + 3 + std::exp(v); }), 1e-14, 1e-14, "diamond");
  // Two leaves, one used twice across different branches.
  Tensor a = random_f64({3}, 2).set_requires_grad(true), b = random_f64({3}, 3).set_requires_grad(true);
  backward(sum(mul(mul(a, b), a)));  // a^2 b: d/da = 2ab, d/db = a^2
  std::vector<double> av = host(a), bv = host(b), ga, gb;
  for (size_t i = 0; i < 3; ++i) {
    ga.push_back(2 * av[i] * bv[i]);
    gb.push_back(av[i] * av[i]);
  }
  expect_near_all(a.grad(), ga, 1e-14, 1e-14, "a");
  expect_near_all(b.grad(), gb, 1e-14, 1e-14, "b");
}

TEST(Autograd, AccumulatesAcrossBackwardsUntilZeroGrad) {
  Tensor x = random_f64({4}, 4).set_requires_grad(true);
  std::vector<double> xv = host(x);
  backward(sum(mul(x, x)));
  backward(sum(mul_scalar(x, 5.0)));
  std::vector<double> want;
  for (double v : xv) want.push_back(2 * v + 5);
  expect_near_all(x.grad(), want, 1e-14, 1e-14, "accumulated");
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
  backward(sum(x));
  expect_equal_all(x.grad(), {1, 1, 1, 1}, "after zero_grad");
  // A gradient given for a non-scalar root.
  x.zero_grad();
  Tensor g = random_f64({4}, 5);
  backward(mul_scalar(x, 2.0), g);
  expect_near_all(x.grad(), map(host(g), [](double v) { return 2 * v; }), 0, 0, "root grad");
  EXPECT_ZT_ERROR(backward(mul_scalar(x, 2.0)), "[backward]", "non-scalar root", "[4] f64 cpu");
  EXPECT_ZT_ERROR(backward(sum(random_f64({2}, 1))), "[backward]", "does not require grad");
}

TEST(Autograd, GradReadyHooksFireOncePerBackwardWithTheCompleteGradient) {
  Tensor w = random_f64({3}, 6).set_requires_grad(true);
  Tensor other = random_f64({3}, 7).set_requires_grad(true);
  std::vector<std::vector<double>> seen;
  w.register_grad_ready_hook([&](const Tensor& g) { seen.push_back(host(g)); });
  int other_calls = 0;
  other.register_grad_ready_hook([&](const Tensor&) { ++other_calls; });
  std::vector<double> wv = host(w), ov = host(other);
  // w reaches the loss through three paths.
  auto loss = [&] { return sum(add(add(mul(w, other), mul_scalar(w, 2.0)), mul(w, w))); };
  backward(loss());
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(other_calls, 1);
  std::vector<double> once;
  for (size_t i = 0; i < 3; ++i) once.push_back(ov[i] + 2 + 2 * wv[i]);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(seen[0][i], once[i], 1e-14);
  backward(loss());
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(other_calls, 2);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(seen[1][i], 2 * once[i], 1e-14);  // the accumulated .grad
  EXPECT_ZT_ERROR(mul(w, w).register_grad_ready_hook([](const Tensor&) {}), "[tensor.register_grad_ready_hook]",
                  "leaves");
}

TEST(Autograd, NoGradScope) {
  Tensor x = randn({3}, 1).set_requires_grad(true);
  {
    NoGradGuard no_grad;
    EXPECT_FALSE(grad_mode_enabled());
    Tensor y = mul(x, x);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_FALSE(y.grad_fn());
    {
      EnableGradGuard enable;
      EXPECT_TRUE(mul(x, x).requires_grad());
    }
    EXPECT_FALSE(grad_mode_enabled());
    EXPECT_FALSE(transpose(reshape(x, {1, 3}), 0, 1).requires_grad());
  }
  EXPECT_TRUE(grad_mode_enabled());
  EXPECT_TRUE(mul(x, x).requires_grad());
  EXPECT_FALSE(mul(x.detach(), x.detach()).requires_grad());
}

TEST(Autograd, GradFunctionLeavesDotGradAlone) {
  Tensor x = random_f64({3}, 8).set_requires_grad(true), y = random_f64({3}, 9).set_requires_grad(true);
  Tensor unused = random_f64({2}, 10).set_requires_grad(true);
  Tensor out = mul(mul(x, y), x);
  std::vector<Tensor> g = grad({out}, {x, y, unused}, {ones({3}, DType::f64)});
  std::vector<double> xv = host(x), yv = host(y), gx, gy;
  for (size_t i = 0; i < 3; ++i) {
    gx.push_back(2 * xv[i] * yv[i]);
    gy.push_back(xv[i] * xv[i]);
  }
  expect_near_all(g[0], gx, 1e-14, 1e-14, "grad x");
  expect_near_all(g[1], gy, 1e-14, 1e-14, "grad y");
  expect_equal_all(g[2], {0, 0}, "unreachable input");
  EXPECT_FALSE(x.grad().defined());
  EXPECT_FALSE(y.grad().defined());
  // Intermediate (non-leaf) inputs work too.
  Tensor x2 = exp(x);
  std::vector<Tensor> gi = grad({sum(mul(x2, x2))}, {x2}, {});
  expect_near_all(gi[0], map(host(x2), [](double v) { return 2 * v; }), 1e-14, 1e-14, "grad of intermediate");
  EXPECT_ZT_ERROR(grad({sum(x)}, {random_f64({3}, 1)}, {}), "[grad]", "does not require grad");
}

TEST(Autograd, CheckpointMatchesAndRunsTwice) {
  Tensor x = random_f64({4, 3}, 11).set_requires_grad(true);
  Tensor w = random_f64({3}, 12).set_requires_grad(true);
  int calls = 0;
  // Includes dropout: the replay must draw the same mask from the same (seed, offset).
  auto block = [&](const std::vector<Tensor>& in) -> std::vector<Tensor> {
    ++calls;
    Tensor h = gelu(mul(in[0], w));
    return {dropout(h, 0.3, 5, 40), sum(h, {1})};
  };
  std::vector<Tensor> plain = block({x});
  backward(add(sum(mul(plain[0], plain[0])), sum(plain[1])));
  Tensor gx_plain = clone(x.grad()), gw_plain = clone(w.grad());
  x.zero_grad();
  w.zero_grad();
  calls = 0;

  std::vector<Tensor> ck = checkpoint(block, {x});
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(ck[0].requires_grad());
  EXPECT_EQ(max_abs_diff(ck[0], plain[0]), 0.0);
  EXPECT_EQ(max_abs_diff(ck[1], plain[1]), 0.0);
  backward(add(sum(mul(ck[0], ck[0])), sum(ck[1])));
  EXPECT_EQ(calls, 2);
  EXPECT_LE(max_abs_diff(x.grad(), gx_plain), 1e-14);
  EXPECT_LE(max_abs_diff(w.grad(), gw_plain), 1e-14);  // captured parameters get gradients too

  // Under no-grad, checkpoint just runs the function.
  NoGradGuard no_grad;
  EXPECT_FALSE(checkpoint(block, {x})[0].requires_grad());
}

}  // namespace
}  // namespace zt::testing
