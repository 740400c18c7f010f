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

// adamw_step_runs with a param_copy: the CPU backend's fused pass (update and cast together) against
// run-by-run adamw_step followed by a cast, bit for bit, for f32, bf16 and f16 copies; elements no
// run covers keep their values in both the master and the copy.
TEST(AdamWKernel, RunsWithFusedParameterCopyMatchSeparatePasses) {
  const std::vector<AdamWRun> runs = {{0, 700, 0.1}, {700, 300, 0.0}, {1000, 0, 0.1}, {1003, 40000, 0.1}};
  const int64_t n = 41010;  // 7 trailing elements in no run
  for (DType copy_dtype : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(copy_dtype));
    Tensor p1 = randn({n}, 1, 0, DType::f32), m1 = randn({n}, 2, 0, DType::f32);
    Tensor v1 = mul(randn({n}, 3, 0, DType::f32), randn({n}, 3, 0, DType::f32)), g = randn({n}, 4, 0, DType::bf16);
    Tensor p2 = clone(p1), m2 = clone(m1), v2 = clone(v1);
    Tensor copy_fused = to(p1, copy_dtype), copy_separate = to(p1, copy_dtype);
    AdamWArgs args;
    args.lr = 1e-3;
    args.step = 3;
    args.grad_scale = 0.7;
    cpu_backend().adamw_step_runs(p1, g, m1, v1, runs, args, &copy_fused);
    for (const AdamWRun& r : runs) {
      if (r.n == 0) continue;
      Tensor p = narrow(p2, 0, r.begin, r.n), m = narrow(m2, 0, r.begin, r.n), v = narrow(v2, 0, r.begin, r.n);
      AdamWArgs a = args;
      a.weight_decay = r.weight_decay;
      cpu_backend().adamw_step(p, narrow(g, 0, r.begin, r.n), m, v, a);
      Tensor dst = narrow(copy_separate, 0, r.begin, r.n);
      cpu_backend().copy_strided(p, dst);
    }
    for (const auto& [a, b] : {std::pair{&p1, &p2}, {&m1, &m2}, {&v1, &v2}, {&copy_fused, &copy_separate}})
      EXPECT_EQ(to(*a, DType::f64).to_vector<double>(), to(*b, DType::f64).to_vector<double>());
  }
}

}  // namespace
}  // namespace zt
