#include "optim/loss_scaler.h"

#include <algorithm>

namespace zt {

LossScaler::LossScaler(LossScalerConfig config) : config_(config), scale_(config.enabled ? config.initial_scale : 1.0) {}

bool LossScaler::update(bool grads_finite) {
  if (!config_.enabled) return grads_finite;
  if (!grads_finite) {
    scale_ = std::max(config_.min_scale, scale_ * config_.backoff);
    clean_steps_ = 0;
    ++skipped_steps_;
    return false;
  }
  if (++clean_steps_ >= config_.growth_interval) {
    scale_ *= config_.growth;
    clean_steps_ = 0;
  }
  return true;
}

void LossScaler::restore(double scale, int64_t clean_steps, int64_t skipped_steps) {
  scale_ = scale;
  clean_steps_ = clean_steps;
  skipped_steps_ = skipped_steps;
}

}  // namespace zt
