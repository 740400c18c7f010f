// Dynamic loss scaling for fp16 (Micikevicius et al.): multiply the loss by `scale` before backward;
// if any gradient is inf/NaN, skip the step and multiply the scale by backoff; after
// growth_interval clean steps in a row, multiply it by growth. bf16 and f32 use scale 1, never skip.
#pragma once

#include <cstdint>

namespace zt {

struct LossScalerConfig {
  bool enabled = false;
  double initial_scale = 65536.0;
  double growth = 2.0;
  double backoff = 0.5;
  int64_t growth_interval = 2000;
  double min_scale = 1.0;
};

class LossScaler {
 public:
  explicit LossScaler(LossScalerConfig config = {});
  double scale() const { return scale_; }
  bool enabled() const { return config_.enabled; }
  // Reports whether this step's gradients were finite; returns true when the step may be applied.
  bool update(bool grads_finite);
  int64_t clean_steps() const { return clean_steps_; }
  int64_t skipped_steps() const { return skipped_steps_; }
  // For checkpoints.
  void restore(double scale, int64_t clean_steps, int64_t skipped_steps);

 private:
  LossScalerConfig config_;
  double scale_;
  int64_t clean_steps_ = 0;
  int64_t skipped_steps_ = 0;
};

}  // namespace zt
