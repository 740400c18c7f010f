#include "optim/adamw.h"

#include "core/ops.h"

namespace zt {

void AdamW::add_param(const Tensor& param, bool decay, std::string name) {
  ZT_CHECK(param.dtype() == DType::f32, "adamw", "parameter '", name, "' must be f32 (master weights), got ",
           param.describe());
  ZT_CHECK(param.is_contiguous(), "adamw", "parameter '", name, "' must be contiguous, got ", param.describe());
  MemoryCategoryScope scope(MemoryCategory::optimizer);
  slots_.push_back({param, zeros(param.shape(), DType::f32, param.device()),
                    zeros(param.shape(), DType::f32, param.device()), decay, std::move(name)});
}

void AdamW::step(const std::vector<Tensor>& grads, double lr, double grad_scale) {
  ZT_CHECK(grads.size() == slots_.size(), "adamw", "got ", grads.size(), " gradients for ", slots_.size(),
           " parameters");
  ++step_;
  for (size_t i = 0; i < slots_.size(); ++i) {
    OptimizerSlot& s = slots_[i];
    if (!grads[i].defined()) continue;
    ZT_CHECK(grads[i].shape() == s.param.shape() && grads[i].device() == s.param.device(), "adamw", "gradient ",
             grads[i].describe(), " does not match parameter '", s.name, "' ", s.param.describe());
    Tensor g = grads[i].dtype() == DType::f32 && grads[i].is_contiguous() ? grads[i] : contiguous(to(grads[i], DType::f32));
    AdamWArgs args;
    args.lr = lr;
    args.beta1 = config_.beta1;
    args.beta2 = config_.beta2;
    args.eps = config_.eps;
    args.weight_decay = s.decay ? config_.weight_decay : 0.0;
    args.step = step_;
    args.grad_scale = grad_scale;
    backend_for(s.param.device()).adamw_step(s.param, g, s.exp_avg, s.exp_avg_sq, args);
  }
}

}  // namespace zt
