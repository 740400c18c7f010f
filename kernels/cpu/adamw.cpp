// CPU kernels: one AdamW step on a flat f32 master shard (the offload optimizer runs here, so this
// loop is the CPU's share of every training step and must run at memory speed).
//
//   g = grad * grad_scale
//   p -= lr * weight_decay * p                       (decoupled weight decay, applied first)
//   m = beta1 m + (1 - beta1) g,  v = beta2 v + (1 - beta2) g^2
//   p -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
//
// The bias corrections are folded into per-step constants in double, so the element loop is a
// handful of f32 multiply-adds, one sqrt and one division. The loop streams 7 words per element
// and is bound by memory bandwidth, not arithmetic: the compiler keeps sqrt scalar while errno
// is on (-fmath-errno, the default) and this measured no slower than the fully vectorised
// -fno-math-errno build.
#include <cmath>
#include <type_traits>

#include "kernels/cpu/cpu_backend.h"

namespace zt {

namespace {

// C: the dtype of an optional copy of the updated parameter (void: none), written in the same pass.
template <typename G, typename C>
void adamw_loop(float* __restrict p, const G* __restrict g, float* __restrict m, float* __restrict v, int64_t n,
                const AdamWArgs& a, C* __restrict copy) {
  const double bias1 = 1.0 - std::pow(a.beta1, static_cast<double>(a.step));
  const double bias2 = 1.0 - std::pow(a.beta2, static_cast<double>(a.step));
  // sqrt(v / bias2) = sqrt(v) * inv_sqrt_bias2; lr / bias1 multiplies the first moment.
  const float step_size = static_cast<float>(a.lr / bias1);
  const float inv_sqrt_bias2 = static_cast<float>(1.0 / std::sqrt(bias2));
  const float decay = static_cast<float>(1.0 - a.lr * a.weight_decay);
  const float beta1 = static_cast<float>(a.beta1), beta2 = static_cast<float>(a.beta2);
  const float one_minus_beta1 = static_cast<float>(1.0 - a.beta1), one_minus_beta2 = static_cast<float>(1.0 - a.beta2);
  const float eps = static_cast<float>(a.eps), grad_scale = static_cast<float>(a.grad_scale);
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = to_compute(g[i]) * grad_scale;
    const float mi = beta1 * m[i] + one_minus_beta1 * gi;
    const float vi = beta2 * v[i] + one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float pi = p[i] * decay - step_size * mi / (std::sqrt(vi) * inv_sqrt_bias2 + eps);
    p[i] = pi;
    if constexpr (!std::is_void_v<C>) copy[i] = from_compute<C>(pi);
  }
}

void check_adamw(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                 const AdamWArgs& args) {
  for (const Tensor* t : {&param, &exp_avg, &exp_avg_sq})
    ZT_CHECK(t->dtype() == DType::f32 && t->is_contiguous() && t->device().is_cpu(), "adamw_step",
             "param and moments must be contiguous f32 cpu tensors, got ", t->describe());
  ZT_CHECK(grad.is_contiguous() && grad.device().is_cpu() && is_floating(grad.dtype()) && grad.dtype() != DType::f64,
           "adamw_step", "grad must be a contiguous f32, bf16 or f16 cpu tensor, got ", grad.describe());
  ZT_CHECK(grad.numel() == param.numel() && exp_avg.numel() == param.numel() && exp_avg_sq.numel() == param.numel(),
           "adamw_step", "sizes differ: param ", param.describe(), ", grad ", grad.describe(), ", exp_avg ",
           exp_avg.describe(), ", exp_avg_sq ", exp_avg_sq.describe());
  ZT_CHECK(args.step >= 1, "adamw_step", "step is 1-based, got ", args.step);
  ZT_CHECK(args.beta1 >= 0 && args.beta1 < 1 && args.beta2 >= 0 && args.beta2 < 1, "adamw_step",
           "betas must be in [0, 1), got ", args.beta1, " and ", args.beta2);
}

}  // namespace

void CpuBackend::adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                            const AdamWArgs& args) const {
  check_adamw(param, grad, exp_avg, exp_avg_sq, args);
  float* p = static_cast<float*>(param.raw_data());
  float* m = static_cast<float*>(exp_avg.raw_data());
  float* v = static_cast<float*>(exp_avg_sq.raw_data());
  dispatch_float(grad.dtype(), "adamw_step", [&]<typename G>() {
    if constexpr (!std::is_same_v<G, double>)
      adamw_loop<G, void>(p, static_cast<const G*>(grad.raw_data()), m, v, param.numel(), args, nullptr);
  });
}

void CpuBackend::adamw_step_runs(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                                 const std::vector<AdamWRun>& runs, const AdamWArgs& args, Tensor* param_copy) const {
  if (param_copy == nullptr) return Backend::adamw_step_runs(param, grad, exp_avg, exp_avg_sq, runs, args, nullptr);
  check_adamw(param, grad, exp_avg, exp_avg_sq, args);
  ZT_CHECK(param_copy->numel() == param.numel() && param_copy->is_contiguous() && param_copy->device().is_cpu() &&
               is_floating(param_copy->dtype()) && param_copy->dtype() != DType::f64,
           "adamw_step_runs", "param_copy must be a contiguous f32, bf16 or f16 cpu tensor of ", param.numel(),
           " elements, got ", param_copy->describe());
  for (const AdamWRun& r : runs) {
    ZT_CHECK(r.begin >= 0 && r.n >= 0 && r.begin + r.n <= param.numel(), "adamw_step_runs", "run [", r.begin, ", ",
             r.begin + r.n, ") is outside the ", param.numel(), " elements");
    if (r.n == 0) continue;
    AdamWArgs a = args;
    a.weight_decay = r.weight_decay;
    float* p = static_cast<float*>(param.raw_data()) + r.begin;
    float* m = static_cast<float*>(exp_avg.raw_data()) + r.begin;
    float* v = static_cast<float*>(exp_avg_sq.raw_data()) + r.begin;
    dispatch_float(grad.dtype(), "adamw_step_runs", [&]<typename G>() {
      dispatch_float(param_copy->dtype(), "adamw_step_runs", [&]<typename C>() {
        if constexpr (!std::is_same_v<G, double> && !std::is_same_v<C, double>)
          adamw_loop<G, C>(p, static_cast<const G*>(grad.raw_data()) + r.begin, m, v, r.n, a,
                           static_cast<C*>(param_copy->raw_data()) + r.begin);
      });
    });
  }
}

}  // namespace zt
