#include "core/backend.h"

#include "core/autograd.h"
#include "core/cuda_support.h"
#include "core/ops.h"

namespace zt {

void Backend::not_implemented(const char* kernel) const {
  ZT_FAIL(kernel, "not implemented on ", device_type() == DeviceType::cpu ? "cpu" : "cuda");
}

// Every kernel defaults to "not implemented": a backend overrides what it provides.
void Backend::copy_strided(const Tensor&, Tensor&) const { not_implemented("copy_strided"); }
void Backend::copy_bytes(void*, Device, const void*, Device, size_t) const { not_implemented("copy_bytes"); }
void Backend::fill(Tensor&, double) const { not_implemented("fill"); }
void Backend::random_fill(Tensor&, RandomKind, uint64_t, uint64_t) const { not_implemented("random_fill"); }
void Backend::binary(BinaryOp, const Tensor&, const Tensor&, Tensor&) const { not_implemented("binary"); }
Tensor Backend::unary(UnaryOp, const Tensor&, double) const { not_implemented("unary"); }
Tensor Backend::unary_backward(UnaryOp, const Tensor&, const Tensor&, const Tensor&, double) const {
  not_implemented("unary_backward");
}
void Backend::axpy(Tensor&, const Tensor&, double) const { not_implemented("axpy"); }
void Backend::scale(Tensor&, double) const { not_implemented("scale"); }
Tensor Backend::reduce(ReduceOp, const Tensor&, const std::vector<bool>&) const { not_implemented("reduce"); }
std::pair<Tensor, Tensor> Backend::max_last_dim(const Tensor&) const { not_implemented("max_last_dim"); }
double Backend::sum_squares(const Tensor&) const { not_implemented("sum_squares"); }
void Backend::sum_squares_into(const Tensor& x, Tensor& acc) const {
  ZT_CHECK(acc.dtype() == DType::f64 && acc.numel() == 1 && acc.device() == x.device(), "sum_squares_into",
           "acc must be one f64 on ", x.device().str(), ", got ", acc.describe());
  const double total = acc.item() + sum_squares(x);
  fill(acc, total);
}
bool Backend::all_finite(const Tensor&) const { not_implemented("all_finite"); }
Tensor Backend::gemm(const Tensor&, const Tensor&, bool, bool, int64_t, const Tensor&) const { not_implemented("gemm"); }
Tensor Backend::linear(const Tensor& x, const Tensor& weight, const Tensor& bias, bool gelu,
                       Tensor* pre_activation) const {
  NoGradGuard no_grad;
  const int64_t rows = x.size(0), in = x.size(1), out_features = weight.size(0);
  const Tensor start = bias.defined() ? contiguous(expand(bias, {rows, out_features})) : Tensor();
  Tensor pre = view(gemm(view(x, {1, rows, in}), view(weight, {1, out_features, in}), false, true, 1, start),
                    {rows, out_features});
  if (!gelu) return pre;
  if (pre_activation != nullptr) *pre_activation = pre;
  return unary(UnaryOp::gelu, pre, 0.0);
}
LinearWeightGrads Backend::linear_weight_grads(const Tensor& dy, const Tensor& x, bool bias) const {
  NoGradGuard no_grad;
  LinearWeightGrads g;
  g.dweight = view(gemm(view(dy, {1, dy.size(0), dy.size(1)}), view(x, {1, x.size(0), x.size(1)}), true, false, 1,
                        Tensor()),
                   {dy.size(1), x.size(1)});
  if (bias) g.dbias = view(reduce(ReduceOp::sum, dy, {true, false}), {dy.size(1)});
  return g;
}
Tensor Backend::linear_input_grad(const Tensor& dy, const Tensor& weight, const Tensor& gelu_pre) const {
  NoGradGuard no_grad;
  Tensor dx = view(gemm(view(dy, {1, dy.size(0), dy.size(1)}), view(weight, {1, weight.size(0), weight.size(1)}),
                        false, false, 1, Tensor()),
                   {dy.size(0), weight.size(1)});
  if (gelu_pre.defined()) dx = unary_backward(UnaryOp::gelu, dx, gelu_pre, Tensor(), 0.0);
  return dx;
}
Tensor Backend::softmax(const Tensor&) const { not_implemented("softmax"); }
Tensor Backend::softmax_backward(const Tensor&, const Tensor&) const { not_implemented("softmax_backward"); }
Tensor Backend::log_softmax(const Tensor&) const { not_implemented("log_softmax"); }
Tensor Backend::log_softmax_backward(const Tensor&, const Tensor&) const { not_implemented("log_softmax_backward"); }
LayerNormResult Backend::layernorm(const Tensor&, const Tensor&, const Tensor&, double) const {
  not_implemented("layernorm");
}
NormGrads Backend::layernorm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                      bool) const {
  not_implemented("layernorm_backward");
}
LayerNormResult Backend::rmsnorm(const Tensor&, const Tensor&, double) const { not_implemented("rmsnorm"); }
NormGrads Backend::rmsnorm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&) const {
  not_implemented("rmsnorm_backward");
}
Tensor Backend::embedding(const Tensor&, const Tensor&) const { not_implemented("embedding"); }
Tensor Backend::embedding_backward(const Tensor&, const Tensor&, int64_t) const {
  not_implemented("embedding_backward");
}
AttentionResult Backend::attention(const Tensor&, const Tensor&, const Tensor&, bool, double) const {
  not_implemented("attention");
}
AttentionGrads Backend::attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                           const Tensor&, bool, double) const {
  not_implemented("attention_backward");
}
CrossEntropyResult Backend::cross_entropy(const Tensor&, const Tensor&, int64_t, int64_t) const {
  not_implemented("cross_entropy");
}
Tensor Backend::cross_entropy_backward(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, double,
                                       const Tensor&, bool) const {
  not_implemented("cross_entropy_backward");
}
CrossEntropyResult Backend::cross_entropy_with_grad(Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                                    int64_t valid_vocab, double grad_scale) const {
  CrossEntropyResult r = cross_entropy(logits, targets, ignore_index, valid_vocab);
  cross_entropy_backward(logits, targets, r.lse, ignore_index, valid_vocab, grad_scale, Tensor(), /*in_place=*/true);
  return r;
}
Tensor Backend::inverse_target_count(const Tensor&, int64_t, int64_t, DType) const {
  not_implemented("inverse_target_count");
}
void Backend::gemm_into(const Tensor&, const Tensor&, bool, bool, Tensor&, bool) const { not_implemented("gemm_into"); }
Tensor Backend::dropout(const Tensor&, double, uint64_t, uint64_t) const { not_implemented("dropout"); }
void Backend::adamw_step(Tensor&, const Tensor&, Tensor&, Tensor&, const AdamWArgs&) const {
  not_implemented("adamw_step");
}
void Backend::adamw_step_runs(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                              const std::vector<AdamWRun>& runs, const AdamWArgs& args, Tensor* param_copy) const {
  for (const AdamWRun& r : runs) {
    if (r.n <= 0) continue;
    Tensor p = narrow(param, 0, r.begin, r.n), m = narrow(exp_avg, 0, r.begin, r.n),
           v = narrow(exp_avg_sq, 0, r.begin, r.n);
    AdamWArgs a = args;
    a.weight_decay = r.weight_decay;
    adamw_step(p, narrow(grad, 0, r.begin, r.n), m, v, a);
    if (param_copy != nullptr) {
      Tensor dst = narrow(*param_copy, 0, r.begin, r.n);
      copy_strided(p, dst);
    }
  }
}

const Backend& backend_for(Device device) { return device.is_cpu() ? cpu_backend() : cuda_backend(); }
const Backend& cuda_backend() { return cuda::backend(); }

}  // namespace zt
