// The CPU AdamW kernel against a naive f64 loop over several steps (bias correction, decoupled
// weight decay, grad_scale), with sizes that take the OpenMP path and f32/bf16 gradients.
#include <gtest/gtest.h>

#include <cmath>

#include "core/backend.h"
#include "gradcheck.h"

namespace zt {
namespace {

struct NaiveAdamW {
  std::vector<double> p, m, v;
  void step(const std::vector<double>& g, const AdamWArgs& a) {
    for (size_t i = 0; i < p.size(); ++i) {
      const double gi = g[i] * a.grad_scale;
      p[i] -= a.lr * a.weight_decay * p[i];
      m[i] = a.beta1 * m[i] + (1 - a.beta1) * gi;
      v[i] = a.beta2 * v[i] + (1 - a.beta2) * gi * gi;
      const double mhat = m[i] / (1 - std::pow(a.beta1, static_cast<double>(a.step)));
      const double vhat = v[i] / (1 - std::pow(a.beta2, static_cast<double>(a.step)));
      p[i] -= a.lr * mhat / (std::sqrt(vhat) + a.eps);
    }
  }
};

void run_steps(int64_t n, DType grad_dtype, const AdamWArgs& base, int steps) {
  Tensor param = randn({n}, 1), m = zeros({n}), v = zeros({n});
  NaiveAdamW ref{to(param, DType::f64).to_vector<double>(), std::vector<double>(static_cast<size_t>(n), 0.0),
                 std::vector<double>(static_cast<size_t>(n), 0.0)};
  for (int s = 1; s <= steps; ++s) {
    Tensor grad = to(mul_scalar(randn({n}, 100 + static_cast<uint64_t>(s)), 0.1 * s), grad_dtype);
    AdamWArgs args = base;
    args.step = s;
    cpu_backend().adamw_step(param, grad, m, v, args);
    ref.step(to(grad, DType::f64).to_vector<double>(), args);
  }
  std::vector<float> p = param.to_vector<float>(), mv = m.to_vector<float>(), vv = v.to_vector<float>();
  for (size_t i = 0; i < p.size(); ++i) {
    ASSERT_NEAR(p[i], ref.p[i], 2e-6 * (1 + std::abs(ref.p[i]))) << "param " << i;
    ASSERT_NEAR(mv[i], ref.m[i], 1e-6 * (0.1 + std::abs(ref.m[i]))) << "exp_avg " << i;
    ASSERT_NEAR(vv[i], ref.v[i], 1e-6 * (1e-2 + std::abs(ref.v[i]))) << "exp_avg_sq " << i;
  }
}

TEST(AdamWKernel, MatchesNaiveF64LoopOverSeveralSteps) {
  AdamWArgs args;
  args.lr = 1e-2;
  args.beta1 = 0.9;
  args.beta2 = 0.95;
  args.eps = 1e-8;
  args.weight_decay = 0.1;
  args.grad_scale = 0.5;
  run_steps(1000, DType::f32, args, 6);
}

TEST(AdamWKernel, LargeShardTakesTheParallelPath) {
  AdamWArgs args;
  args.lr = 3e-4;
  args.weight_decay = 0.01;
  run_steps(200003, DType::f32, args, 3);
}

TEST(AdamWKernel, HalfPrecisionGradients) {
  AdamWArgs args;
  args.lr = 1e-3;
  args.grad_scale = 1.0 / 1024;  // unscaling a loss-scaled gradient
  run_steps(777, DType::bf16, args, 4);
  run_steps(777, DType::f16, args, 4);
}

TEST(AdamWKernel, NoWeightDecayAndFirstStepIsSignLike) {
  // At step 1, mhat = g and vhat = g^2, so each parameter moves by lr * g / (|g| + eps) ~ lr * sign(g).
  Tensor param = zeros({5}), m = zeros({5}), v = zeros({5});
  Tensor grad = from_vector(std::vector<float>{3.0f, -0.5f, 1e-3f, -20.0f, 0.25f}, {5});
  AdamWArgs args;
  args.lr = 0.1;
  args.eps = 1e-12;
  cpu_backend().adamw_step(param, grad, m, v, args);
  std::vector<float> p = param.to_vector<float>();
  const float sign[] = {-1, 1, -1, 1, -1};
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(p[i], 0.1f * sign[i], 1e-6f);
}

TEST(AdamWKernel, BadInputsAreReported) {
  Tensor p = zeros({4}), m = zeros({4}), v = zeros({4});
  AdamWArgs args;
  Tensor g3 = zeros({3});
  EXPECT_ZT_ERROR(cpu_backend().adamw_step(p, g3, m, v, args), "[adamw_step] sizes differ", "grad [3] f32 cpu");
  Tensor p64 = zeros({4}, DType::f64);
  EXPECT_ZT_ERROR(cpu_backend().adamw_step(p64, p, m, v, args), "[adamw_step] param and moments must be contiguous f32",
                  "[4] f64 cpu");
  args.step = 0;
  EXPECT_ZT_ERROR(cpu_backend().adamw_step(p, p, m, v, args), "[adamw_step] step is 1-based, got 0");
  args.step = 1;
  args.beta2 = 1.0;
  EXPECT_ZT_ERROR(cpu_backend().adamw_step(p, p, m, v, args), "[adamw_step] betas must be in [0, 1)");
  Tensor gi = zeros({4}, DType::i32);
  args.beta2 = 0.999;
  EXPECT_ZT_ERROR(cpu_backend().adamw_step(p, gi, m, v, args), "[adamw_step] grad must be a contiguous f32, bf16 or f16");
}

}  // namespace
}  // namespace zt
