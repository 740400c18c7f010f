// Normalisation over the last dim: layernorm (GPT-2) and rmsnorm (Llama).
//
// Both run as one fused kernel per direction (kernels/*/norm.*): the forward saves the per-row
// mean and rstd, and the backward reads them back instead of recomputing the statistics. x is
// viewed as [rows, C] for the kernels.
#include "core/backend.h"
#include "core/ops.h"
#include "core/ops/op_helpers.h"

namespace zt {

namespace {

class LayerNormBackward final : public Node {
 public:
  LayerNormBackward(Tensor x2, Tensor weight, LayerNormResult saved, bool has_bias, Shape x_shape)
      : x2_(std::move(x2)), weight_(std::move(weight)), mean_(std::move(saved.mean)), rstd_(std::move(saved.rstd)),
        has_bias_(has_bias), x_shape_(std::move(x_shape)) {}
  std::string name() const override { return "LayerNormBackward"; }
  void release() override { x2_ = weight_ = mean_ = rstd_ = Tensor(); }

  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    Tensor dy = contiguous(reshape(grads[0], x2_.shape()));
    NormGrads g = backend_for(dy.device()).layernorm_backward(dy, x2_, weight_, mean_, rstd_, has_bias_);
    return {reshape(g.dx, x_shape_), g.dweight, g.dbias};
  }

 private:
  Tensor x2_, weight_, mean_, rstd_;
  bool has_bias_;
  Shape x_shape_;
};

class RmsNormBackward final : public Node {
 public:
  RmsNormBackward(Tensor x2, Tensor weight, Tensor rstd, Shape x_shape)
      : x2_(std::move(x2)), weight_(std::move(weight)), rstd_(std::move(rstd)), x_shape_(std::move(x_shape)) {}
  std::string name() const override { return "RmsNormBackward"; }
  void release() override { x2_ = weight_ = rstd_ = Tensor(); }

  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    Tensor dy = contiguous(reshape(grads[0], x2_.shape()));
    NormGrads g = backend_for(dy.device()).rmsnorm_backward(dy, x2_, weight_, rstd_);
    return {reshape(g.dx, x_shape_), g.dweight};
  }

 private:
  Tensor x2_, weight_, rstd_;
  Shape x_shape_;
};

// Checks x [..., C] against a [C] parameter.
void check_param(const char* api, const Tensor& x, const Tensor& param, const char* param_name) {
  ops::check_defined(api, x, "x");
  ops::check_defined(api, param, param_name);
  ZT_CHECK(is_floating(x.dtype()), api, "needs a floating x, got ", x.describe());
  ZT_CHECK(x.dtype() == param.dtype() && x.device() == param.device(), api, "x is ", x.describe(), ", ", param_name,
           " is ", param.describe(), ": dtypes and devices must match (cast with to())");
  ZT_CHECK(x.dim() >= 1 && x.size(-1) > 0 && param.dim() == 1 && param.size(0) == x.size(-1), api, param_name,
           " must be [C] for x [..., C]: x is ", x.describe(), ", ", param_name, " is ", param.describe());
}

// x as a contiguous [rows, C] (detached), for the kernels.
Tensor rows_of(const char* api, const Tensor& x, double eps) {
  ZT_CHECK(eps >= 0, api, "eps must be non-negative, got ", eps);
  NoGradGuard no_grad;
  return contiguous(reshape(x.detach(), {-1, x.size(-1)}));
}

}  // namespace

Tensor layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_param("layernorm", x, weight, "weight");
  if (bias.defined()) check_param("layernorm", x, bias, "bias");
  Tensor x2 = rows_of("layernorm", x, eps);
  Tensor w = contiguous(weight.detach()), b = bias.defined() ? contiguous(bias.detach()) : Tensor();
  LayerNormResult r = backend_for(x.device()).layernorm(x2, w, b, eps);
  Tensor out;
  {
    NoGradGuard no_grad;
    out = view(r.y, x.shape());
  }
  if (needs_grad({&x, &weight, &bias}))
    record(std::make_shared<LayerNormBackward>(x2, w, std::move(r), bias.defined(), x.shape()), {x, weight, bias},
           {&out});
  return out;
}

Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps) {
  check_param("rmsnorm", x, weight, "weight");
  Tensor x2 = rows_of("rmsnorm", x, eps);
  Tensor w = contiguous(weight.detach());
  LayerNormResult r = backend_for(x.device()).rmsnorm(x2, w, eps);
  Tensor out;
  {
    NoGradGuard no_grad;
    out = view(r.y, x.shape());
  }
  if (needs_grad({&x, &weight}))
    record(std::make_shared<RmsNormBackward>(x2, w, r.rstd, x.shape()), {x, weight}, {&out});
  return out;
}

}  // namespace zt
